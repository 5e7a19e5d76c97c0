"""The call pipeline serves every model call: batch rows reach the call log and the key's
usage like any chat call, and hooks see and change calls without editing the pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from modelport.calllog import CallLog, default_log_path
from modelport.hooks import redact_text
from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream

UPSTREAM_KEY = "sk-upstream-pipeline-secret-12345"
PRICES = {"input": 0.15, "output": 0.6}


@pytest.fixture()
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


def config(upstream: OpenAIUpstream, **extra: Any) -> dict[str, Any]:
    return {"aliases": {"fake": "openai/gpt-fake"}, "providers": {"openai": {"base_url": upstream.base_url}},
            "prices": {"openai/gpt-fake": PRICES}, **extra}


def gateway(upstream: OpenAIUpstream, tmp_path: Path, **settings: Any) -> GatewayThread:
    conf = config(upstream, **settings.pop("config", {}))
    return GatewayThread(Settings(log_calls=True, keys_path=str(tmp_path / "keys.db"), batch_dir=str(tmp_path / "batches"), **settings),
                         config=conf, api_keys={"openai": UPSTREAM_KEY})


def logged(count: int, timeout: float = 30.0) -> list[Any]:
    """The call log's rows once it holds ``count`` (its writer is a background thread)."""
    log = CallLog(default_log_path())
    deadline = time.monotonic() + timeout
    while True:
        rows = log.query(limit=100)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def batch_lines(n: int) -> bytes:
    return b"".join(json.dumps({"custom_id": f"row-{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": "fake", "max_tokens": 5, "messages": [{"role": "user", "content": f"row {i} says hi"}]}}
                               ).encode() + b"\n" for i in range(n))


def wait_batch(sdk: openai.OpenAI, batch_id: str) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not finish")


def test_a_batch_through_the_batches_api_logs_each_row_with_its_key_cost_and_tokens(upstream: OpenAIUpstream, tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    with gateway(upstream, tmp_path, auth=True) as gw:
        key = store.create("batcher")
        sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
        uploaded = sdk.files.create(file=("rows.jsonl", batch_lines(3)), purpose="batch")
        batch = wait_batch(sdk, sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                    completion_window="24h").id)
        assert batch.status == "completed" and batch.request_counts.completed == 3
    rows = logged(3)
    assert len(rows) == 3
    for row in rows:
        assert row.source == "batch" and row.key_name == "batcher" and row.key_id == key.split("_")[1]
        usage = row.usage
        assert usage.input_tokens > 0 and usage.output_tokens > 0
        assert row.cost == pytest.approx((usage.input_tokens * PRICES["input"] + usage.output_tokens * PRICES["output"]) / 1e6)
    usage = CallLog(default_log_path()).usage(by="model")
    assert sum(u.calls for u in usage) == 3
    record = next(r for r in store.records() if r.name == "batcher")
    deadline = time.monotonic() + 10
    while record.requests < 3 and time.monotonic() < deadline:  # the gateway saves key usage about once a second
        time.sleep(0.1)
        record = next(r for r in store.records() if r.name == "batcher")
    assert record.requests >= 3 and record.cost == pytest.approx(sum(r.cost for r in rows))


def test_a_batch_started_from_the_console_logs_each_row(upstream: OpenAIUpstream, tmp_path: Path) -> None:
    with gateway(upstream, tmp_path) as gw:
        started = httpx.post(gw.url + "/ui/api/batches", headers={"x-modelport-console": "1"}, json={
            "model": "fake", "prompt": "Say {text}", "filename": "rows.jsonl",
            "content": "\n".join(json.dumps({"text": t}) for t in ("a", "b")), "max_tokens": 5})
        assert started.status_code == 200, started.text
        batch_id = started.json()["id"]
        deadline = time.monotonic() + 60
        while httpx.get(gw.url + "/v1/batches/" + batch_id).json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    rows = logged(2)
    assert sorted(r.source for r in rows) == ["batch", "batch"]
    assert all(r.cost and r.cost > 0 for r in rows)


def test_the_redaction_hook_masks_the_call_log_but_not_the_answer(upstream: OpenAIUpstream, tmp_path: Path) -> None:
    prompt = "Mail ada@lovelace.example or call +44 20 7946 0958 with key sk-proj-abcdefghijklmnop1234"
    with gateway(upstream, tmp_path, config={"log": {"redact": True}}) as gw:
        answer = httpx.post(gw.url + "/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": prompt}]})
        assert answer.status_code == 200
        assert "ada@lovelace.example" in answer.json()["choices"][0]["message"]["content"]  # the caller's answer is untouched
        assert upstream.last_request.body["messages"][0]["content"] == prompt  # and so is what the model saw
    [row] = logged(1)
    stored = row.prompt + " " + (row.response_text or "")
    for secret in ("ada@lovelace.example", "7946 0958", "sk-proj-abcdefghijklmnop1234"):
        assert secret not in stored
    assert "[email]" in row.prompt and "[phone]" in row.prompt and "[key]" in row.prompt


def test_redact_text_keeps_what_is_not_personal() -> None:
    for kept in ("In 2024, 3 of 12 runs took 1500 ms.", "released 2026-12-08", "served from 10.1.2.3", "v1.2.3"):
        assert redact_text(kept) == kept
    assert redact_text("write to bob@example.org") == "write to [email]"
    assert redact_text("(415) 555-0100") == "[phone]"


def test_the_sdk_logs_through_the_same_redaction_hook(openai_upstream: OpenAIUpstream) -> None:
    from modelport import Client

    client = Client(log=True, config={"providers": {"openai": {"base_url": openai_upstream.base_url}}, "log": {"redact": True}},
                    api_keys={"openai": "sk-x"})
    answer = client.chat("openai/gpt-fake", "write to ada@lovelace.example")
    assert "ada@lovelace.example" in answer.text  # the answer itself is untouched
    [row] = logged(1)
    assert "ada@lovelace.example" not in row.prompt and "[email]" in row.prompt
