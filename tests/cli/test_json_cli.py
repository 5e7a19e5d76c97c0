"""`--json` means JSON on stdout whatever happens: argument errors too, in the documented
{"error": {...}} shape; and `ask --json` gives scripts the text, the full model name and a time."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from modelport.cli import main
from tests.fakes.openai_upstream import OpenAIUpstream


@pytest.mark.parametrize("args", [["batch", "run", "README.md", "--concurrency", "0", "--json"],
                                  ["ask", "--json", "--no-such-option", "hi"]])
def test_argument_errors_are_json_when_json_is_asked_for(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "usage" and error["message"]


def test_argument_errors_without_json_stay_text():
    result = CliRunner().invoke(main, ["batch", "run", "README.md", "--concurrency", "0"])
    assert result.exit_code == 2 and "Usage:" in result.output


def test_ask_json_has_the_text_the_full_model_name_and_a_time(tmp_path):
    with OpenAIUpstream() as upstream:
        env = {"MODELPORT_LOG_PATH": str(tmp_path / "log.db"), "MODELPORT_CONFIG_DIR": str(tmp_path / "config"),
               "MODELPORT_OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-json-test"}
        result = CliRunner().invoke(main, ["ask", "--json", "-m", "openai/gpt-fake", "hello"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"] == "echo: hello"
    assert data["model"] == "openai/gpt-fake"
    assert data["created"] > 0
