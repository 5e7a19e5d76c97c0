"""A door and a hook from a plugin: the gateway mounts the door's route beside the built-in
ones and runs the hook in its call pipeline, with nothing installed and no gateway code
changed; taking the plugin away takes both away."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import httpx
from click.testing import CliRunner

from modelport import plugins
from modelport.cli import main
from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream

DOOR = '''
from modelport.dialects import openai
from modelport.server.routes import Route


class EchoDoor:
    """Answers GET /echo/NAME with how many models the caller may use."""

    def __init__(self, services):
        self.services = services

    def routes(self):
        import re
        yield Route("GET", re.compile(r"^/echo/([a-z]+)$"), self.echo, openai, "echo")

    async def echo(self, req, name):
        await req.respond({"hello": name, "models": len(self.services.list_models(req))})
'''

HOOK = '''
from dataclasses import replace

from modelport.errors import PermissionDeniedError
from modelport.types import Message, TextPart


class HouseStyle:
    """Adds a system rule to every request; refuses prompts that mention a secret project."""

    async def before_request(self, call, request):
        if any("project x" in m.text.lower() for m in request.messages):
            raise PermissionDeniedError("project X is not to be discussed here")
        return replace(request, messages=[Message("system", [TextPart("Answer in French.")]), *request.messages])
'''


def gateway(upstream: OpenAIUpstream, tmp_path: Path) -> GatewayThread:
    config = {"aliases": {"fake": "openai/gpt-fake"}, "providers": {"openai": {"base_url": upstream.base_url}}}
    return GatewayThread(Settings(log_calls=False, keys_path=str(tmp_path / "keys.db")), config=config, api_keys={"openai": "sk-x"})


def test_a_plugin_door_answers_on_its_own_route_and_a_plugin_hook_changes_requests(
        install_plugin: Callable[..., Path], openai_upstream: OpenAIUpstream, tmp_path: Path) -> None:
    install_plugin("mp-house", {"modelport.doors": {"echo": "mp_house_door:EchoDoor"},
                                "modelport.hooks": {"house-style": "mp_house_hook:HouseStyle"}},
                   {"mp_house_door.py": DOOR, "mp_house_hook.py": HOOK})
    listed = CliRunner().invoke(main, ["plugins", "--json"])
    assert "mp_house_door:EchoDoor" in listed.output and "mp_house_hook:HouseStyle" in listed.output
    with gateway(openai_upstream, tmp_path) as gw:
        echo = httpx.get(gw.url + "/echo/ada")
        assert echo.status_code == 200 and echo.json()["hello"] == "ada" and echo.json()["models"] > 0
        assert httpx.post(gw.url + "/echo/ada").status_code == 405  # the route table knows the door's methods
        chat = httpx.post(gw.url + "/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
        sent: Any = openai_upstream.last_request.body
        assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}
        refused = httpx.post(gw.url + "/v1/chat/completions",
                             json={"model": "fake", "messages": [{"role": "user", "content": "Tell me about Project X"}]})
        assert refused.status_code == 403 and "project X" in refused.json()["error"]["message"]
        assert openai_upstream.request_count == 1


def test_without_the_plugin_the_route_is_gone(openai_upstream: OpenAIUpstream, tmp_path: Path) -> None:
    plugins.refresh()
    assert "echo" not in plugins.doors()
    with gateway(openai_upstream, tmp_path) as gw:
        assert httpx.get(gw.url + "/echo/ada").status_code == 404
        chat = httpx.post(gw.url + "/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
        assert openai_upstream.last_request.body["messages"][0]["role"] == "user" and chat.status_code == 200
