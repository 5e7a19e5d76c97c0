"""`modelport logs`, `usage` and `cache` against a real log file (the test's MODELPORT_LOG_PATH)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from modelport.cache import ResponseCache
from modelport.calllog import CallLog
from modelport.cli import main
from modelport.types import ChatRequest, ChatResponse, Message, Usage


@pytest.fixture
def ids(isolated_home) -> list[str]:
    """Three calls in the test's default log: two priced, one failed."""
    log = CallLog()
    made = [
        log.record(ChatRequest("openai/gpt-4o", [Message.user("What is a penguin?")]),
                   ChatResponse("r1", "gpt-4o", Message.assistant("A flightless bird."), usage=Usage(1000, 500)),
                   provider="openai", model="gpt-4o", source="cli", latency=1.5, conversation_id="conv-a"),
        log.record(ChatRequest("groq/llama-3.1-8b-instant", [Message.user("Name a colour")]),
                   ChatResponse("r2", "llama-3.1-8b-instant", Message.assistant("Teal"), usage=Usage(100, 10)),
                   provider="groq", model="llama-3.1-8b-instant", source="gateway", key_name="team-a"),
        log.record(ChatRequest("openai/gpt-4o", [Message.user("Fail please")]), error="upstream timed out",
                   provider="openai", model="gpt-4o", source="sdk"),
    ]
    log.close()
    return made


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_commands_are_registered() -> None:
    result = run("--help")
    for name in ("logs", "usage", "cache"):
        assert name in result.output


@pytest.mark.parametrize("command", [["logs"], ["logs", "show"], ["logs", "path"], ["logs", "export"], ["usage"],
                                     ["cache"], ["cache", "clear"], ["cache", "stats"]])
