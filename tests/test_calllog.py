"""The call log on real SQLite files: what each entry point records, secrets, migrations,
conversations, queries and usage."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from modelport.calllog import SCHEMA_VERSION, CallLog, log_for, logging_enabled, new_id, parse_since
from modelport.errors import AuthenticationError, ConfigError
from modelport.types import ChatRequest, ChatResponse, Message, Tool, ToolCall, Usage


def make_request(text: str = "What is a REST API?", **params) -> ChatRequest:
    return ChatRequest("openai/gpt-4o-mini", [Message.system("Be brief."), Message.user(text)], **params)


def make_response(text: str = "An HTTP interface.", usage: Usage | None = None) -> ChatResponse:
    return ChatResponse("resp_1", "gpt-4o-mini", Message.assistant(text), usage=usage or Usage(100, 20), provider="openai",
                        latency=0.5)


@pytest.fixture
def log(tmp_path: Path):
    log = CallLog(tmp_path / "logs.db")
    yield log
    log.close()


@pytest.mark.parametrize("source", ["sdk", "cli", "batch", "gateway"])
def test_each_entry_point_records_every_field(log: CallLog, source: str) -> None:
    request = make_request(temperature=0.3, max_tokens=50, tools=[Tool("search", "Search the web")])
    call_id = log.record(request, make_response(usage=Usage(1000, 500, cached_tokens=400, reasoning_tokens=100)),
                         provider="openai", model="gpt-4o-mini", source=source, latency=0.75,
                         conversation_id="conv1", key_name="team-a" if source == "gateway" else None)
    call = log.get(call_id)
    assert call is not None
    assert (call.source, call.provider, call.model) == (source, "openai", "gpt-4o-mini")
    assert call.request == request
    assert call.response == make_response(usage=Usage(1000, 500, cached_tokens=400, reasoning_tokens=100))
    assert call.usage == Usage(1000, 500, cached_tokens=400, reasoning_tokens=100)
    # gpt-4o-mini: 600 * 0.15 + 400 * 0.075 + 500 * 0.6 = 420 micro-dollars
    assert call.cost == pytest.approx(0.00042)
    assert call.latency == 0.75
    assert call.conversation_id == "conv1"
    assert call.key_name == ("team-a" if source == "gateway" else None)
    assert call.prompt == "Be brief.\n\nWhat is a REST API?"
    assert call.response_text == "An HTTP interface."
    assert call.error is None and not call.cached


def test_errors_cache_hits_and_routed_model_names(log: CallLog) -> None:
    failed = log.record(make_request(), error=AuthenticationError("bad key", provider="openai"), provider="openai",
                        model="openai/gpt-4o-mini", source="cli")
    hit = log.record(make_request(), make_response(), provider="openai", model="gpt-4o-mini", source="sdk", cached=True)
    unknown = log.record(make_request(), make_response(), provider="mybox", model="mybox/llama", source="sdk")
    call = log.get(failed)
    assert (call.error_kind, call.model, call.response, call.cost) == ("authentication", "gpt-4o-mini", None, None)
    assert "bad key" in call.error
    assert log.get(hit).cached and log.get(hit).cost == 0.0
    assert log.get(unknown).model == "llama" and log.get(unknown).cost is None


def test_latency_defaults_to_the_responses(log: CallLog) -> None:
    call_id = log.record(make_request(), make_response(), provider="openai", model="gpt-4o-mini", source="sdk")
    assert log.get(call_id).latency == 0.5


def test_secrets_never_reach_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_key = "sk-envkey-0123456789abcdefghij"
    header_key = "sk-header-9876543210zyxwvutsrq"
    param_secret = "hunter2-param-secret-value"
    gateway_secret = "mp-gateway-key-1234567890"
    groq_key = "gsk_abcdefghijklmnopqrstuvwxyz012345"
    monkeypatch.setenv("OPENAI_API_KEY", env_key)
    log = CallLog(tmp_path / "logs.db")
    log.add_secret(gateway_secret)
    request = make_request(
        f"my key is {env_key} and the gateway's is {gateway_secret}",
        max_tokens=5,
        extra={"api_key": param_secret, "extra_headers": {"Authorization": f"Bearer {header_key}"},
               "user_token": param_secret, "max_completion_tokens": 9, "note": groq_key},
    )
    call_id = log.record(request, make_response(f"echo {env_key}"), provider="openai", model="gpt-4o-mini", source="gateway",
                         key_name="team-a")
    log.record(make_request(), error=AuthenticationError(f"Incorrect API key provided: {header_key}"), provider="openai",
               model="gpt-4o-mini", source="cli")
    call = log.get(call_id)
    assert call.request.extra["api_key"] == "[redacted]"
    assert call.request.extra["extra_headers"] == {"Authorization": "[redacted]"}
    assert call.request.extra["max_completion_tokens"] == 9 and call.request.max_tokens == 5
    assert call.key_name == "team-a"
    log.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("logs.db"))
    assert b"team-a" in stored
    for secret in (env_key, header_key, param_secret, gateway_secret, groq_key):
        assert secret.encode() not in stored, secret


# The schema as version 1 shipped it, frozen here: a real old file must keep upgrading.
V1_DDL = """
CREATE TABLE calls (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, source TEXT NOT NULL,
    provider TEXT NOT NULL, model TEXT NOT NULL, conversation_id TEXT, key_name TEXT,
    prompt TEXT NOT NULL DEFAULT '', response TEXT, request_json TEXT NOT NULL, response_json TEXT,
    finish_reason TEXT, input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0, cost REAL, latency REAL, error_kind TEXT, error TEXT,
    cached INTEGER NOT NULL DEFAULT 0, stream INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX calls_created_at ON calls (created_at);
CREATE INDEX calls_conversation ON calls (conversation_id, seq);
CREATE INDEX calls_model ON calls (provider, model);
PRAGMA user_version = 1;
"""


def test_a_version_1_database_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_DDL)
    conn.execute(
        "INSERT INTO calls (id, created_at, source, provider, model, conversation_id, prompt, response, request_json, "
        "response_json, finish_reason, input_tokens, output_tokens, cost) VALUES "
        "('01HZZZZZZZZZZZZZZZZZZZZZZZ', '2025-01-02T03:04:05.000Z', 'cli', 'openai', 'gpt-4o-mini', 'old-conv', "
        "'tell me about penguins', 'Penguins are birds.', "
        "'{\"model\": \"openai/gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"tell me about penguins\"}]}]}', "
        "'{\"id\": \"r\", \"model\": \"gpt-4o-mini\", \"message\": {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"Penguins are birds.\"}]}, \"finish_reason\": \"stop\", \"usage\": {\"input_tokens\": 5, \"output_tokens\": 4}}', "
        "'stop', 5, 4, 0.000003)"
    )
    conn.commit()
    conn.close()

    log = CallLog(path)
    [old] = log.query(search="penguins")
    assert old.id == "01HZZZZZZZZZZZZZZZZZZZZZZZ" and old.response.text == "Penguins are birds."
    assert log.conversation_messages("old-conv")[-1].text == "Penguins are birds."
    new = log.record(make_request("and about puffins?"), make_response("Also birds."), provider="openai",
                     model="gpt-4o-mini", source="cli")
    assert [c.id for c in log.query(search="birds")] == [new, old.id]
    log.close()
    with sqlite3.connect(path) as check:
        # Adopted at the version its user_version showed, and kept where every store keeps it.
        assert check.execute("SELECT version FROM modelport_schema WHERE component = 'call_log'").fetchone()[0] == SCHEMA_VERSION
        assert check.execute("SELECT count(*) FROM calls").fetchone()[0] == 2


def test_a_database_from_a_newer_modelport_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="newer modelport"):
        CallLog(path).query()


def test_ids_are_unique_and_sort_in_creation_order() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)
    # The first ten characters are the ULID timestamp: milliseconds since the epoch.
    ms = 0
    for char in ids[-1][:10]:
        ms = ms * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    assert abs(ms / 1000 - time.time()) < 60


def test_conversations_continue_from_the_latest_answered_call(log: CallLog) -> None:
    assert log.last_conversation_id() is None
    first = [Message.user("Hi")]
    log.record(ChatRequest("m", first), make_response("Hello!"), provider="openai", model="m", source="cli",
               conversation_id="c1")
    second = [*first, Message.assistant("Hello!"), Message.user("Weather?")]
    tool_answer = ChatResponse("r2", "m", Message.assistant("", [ToolCall("t1", "weather", '{"city":"Oslo"}')]),
                               finish_reason="tool_calls")
    log.record(ChatRequest("m", second), tool_answer, provider="openai", model="m", source="cli", conversation_id="c1")
    log.record(ChatRequest("m", [Message.user("other")]), make_response(), provider="openai", model="m", source="cli",
               conversation_id="c2")
    log.record(ChatRequest("m", [*second, Message.user("again")]), error="timed out", provider="openai", model="m",
               source="cli", conversation_id="c1")
    assert log.last_conversation_id() == "c1"
    messages = log.conversation_messages("c1")
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[-1].tool_calls[0].args == {"city": "Oslo"}
    with pytest.raises(ConfigError, match="no conversation"):
        log.conversation_messages("nope")
    log.record(ChatRequest("m", [Message.user("x")]), error="boom", provider="openai", model="m", source="cli",
               conversation_id="c3")
    assert log.conversation_messages("c3") == []
    # A conversation of failed calls only is never the one `ask -c` continues.
    assert log.last_conversation_id() == "c1"


def test_prompt_indexes_only_the_new_turn(log: CallLog) -> None:
    request = ChatRequest("m", [Message.user("first question"), Message.assistant("first answer"),
                                Message.user("second question")])
    call_id = log.record(request, make_response(), provider="openai", model="m", source="cli")
    assert log.get(call_id).prompt == "second question"
    assert log.query(search="first") == []


def test_query_filters(log: CallLog) -> None:
    log.record(make_request("about gpt-4o pricing"), make_response(), provider="openai", model="gpt-4o", source="cli")
    log.record(make_request("cats"), make_response("meow"), provider="groq", model="openai/gpt-oss-120b", source="sdk")
    log.record(make_request("dogs"), make_response("woof"), provider="openai", model="gpt-4o-mini", source="gateway")
    assert [c.model for c in log.query()] == ["gpt-4o-mini", "openai/gpt-oss-120b", "gpt-4o"]
    assert [c.model for c in log.query(limit=1)] == ["gpt-4o-mini"]
    assert [c.model for c in log.query(oldest_first=True, limit=1)] == ["gpt-4o"]
    assert [c.model for c in log.query(model="gpt-4o")] == ["gpt-4o"]
    assert [c.model for c in log.query(model="groq/openai/gpt-oss-120b")] == ["openai/gpt-oss-120b"]
    assert [c.model for c in log.query(model="gpt-4o*")] == ["gpt-4o-mini", "gpt-4o"]
    assert [c.model for c in log.query(provider="groq")] == ["openai/gpt-oss-120b"]
    assert [c.model for c in log.query(source="gateway")] == ["gpt-4o-mini"]
    assert [c.response_text for c in log.query(search="meow")] == ["meow"]
    assert [c.model for c in log.query(search='gpt-4o "pricing')] == ["gpt-4o"]
    assert log.query(search="AND NEAR( * OR") == []  # query syntax is never interpreted
    assert len(log.query(since="1h")) == 3
    future = (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()
    assert log.query(since=future) == []
    with pytest.raises(ValueError, match="30m, 2h"):
        log.query(since="yesterday-ish")


def test_parse_since() -> None:
    now = datetime(2025, 6, 10, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("3d", now) == now - timedelta(days=3)
    assert parse_since("1w", now) == now - timedelta(weeks=1)
    assert parse_since("2025-06-01T00:00:00Z") == datetime(2025, 6, 1, tzinfo=timezone.utc)
    assert parse_since("2025-06-01").tzinfo is not None


def test_usage_groups_tokens_and_cost(log: CallLog) -> None:
    for _ in range(2):
        log.record(make_request(), make_response(usage=Usage(1000, 500)), provider="openai", model="gpt-4o", source="cli")
    log.record(make_request(), make_response(usage=Usage(1000, 500)), provider="openai", model="gpt-4o", source="cli",
               cached=True)
    log.record(make_request(), error="boom", provider="openai", model="gpt-4o", source="cli")
    log.record(make_request(), make_response(usage=Usage(10, 10)), provider="mybox", model="llama", source="gateway",
               key_name="team-a")
    rows = {r.group: r for r in log.usage("model")}
    gpt = rows["openai/gpt-4o"]
    assert (gpt.calls, gpt.errors, gpt.cache_hits, gpt.input_tokens, gpt.output_tokens) == (4, 1, 1, 2000, 1000)
    assert gpt.cost == pytest.approx(2 * 0.0075) and gpt.unpriced_calls == 0
    assert rows["mybox/llama"].unpriced_calls == 1 and rows["mybox/llama"].cost == 0
    assert {r.group for r in log.usage("key")} == {"team-a", "(no key)"}
    assert [r.calls for r in log.usage("day")] == [5]
    with pytest.raises(ValueError, match="group"):
        log.usage("week")


def test_many_threads_record_at_once(log: CallLog) -> None:
    def work() -> None:
        for _ in range(200):
            log.record(make_request(), make_response(), provider="openai", model="gpt-4o-mini", source="gateway")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(log.query(limit=None)) == 1600


def test_records_are_written_at_exit_without_an_explicit_flush(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    script = (
        "from modelport.calllog import CallLog\n"
        "from modelport.types import ChatRequest, Message\n"
        f"log = CallLog({str(path)!r})\n"
        "for i in range(50):\n"
        "    log.record(ChatRequest('m', [Message.user(str(i))]), error='x', provider='p', model='m', source='batch')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parent.parent)
    assert len(CallLog(path).query(limit=None)) == 50


def test_modelport_log_0_turns_logging_off_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_LOG", "0")
    log = CallLog(tmp_path / "off.db")
    assert log.record(make_request(), make_response(), provider="openai", model="m", source="cli")
    log.flush()
    assert not (tmp_path / "off.db").exists()
    assert log_for("cli") is None and log_for("sdk", enabled=True) is None


def test_default_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    assert logging_enabled("cli") and logging_enabled("gateway") and logging_enabled("batch")
    assert not logging_enabled("sdk") and logging_enabled("sdk", enabled=True)
    assert not logging_enabled("cli", enabled=False)
    monkeypatch.setenv("MODELPORT_LOG", "1")
    assert logging_enabled("sdk")
    assert log_for("sdk") is log_for("cli")


def test_log_for_uses_the_path_from_the_environment(isolated_home) -> None:
    log = log_for("cli")
    assert log is not None and log.path == isolated_home / "logs.db"


def age(path: Path, calls: int, days: float) -> None:
    """Make the first ``calls`` calls of the log ``days`` old."""
    then = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE calls SET created_at = ? WHERE seq <= ?", (then, calls))
    db.close()


def fts_consistent(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO calls_fts (calls_fts) VALUES ('integrity-check')")  # raises when out of step
    db.close()


def test_prune_by_age_then_by_size_oldest_first_with_the_search_index_in_step(log: CallLog) -> None:
    from modelport.calllog import Retention, _mb_in_use, connect

    for i in range(1500):
        word = "ancient" if i < 1100 else "recent"
        log.record(make_request(f"{word} question {i} " + "padding " * 200), make_response(f"{word} answer {i}"),
                   provider="openai", model="gpt-4o-mini", source="cli")
    assert log.flush(30)
    age(log.path, 1100, days=40)
    by_age = log.prune(Retention(max_age_days=30))
    assert by_age.removed == 1100 and by_age.mb_after < by_age.mb_before
    assert log.query(search="ancient", limit=None) == [] and len(log.query(search="recent", limit=None)) == 400
    fts_consistent(log.path)
    target = by_age.mb_after / 2
    by_size = log.prune(Retention(max_mb=target))
    assert 0 < by_size.removed < 400 and by_size.mb_after <= target
    left = log.query(limit=None, oldest_first=True)
    assert len(left) == 400 - by_size.removed and "recent question 1499 " in left[-1].prompt  # the newest stay
    fts_consistent(log.path)
    db = connect(log.path)
    assert _mb_in_use(db) <= target
    db.close()
    assert log.prune(Retention(max_age_days=30, max_mb=target)).removed == 0


def test_a_retained_log_prunes_itself_on_its_writer_after_a_write(log: CallLog) -> None:
    from modelport.calllog import Retention

    for i in range(2500):  # three pieces of pruning, each queued behind the writes made meanwhile
        log.record(make_request(f"old {i}"), make_response(), provider="openai", model="gpt-4o-mini", source="gateway")
    assert log.flush(30)
    age(log.path, 2500, days=3)
    log.retain(Retention(max_age_days=1), every=0.0)
    log.record(make_request("new"), make_response(), provider="openai", model="gpt-4o-mini", source="gateway")
    deadline = time.monotonic() + 30
    while len(log.query(limit=None)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [c.prompt for c in log.query(limit=None)] == ["Be brief.\n\nnew"]


def test_retention_settings_are_checked() -> None:
    from modelport.calllog import Retention

    assert Retention.from_config({"log": {"max_age_days": 30, "max_mb": 512.5}}) == Retention(30, 512.5)
    assert not Retention.from_config({}).bounded
    for bad in (0, -1, "30d", True):
        with pytest.raises(ConfigError, match="max_mb must be a positive number"):
            Retention.from_config({"log": {"max_mb": bad}})


def test_usage_reports_cache_writes_and_what_caching_saved(log: CallLog) -> None:
    # claude-sonnet-4-5: input $3, cache reads $0.30, cache writes $3.75 per million tokens.
    log.record(make_request(), make_response(usage=Usage(10_000, 10, cache_write_tokens=9_000)), provider="anthropic",
               model="claude-sonnet-4-5", source="gateway")
    log.record(make_request(), make_response(usage=Usage(10_000, 10, cached_tokens=9_000)), provider="anthropic",
               model="claude-sonnet-4-5", source="gateway")
    row = log.usage("model")[0]
    assert (row.cached_tokens, row.cache_write_tokens) == (9_000, 9_000)
    assert row.cache_saved == pytest.approx(9_000 * (3.0 - 0.3) / 1e6 - 9_000 * 0.75 / 1e6)
