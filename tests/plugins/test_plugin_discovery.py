"""A plugin made as a temporary dist-info on sys.path (nothing installed, no network) adds a
provider, a CLI command, a tool, a door and a hook; `modelport plugins` lists it; taking it
off the path takes it away; a broken plugin is named in a warning and breaks nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelport import plugins
from modelport.cli import main
from modelport.client import Client
from modelport.errors import BadRequestError, ConfigError
from modelport.tools import to_tools
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.plugins.helpers import installed, make_plugin, uninstall

DIST = "mp-demo"

# One module of a plugin package: a provider as a row of data, a CLI command, a tool, and a
# door and a hook in the shapes docs/plugins.md gives for the gateway.
SOURCE = '''
import click

PROVIDER = {{"base_url": "{base_url}", "models": ["echo-1"]}}


@click.command()
@click.argument("who", default="world")
def hello(who):
    """Say hello (a plugin's command)."""
    click.echo(f"hello, {{who}}, from mp-demo")


def shout(text: str) -> str:
    """Say TEXT loudly.

    Args:
        text: what to say
    """
    return text.upper()


class PingDoor:
    def __init__(self, services):
        self.services = services

    def routes(self):
        return []


class AddHeader:
    async def before_request(self, ctx, request):
        return request
'''

ENTRY_POINTS = {
    "modelport.providers": {"myprov": "mp_demo:PROVIDER"},
    "modelport.commands": {"hello": "mp_demo:hello"},
    "modelport.tools": {"shout": "mp_demo:shout"},
    "modelport.doors": {"ping": "mp_demo:PingDoor"},
    "modelport.hooks": {"add-header": "mp_demo:AddHeader"},
}


def demo_plugin(tmp_path: Path, base_url: str = "http://127.0.0.1:9/v1") -> Path:
    return make_plugin(tmp_path, DIST, ENTRY_POINTS, {"mp_demo.py": SOURCE.format(base_url=base_url)})


def listed(*args: str) -> list[dict]:
    result = CliRunner().invoke(main, ["plugins", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_plugin_provider_is_a_row_of_data_that_answers(tmp_path, openai_upstream: OpenAIUpstream):
    with installed(demo_plugin(tmp_path, openai_upstream.base_url)):
        client = Client()
        provider, model_id = client.resolve("myprov/echo-1")
        assert (provider.name, provider.dialect, provider.base_url, model_id) == ("myprov", "openai", openai_upstream.base_url, "echo-1")
        assert client.chat("myprov/echo-1", "hi there").text == "echo: hi there"
    with pytest.raises(ConfigError, match="unknown model"):
        Client().resolve("myprov/echo-1")


def test_a_plugin_command_runs_and_is_listed_in_help(tmp_path):
    runner = CliRunner()
    with installed(demo_plugin(tmp_path)):
        assert "hello" in runner.invoke(main, ["--help"]).output
        result = runner.invoke(main, ["hello", "plugins"])
        assert result.exit_code == 0 and result.output == "hello, plugins, from mp-demo\n"
    assert "hello" not in runner.invoke(main, ["--help"]).output
    assert runner.invoke(main, ["hello"]).exit_code == 2  # click: no such command


def test_a_plugin_tool_is_named_in_tools(tmp_path):
    with installed(demo_plugin(tmp_path)):
        request = Client().request("local/smollm2", "hi", tools=["shout"])
        (tool,) = request.tools
        assert (tool.name, tool.parameters["required"]) == ("shout", ["text"])
        _, functions = to_tools(["shout"])  # what run_tools=True executes
        assert functions["shout"]("hey") == plugins.tools()["shout"]("hey") == "HEY"
    with pytest.raises(BadRequestError, match="no tool named 'shout'"):
        Client().request("local/smollm2", "hi", tools=["shout"])


def test_doors_and_hooks_are_loaded_for_the_gateway(tmp_path):
    with installed(demo_plugin(tmp_path)):
        door, hook = plugins.doors()["ping"], plugins.hooks()["add-header"]
        assert door(services=None).routes() == [] and hasattr(hook(), "before_request")
    assert "ping" not in plugins.doors() and "add-header" not in plugins.hooks()


def test_modelport_plugins_lists_the_plugin_and_where_it_came_from(tmp_path):
    with installed(demo_plugin(tmp_path)):
        rows = [r for r in listed() if r["distribution"] == DIST]
        assert {(r["group"], r["name"], r["object"]) for r in rows} == {
            (group, name, ref) for group, entries in ENTRY_POINTS.items() for name, ref in entries.items()
        }
        assert all(r["version"] == "0.1.0" and not r["builtin"] and r["error"] is None for r in rows)
        builtin = [r for r in listed("-g", "dialects") if r["builtin"]]
        assert {r["name"] for r in builtin} >= {"openai", "anthropic", "gemini"}
        assert {r["distribution"] for r in builtin} == {"modelport"}
        table = CliRunner().invoke(main, ["plugins"]).output
        assert "mp_demo:hello" in table and "mp-demo 0.1.0" in table and "modelport (built-in)" in table
    assert not [r for r in listed() if r["distribution"] == DIST]


def test_a_broken_plugin_is_named_in_a_warning_and_breaks_nothing(tmp_path, install_plugin):
    install_plugin("mp-broken", {"modelport.commands": {"boom": "mp_broken:boom"},
                                 "modelport.tools": {"missing": "mp_nowhere:tool"},
                                 "modelport.providers": {"nourl": "mp_broken:ROW"}},
                   {"mp_broken.py": "ROW = {'dialect': 'openai'}\nboom = 'not a command'\n"})
    runner = CliRunner()
    with pytest.warns(plugins.PluginWarning, match=r"'missing' \(modelport.tools, mp_nowhere:tool\) from mp-broken 0.1.0"):
        plugins.tools()
    with pytest.warns(plugins.PluginWarning, match="'nourl'.*from mp-broken 0.1.0.*needs a base_url"):
        assert "nourl" not in Client().providers and "openai" in Client().providers
    with pytest.warns(plugins.PluginWarning, match="'boom'.*not a click command"):
        result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "ask" in result.output and "boom" not in result.output
    failed = {r["name"]: r["error"] for r in listed() if r["distribution"] == "mp-broken"}
    assert failed["missing"].startswith("ModuleNotFoundError: No module named 'mp_nowhere'")
    assert "needs a base_url" in failed["nourl"] and "not a click command" in failed["boom"]


def test_the_shell_sees_a_broken_plugin_as_one_warning_line(tmp_path):
    path = make_plugin(tmp_path, "mp-missing", {"modelport.commands": {"gone": "mp_nowhere:gone"}}, {})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(Path(__file__).parents[2])])}
    result = subprocess.run([sys.executable, "-m", "modelport", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "ask" in result.stdout and "gone" not in result.stdout
    assert result.stderr == ("Warning: modelport plugin 'gone' (modelport.commands, mp_nowhere:gone) from mp-missing 0.1.0 "
                             "cannot be used: ModuleNotFoundError: No module named 'mp_nowhere'\n")


def test_a_name_already_taken_keeps_the_built_in(tmp_path, install_plugin):
    install_plugin("mp-clash", {"modelport.providers": {"openai": "mp_clash:ROW"}},
                   {"mp_clash.py": "ROW = {'base_url': 'http://127.0.0.1:9/v1'}\n"})
    with pytest.warns(plugins.PluginWarning, match="'openai'.*from mp-clash 0.1.0.*taken by modelport \\(built-in\\)"):
        plugins.entries(plugins.PROVIDERS)
    assert Client().providers["openai"].base_url == "https://api.openai.com/v1"
    (row,) = [r for r in listed("-g", "providers") if r["distribution"] == "mp-clash"]
    assert "taken by modelport (built-in)" in row["error"]


def test_an_installed_modelport_declares_its_own_pieces_in_its_metadata(tmp_path, monkeypatch):
    """Outside a source checkout (a wheel), modelport's own entries come from its installed
    metadata, written from pyproject.toml's [project.entry-points.*] tables."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    tables = {g: t for g, t in project["entry-points"].items() if g in plugins.GROUPS}
    path = make_plugin(tmp_path, "modelport", tables, {}, version="9.9.9")
    monkeypatch.setattr(plugins, "_source_checkout_entries", lambda: None)
    with installed(path):
        assert {(e.name, e.value) for e in plugins.entries(plugins.DIALECTS)} == set(tables[plugins.DIALECTS].items())
        assert {e.origin for g in plugins.GROUPS for e in plugins.entries(g)} == {"modelport (built-in)"}
        assert plugins.entries(plugins.COMMANDS)[0].version == "9.9.9"
        assert CliRunner().invoke(main, ["ask", "--help"]).exit_code == 0


def test_discovery_is_lazy_and_refresh_reads_again(tmp_path):
    path = demo_plugin(tmp_path)
    plugins.names(plugins.PROVIDERS)
    sys.path.insert(0, str(path))
    try:
        assert "myprov" not in plugins.names(plugins.PROVIDERS)  # discovered before it was on the path
        plugins.refresh()
        assert "myprov" in plugins.names(plugins.PROVIDERS)
        assert "mp_demo" not in sys.modules  # listed, not imported
    finally:
        uninstall(path)