def test_every_command_explains_itself(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert len(result.output.split("\n\n")[1].strip()) > 20


def test_list_shows_recent_calls_newest_last(ids: list[str]) -> None:
    result = run("logs")
    assert result.exit_code == 0
    positions = [result.output.index(i) for i in ids]
    assert positions == sorted(positions)
    assert "openai/gpt-4o" in result.output and "$0.0075" in result.output
    assert "upstream timed out" in result.output


def test_list_filters(ids: list[str]) -> None:
    assert ids[2] in run("logs", "-n", "1").output and ids[0] not in run("logs", "-n", "1").output
    out = run("logs", "--model", "groq/llama-3.1-8b-instant").output
    assert ids[1] in out and ids[0] not in out
    out = run("logs", "-q", "penguin").output
    assert ids[0] in out and ids[1] not in out
    assert ids[0] in run("logs", "--since", "1h").output
    assert "No calls logged match" in run("logs", "--since", "2999-01-01").output
    assert [c["id"] for c in json.loads(run("logs", "--cid", "conv-a", "--json").output)] == [ids[0]]


def test_list_as_json(ids: list[str]) -> None:
    calls = json.loads(run("logs", "--json").output)
    assert [c["id"] for c in calls] == ids
    assert calls[0]["request"]["messages"][0]["content"][0]["text"] == "What is a penguin?"
    assert calls[0]["response"]["message"]["content"][0]["text"] == "A flightless bird."
    assert calls[0]["cost"] == pytest.approx(0.0075) and calls[1]["key_name"] == "team-a"


def test_show(ids: list[str]) -> None:
    out = run("logs", "show", ids[0]).output
    assert "What is a penguin?" in out and "A flightless bird." in out and "conv-a" in out and "$0.0075" in out
    assert ids[2] in run("logs", "show").output
    assert json.loads(run("logs", "show", ids[1], "--json").output)["model"] == "llama-3.1-8b-instant"


def test_expected_errors_are_one_clear_line(ids: list[str]) -> None:
    result = run("logs", "show", "01NOSUCHCALL")
    assert result.exit_code == 1 and "no call with id" in result.output and "Traceback" not in result.output
    result = run("logs", "--since", "last tuesday")
    assert result.exit_code == 2 and "30m, 2h" in result.output
    result = run("usage", "--since", "whenever")
    assert result.exit_code == 2 and "cannot read" in result.output


def test_path_prints_the_log_location_without_creating_it(isolated_home) -> None:
    result = run("logs", "path")
    assert result.output.strip() == str(isolated_home / "logs.db")
    assert not (isolated_home / "logs.db").exists()


def test_empty_log(isolated_home) -> None:
    assert "No calls logged yet" in run("logs").output
    assert run("logs", "show").exit_code == 1


def test_export_jsonl_and_csv(ids: list[str], tmp_path) -> None:
    target = tmp_path / "calls.jsonl"
    result = run("logs", "export", "--output", str(target))
    assert "Exported 3 call(s)" in result.output
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [c["id"] for c in lines] == ids
    rows = list(csv.DictReader(io.StringIO(run("logs", "export", "--format", "csv").output)))
    assert [r["id"] for r in rows] == ids
    assert rows[0]["input_tokens"] == "1000" and rows[0]["response_text"] == "A flightless bird."
    assert rows[2]["error"] == "upstream timed out" and rows[2]["cost"] == ""
    target = tmp_path / "groq.csv"
    run("logs", "export", "--output", str(target), "-m", "llama-3.1-8b-instant")
    assert [r["id"] for r in csv.DictReader(target.open())] == [ids[1]]


def test_usage(ids: list[str]) -> None:
    data = json.loads(run("usage", "--by", "model", "--json").output)
    rows = {r["group"]: r for r in data["rows"]}
    # gpt-4o 1000 * 2.5 + 500 * 10 = 7500; llama-3.1-8b 100 * 0.05 + 10 * 0.08 = 5.8 micro-dollars
    assert rows["openai/gpt-4o"]["cost"] == pytest.approx(0.0075) and rows["openai/gpt-4o"]["errors"] == 1
    assert data["total"]["cost"] == pytest.approx(0.0075058)
    assert data["total"]["calls"] == 3
    keys = {r["group"] for r in json.loads(run("usage", "--by", "key", "--json").output)["rows"]}
    assert keys == {"team-a", "(no key)"}
    chart = run("usage", "--by", "provider", "--since", "all").output
    assert "openai" in chart and "groq" in chart and "█" in chart


def test_usage_flags_unpriced_calls(isolated_home) -> None:
    log = CallLog()
    log.record(ChatRequest("mybox/llama", [Message.user("hi")]), ChatResponse("r", "llama", Message.assistant("yo"),
               usage=Usage(10, 10)), provider="mybox", model="llama", source="gateway")
    log.close()
    assert "unknown prices" in run("usage").output


def test_cache_stats_and_clear(isolated_home) -> None:
    cache = ResponseCache()
    cache.put(ChatRequest("m", [Message.user("hi")]), ChatResponse("r", "m", Message.assistant("yo")))
    cache.close()
    assert json.loads(run("cache", "stats", "--json").output)["entries"] == 1
    assert "responses    1" in run("cache", "stats").output
    assert "Removed 1 cached response(s)" in run("cache", "clear").output
    assert json.loads(run("cache", "stats", "--json").output)["entries"] == 0


def test_logs_prune(ids: list[str]) -> None:
    import sqlite3

    from modelport import config
    from modelport.calllog import default_log_path

    with sqlite3.connect(default_log_path()) as db:
        db.execute("UPDATE calls SET created_at = '2020-01-01T00:00:00.000Z' WHERE id IN (?, ?)", ids[:2])
    db.close()
    config._load.cache_clear()
    result = CliRunner().invoke(main, ["logs", "prune"])
    assert result.exit_code == 2 and "give --max-age-days or --max-mb" in result.output
    result = run("logs", "prune", "--max-age-days", "30")
    assert result.exit_code == 0 and "Removed 2 call(s)" in result.output and "MB" in result.output
    assert [c["id"] for c in json.loads(run("logs", "--json").output)] == [ids[2]]
    # Its defaults come from [log] in the config: a bound of a few bytes leaves no call.
    config.config_path().parent.mkdir(parents=True, exist_ok=True)
    config.config_path().write_text("[log]\nmax_mb = 0.000001\n")
    config._load.cache_clear()
    result = run("logs", "prune", "--vacuum")
    assert "Removed 1 call(s)" in result.output and "--vacuum shrinks" not in result.output
    assert "No calls logged yet" in run("logs").output
    assert "--max-age-days DAYS" in run("logs", "prune", "--help").output


def test_usage_shows_cached_input_and_what_caching_saved(isolated_home, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # room for every column
    log = CallLog()
    for cached in (0, 9_000):
        log.record(ChatRequest("anthropic/claude-sonnet-4-5", [Message.user("hi")]),
                   ChatResponse("r", "claude-sonnet-4-5", Message.assistant("yo"), usage=Usage(10_000, 10, cached_tokens=cached)),
                   provider="anthropic", model="claude-sonnet-4-5", source="gateway")
    log.close()
    # 9,000 tokens read at $0.30 instead of $3 per million: $0.0243 saved.
    total = json.loads(run("usage", "--json").output)["total"]
    assert total["cached_tokens"] == 9_000 and total["cache_saved"] == pytest.approx(0.0243)
    table = run("usage", "--by", "model").output
    assert "cached in" in table and "cache saved" in table and "$0.0243" in table
