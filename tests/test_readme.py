"""The README's examples run, exactly as written.

Provider examples run against a loopback fake of that provider's wire format (reached
through MODELPORT_<PROVIDER>_BASE_URL); the test checks the exact request that went out
and the answer printed. Examples on the embedded model run the real model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_upstream import OpenAIUpstream

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)


def block_using(model_prefix: str) -> str:
    found = [b for b in PYTHON_BLOCKS if f'"{model_prefix}' in b]
    assert len(found) == 1, f"expected one README example using {model_prefix}"
    return found[0]


def run_example(code: str, env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(env_extra)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = next(b.strip() for b in BASH_BLOCKS if "pytest" in b)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_the_readme_starts_with_two_commands_on_a_fresh_machine():
    setup_command = BASH_BLOCKS[0].strip()
    assert setup_command == 'pip install -e . && modelport ask "What is a REST API?"'


@pytest.mark.parametrize(
    ("prefix", "provider", "key_env", "expected_body"),
    [
        ("openai/", "OPENAI", "OPENAI_API_KEY", {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Write a one-sentence bedtime story about a unicorn."}],
        }),
        ("groq/", "GROQ", "GROQ_API_KEY", {
            "model": "llama-3.3-70b-versatile",
            "messages": [{"role": "user", "content": "Explain the importance of fast language models"}],
        }),
        ("lmstudio/", "LMSTUDIO", None, {
            "model": "qwen2.5-7b-instruct",
            "messages": [{"role": "system", "content": "Always answer in rhymes."}, {"role": "user", "content": "Introduce yourself."}],
            "temperature": 0.7,
        }),
    ],
)
def test_openai_compatible_examples_send_exactly_this_and_print_the_answer(prefix, provider, key_env, expected_body):
    with OpenAIUpstream() as upstream:
        env = {f"MODELPORT_{provider}_BASE_URL": upstream.url + "/v1"}
        if key_env:
            env[key_env] = "sk-readme-example"
        printed = run_example(block_using(prefix), env)
        request = upstream.last_request
    assert request.path == "/v1/chat/completions"
    assert request.body == expected_body
    if key_env:
        assert request.headers["authorization"] == "Bearer sk-readme-example"
    else:
        assert "authorization" not in request.headers
    assert printed == f"echo: {expected_body['messages'][-1]['content']}\n"


def test_gemini_example_sends_generate_content_and_prints_the_answer():
    from tests.fakes.gemini_upstream import GeminiUpstream

    with GeminiUpstream() as upstream:
        printed = run_example(block_using("gemini/"), {
            "MODELPORT_GEMINI_BASE_URL": upstream.url + "/v1beta",
            "GEMINI_API_KEY": "gm-readme-example",
        })
        request = upstream.last_request
    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "gm-readme-example"
    assert request.body == {"contents": [{"role": "user", "parts": [{"text": "Explain how AI works in a few words"}]}]}
    assert printed == "echo: Explain how AI works in a few words\n"


GATEWAY_URL = "http://localhost:1234"


def test_local_model_examples_run_on_the_embedded_model():
    local_blocks = [b for b in PYTHON_BLOCKS if '"local/smollm2"' in b and GATEWAY_URL not in b]
    assert len(local_blocks) >= 2
    for code in local_blocks:
        printed = run_example(code, {})
        assert printed.strip(), code


def test_gateway_examples_run_against_a_live_gateway_on_the_embedded_model():
    """Examples that call `modelport serve` run against one on a free port instead of 1234."""
    from modelport.server import Settings
    from modelport.server.testing import GatewayThread

    blocks = [b for b in PYTHON_BLOCKS if GATEWAY_URL in b]
    assert blocks
    with GatewayThread(Settings(log_calls=False, max_tokens=64)) as gw:
        for code in blocks:
            printed = run_example(code.replace(GATEWAY_URL, gw.url), {})
            assert printed.strip(), code


def test_prompt_caching_example_marks_the_prefix_and_reads_the_cache():
    from tests.fakes.anthropic_upstream import AnthropicUpstream

    with AnthropicUpstream() as upstream:
        printed = run_example(block_using("anthropic/"), {"MODELPORT_ANTHROPIC_BASE_URL": upstream.url, "ANTHROPIC_API_KEY": "sk-readme"})
        first, _, last = list(upstream.requests)
    assert first.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert last.body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    lines = printed.splitlines()
    assert lines[0].startswith("0 of ") and lines[1].split()[0] == "1800" and int(lines[2].split()[0]) > 1000


def test_every_python_example_is_run_by_a_test_above():
    providers = ("openai/", "gemini/", "groq/", "lmstudio/", "anthropic/")
    for code in PYTHON_BLOCKS:
        local = '"local/smollm2"' in code
        remote = [p for p in providers if f'"{p}' in code]
        assert local or len(remote) == 1, f"README example not covered by tests:\n{code}"


def test_the_readme_shows_every_command():
    from modelport import plugins

    builtin = [e.name for e in plugins.entries(plugins.COMMANDS) if e.builtin]
    missing = [name for name in builtin if f"modelport {name}" not in README]
    assert not missing, f"commands the README never shows: {missing}"


def test_the_model_size_is_one_number_in_one_unit_everywhere():
    from click.testing import CliRunner

    from modelport.cli import main
    from modelport.local_model import MODEL_FILE, MODEL_SIZE, data_dir

    megabytes = f"{MODEL_SIZE / 1e6:.0f} MB"  # MB = 10^6 bytes
    assert megabytes == "98 MB"
    assert set(re.findall(r"\b(\d+) MB\b", README)) == {"98"}
    assert megabytes in CliRunner().invoke(main, ["pull", "--help"]).output
    weights = data_dir() / MODEL_FILE
    if weights.exists():
        assert weights.stat().st_size == MODEL_SIZE


def _distributions(requirements: list[str]) -> set[str]:
    return {_normal(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in requirements}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_example_that_needs_more_than_the_base_install_says_how_to_install_it():
    """`pip install -e .` is the README's install: an example that imports a package it does
    not bring (pydantic, the openai SDK) must say, in the text since the previous example,
    `pip install -e ".[EXTRA]"` with an extra that brings it, or `pip install PACKAGE`."""
    import importlib.metadata

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - 3.10 only
        import tomli as tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = _distributions(project["dependencies"])
    extras = {name: _distributions(reqs) for name, reqs in project["optional-dependencies"].items() if name != "test"}
    owners = importlib.metadata.packages_distributions()
    missing = []
    previous_end = 0
    for match in re.finditer(r"```python\n(.*?)```", README, re.S):
        before, code = README[previous_end:match.start()], match.group(1)
        previous_end = match.end()
        modules = set(re.findall(r"^(?:from|import) ([A-Za-z_]\w*)", code, re.M)) - set(sys.stdlib_module_names) - {"modelport"}
        for module in sorted(modules):
            dists = {_normal(d) for d in owners.get(module, [module])}
            if dists & base:
                continue
            ways = [f'pip install -e ".[{name}]"' for name, given in extras.items() if dists & given]
            ways += [f"pip install {d}" for d in dists]
            if not any(way in before for way in ways):
                missing.append(f"{module}: say one of {ways} before\n{code}")
    assert not missing, "\n".join(missing)
