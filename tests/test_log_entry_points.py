"""Every entry point leaves its calls in the one SQLite log, with the right fields, and no
secret ever reaches the database file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai

import modelport
from modelport.calllog import CallLog
from modelport.client import Client
from tests.fakes.openai_upstream import OpenAIUpstream

PROVIDER_KEY = "sk-provider-secret-4f9a8b7c6d5e"


def logged(path: Path) -> list:
    log = CallLog(path)
    return log.query(limit=None, oldest_first=True)


def assert_no_secret_in(path: Path, *secrets: str) -> None:
    while True:
        try:
            data = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
            break
        except FileNotFoundError:
            # The WAL went between glob and read: its last connection closed (a log object
            # collected) and moved it into the file, which is then read again.
            continue
    for secret in secrets:
        assert secret.encode() not in data


def test_sdk_calls_are_logged_when_asked(tmp_path):
    path = Path(os.environ["MODELPORT_LOG_PATH"])
    with OpenAIUpstream(api_key=PROVIDER_KEY) as upstream:
        quiet = Client(base_urls={"openai": upstream.base_url}, api_keys={"openai": PROVIDER_KEY})
        quiet.chat("openai/gpt-fake", "not logged: the SDK logs only when asked")
        client = Client(base_urls={"openai": upstream.base_url}, api_keys={"openai": PROVIDER_KEY}, log=True)
        client.chat("openai/gpt-fake", "hello log", temperature=0.5, extra={"api_key": PROVIDER_KEY})
        client._log.flush()
    (call,) = logged(path)
    assert (call.source, call.provider, call.model) == ("sdk", "openai", "gpt-fake")
    assert call.prompt.endswith("hello log") and call.response_text == "echo: hello log"
    assert call.request.temperature == 0.5
    assert (call.usage.input_tokens, call.usage.output_tokens) == (2, 3)
    assert call.latency is not None and call.latency > 0
    assert_no_secret_in(path, PROVIDER_KEY)


def test_cli_calls_are_logged_with_their_conversation(tmp_path):
    path = Path(os.environ["MODELPORT_LOG_PATH"])
    with OpenAIUpstream(api_key=PROVIDER_KEY) as upstream:
        env = {**os.environ, "MODELPORT_OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": PROVIDER_KEY}
        for args in (["hello cli"], ["-c", "and again"]):
            result = subprocess.run([sys.executable, "-m", "modelport", "ask", "-m", "openai/gpt-fake", *args],
                                    env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
    first, second = logged(path)
    assert first.source == second.source == "cli"
    assert first.conversation_id == second.conversation_id is not None
    assert second.response_text == "echo: and again"
    assert_no_secret_in(path, PROVIDER_KEY)


def test_gateway_calls_are_logged_with_the_gateway_key_name(tmp_path):
    from modelport.server.auth import KeyStore
    from modelport.server.testing import GatewayThread

    path = Path(os.environ["MODELPORT_LOG_PATH"])
    with OpenAIUpstream(api_key=PROVIDER_KEY) as upstream:
        os.environ["MODELPORT_OPENAI_BASE_URL"] = upstream.base_url
        try:
            store = KeyStore()
            gateway_key = store.create("team-a")
            from dataclasses import replace

            from modelport.server.app import Settings

            with GatewayThread(replace(Settings(), auth=True, log_calls=True), api_keys={"openai": PROVIDER_KEY}) as gateway:
                sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway_key)
                sdk.chat.completions.create(model="openai/gpt-fake", messages=[{"role": "user", "content": "through the gateway"}])
        finally:
            del os.environ["MODELPORT_OPENAI_BASE_URL"]
    (call,) = logged(path)
    assert (call.source, call.key_name, call.key_id, call.provider) == ("gateway", "team-a", gateway_key.split("_")[1], "openai")
    assert call.response_text == "echo: through the gateway"
    assert_no_secret_in(path, PROVIDER_KEY, gateway_key)


def test_batch_rows_are_logged_as_batch_calls(tmp_path):
    path = Path(os.environ["MODELPORT_LOG_PATH"])
    with OpenAIUpstream(api_key=PROVIDER_KEY) as upstream:
        os.environ["MODELPORT_OPENAI_BASE_URL"] = upstream.base_url
        os.environ["OPENAI_API_KEY"] = PROVIDER_KEY
        try:
            rows = modelport.batch([{"t": "one"}, {"t": "two"}], model="openai/gpt-fake", prompt="say {t}")
        finally:
            del os.environ["MODELPORT_OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"]
    assert [r["answer"] for r in rows] == ["echo: say one", "echo: say two"]
    from modelport.calllog import log_for

    log_for("batch").flush()
    calls = logged(path)
    assert sorted(c.response_text for c in calls) == ["echo: say one", "echo: say two"]
    assert {c.source for c in calls} == {"batch"}
    assert_no_secret_in(path, PROVIDER_KEY)


def test_the_gateway_prunes_its_log_by_itself(monkeypatch):
    import sqlite3
    import time

    from modelport import calllog
    from modelport.server import Settings
    from modelport.server.testing import GatewayThread
    from modelport.types import ChatRequest, Message

    path = Path(os.environ["MODELPORT_LOG_PATH"])
    old = CallLog(path)
    for i in range(2500):  # three pieces of pruning, run between the gateway's own writes
        old.record(ChatRequest("openai/gpt-fake", [Message.user(f"stale {i}")]), error="long ago", provider="openai",
                   model="gpt-fake", source="gateway")
    old.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE calls SET created_at = '2020-01-01T00:00:00.000Z'")
    db.close()
    monkeypatch.setattr(calllog, "PRUNE_EVERY", 0.1)
    config = {"providers": {"openai": {"base_url": ""}}, "log": {"max_age_days": 1}}
    with OpenAIUpstream(api_key=PROVIDER_KEY) as upstream:
        config["providers"]["openai"]["base_url"] = upstream.base_url
        with GatewayThread(Settings(log_calls=True), config=config, api_keys={"openai": PROVIDER_KEY}) as gateway:
            sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="-", max_retries=0)
            deadline = time.monotonic() + 30
            while True:  # every answer comes at once; the writer prunes after writing its call
                answer = sdk.chat.completions.create(model="openai/gpt-fake", messages=[{"role": "user", "content": "fresh"}])
                assert answer.choices[0].message.content == "echo: fresh"
                with sqlite3.connect(path) as db:
                    stale = db.execute("SELECT count(*) FROM calls WHERE prompt LIKE 'stale%'").fetchone()[0]
                db.close()
                if stale == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    assert stale == 0
    assert {call.prompt for call in logged(path)} == {"fresh"}
