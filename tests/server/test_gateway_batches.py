"""`modelport serve` answers OpenAI's Files and Batches API: the official openai SDK's batch
workflow (upload, create, poll, download) against a live gateway, rows answered by the
embedded model through an alias, with the gateway's auth in front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest

from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from tests.waiting import batch_reaching


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("keys") / "gateway.db")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, store: KeyStore) -> Iterator[GatewayThread]:
    settings = Settings(auth=True, log_calls=False, keys_path=str(store.path), max_tokens=64,
                        batch_dir=str(tmp_path_factory.mktemp("batches")))
    config = {"aliases": {"tiny": "local/smollm2"}}
    with GatewayThread(settings, config=config) as gw:
        yield gw


def _lines(model: str, prompts: list[str]) -> bytes:
    return b"".join(
        json.dumps({"custom_id": f"row-{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": model, "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": p}]}}).encode() + b"\n"
        for i, p in enumerate(prompts)
    )


def _wait(sdk: Any, batch_id: str, timeout: float = 60) -> Any:
    return batch_reaching(sdk, batch_id, timeout=timeout)


def test_openai_sdk_batch_workflow_on_the_embedded_model(gateway: GatewayThread, store: KeyStore, tmp_path: Path) -> None:
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=store.create("batcher"), max_retries=0)
    source = tmp_path / "requests.jsonl"
    source.write_bytes(_lines("tiny", ["Say hi.", "Name a colour."]))
    uploaded = sdk.files.create(file=source.open("rb"), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == source.stat().st_size
    assert uploaded.id in [f.id for f in sdk.files.list()]
    assert sdk.files.retrieve(uploaded.id).filename == "requests.jsonl"

    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                               metadata={"job": "gateway-test"})
    batch = _wait(sdk, batch.id)
    assert batch.status == "completed", batch.errors
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (2, 2, 0)
    assert batch.metadata == {"job": "gateway-test"}
    assert batch.id in [b.id for b in sdk.batches.list()]

    out = [json.loads(line) for line in sdk.files.content(batch.output_file_id).text.splitlines()]
    by_id = {o["custom_id"]: o for o in out}
    assert sorted(by_id) == ["row-0", "row-1"]
    for line in out:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 4
    assert sdk.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(uploaded.id)


def test_auth_and_errors_in_openai_shape(gateway: GatewayThread, store: KeyStore, tmp_path: Path) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="not-a-key", max_retries=0).batches.list()
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=store.create("errors"), max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.batches.retrieve("batch_nope")
    assert missing.value.body["message"].startswith("No batch found")  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(input_file_id="file-x", endpoint="/v1/embeddings", completion_window="24h")  # type: ignore[arg-type]

    # A key limited to some models cannot reach another one through a batch file.
    limited = openai.OpenAI(base_url=gateway.url + "/v1", api_key=store.create("limited", models=["openai/*"]), max_retries=0)
    source = tmp_path / "local.jsonl"
    source.write_bytes(_lines("tiny", ["hi"]))
    uploaded = limited.files.create(file=source.open("rb"), purpose="batch")
    with pytest.raises(openai.PermissionDeniedError):
        limited.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")


def test_a_key_with_limits_may_not_start_batches_its_limits_could_not_hold(gateway: GatewayThread, store: KeyStore, tmp_path: Path) -> None:
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=store.create("metered", budget=1.0), max_retries=0)
    source = tmp_path / "requests.jsonl"
    source.write_bytes(_lines("tiny", ["Say hi."]))
    uploaded = sdk.files.create(file=source.open("rb"), purpose="batch")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert "metered" in str(refused.value) and "--budget" in str(refused.value)
    assert uploaded.id not in [b.input_file_id for b in sdk.batches.list().data]
