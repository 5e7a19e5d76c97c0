"""Ctrl-C in `chat` stops the answer, not the session; the part shown is logged as
interrupted, so the next turn (and `ask -c`) goes on from it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelport.backends.http import HttpBackend
from modelport.cli import main
from modelport.types import StreamEvent
from tests.fakes.openai_upstream import OpenAIUpstream


@pytest.fixture()
def interrupt_first_stream(monkeypatch):
    """The first streamed answer says "Once upon" and then the user presses Ctrl-C."""
    real = HttpBackend.stream
    calls = []

    def stream(self, request, model_id):
        calls.append(request)
        if len(calls) == 1:
            yield StreamEvent("start", id="c1", model=model_id)
            yield StreamEvent("text", text="Once upon")
            raise KeyboardInterrupt
        yield from real(self, request, model_id)

    monkeypatch.setattr(HttpBackend, "stream", stream)
    return calls


def test_ctrl_c_in_chat_keeps_the_session_and_logs_the_partial_answer(tmp_path: Path, interrupt_first_stream):
    log = tmp_path / "log.db"
    with OpenAIUpstream() as upstream:
        env = {"MODELPORT_LOG_PATH": str(log), "MODELPORT_CONFIG_DIR": str(tmp_path / "config"),
               "MODELPORT_OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-chat-test"}
        result = CliRunner().invoke(main, ["chat", "-m", "openai/gpt-fake"], input="tell a story\nand then?\n", env=env)
        second = upstream.last_request.body
    assert result.exit_code == 0, result.output
    assert "Once upon" in result.output and "answer stopped" in result.output
    assert "echo: and then?" in result.output  # the session went on after Ctrl-C
    # The second turn carries the interrupted one, with the part that was shown.
    assert [m["content"] for m in second["messages"]] == ["tell a story", "Once upon", "and then?"]
    with sqlite3.connect(log) as db:
        rows = db.execute("SELECT error_kind, response, conversation_id FROM calls ORDER BY seq").fetchall()
    assert [(kind, text) for kind, text, _ in rows] == [("interrupted", "Once upon"), (None, "echo: and then?")]
    assert rows[0][2] == rows[1][2]


def test_ctrl_c_in_ask_logs_the_partial_answer_so_ask_c_continues_from_it(tmp_path: Path, interrupt_first_stream):
    with OpenAIUpstream() as upstream:
        env = {"MODELPORT_LOG_PATH": str(tmp_path / "log.db"), "MODELPORT_CONFIG_DIR": str(tmp_path / "config"),
               "MODELPORT_OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-chat-test"}
        first = CliRunner().invoke(main, ["ask", "-m", "openai/gpt-fake", "tell a story"], env=env)
        assert first.exit_code == 130
        follow = CliRunner().invoke(main, ["ask", "-m", "openai/gpt-fake", "-c", "and then?"], env=env)
        assert follow.exit_code == 0, follow.output
        sent = upstream.last_request.body
    assert [m["content"] for m in sent["messages"]] == ["tell a story", "Once upon", "and then?"]
