"""The official openai SDK's batch workflow (upload, create, poll, download) against the
batch engine's Files/Batches API, served by uvicorn on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from modelport.batch.files_api import FilesAPI
from modelport.server.batches_http import asgi_app
from modelport.client import AsyncClient
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.waiting import batch_reaching

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")


class Served:
    def __init__(self, app: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture()
def fake_served(tmp_path: Path) -> Iterator[tuple[Served, OpenAIUpstream]]:
    with OpenAIUpstream() as upstream:
        client = AsyncClient(max_retries=0, config={"providers": {"fake": {"base_url": upstream.base_url}}})
        with Served(asgi_app(FilesAPI(tmp_path / "gw", client))) as served:
            yield served, upstream


def _lines(model: str, n: int, **body: Any) -> bytes:
    return b"".join(
        json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": model, "messages": [{"role": "user", "content": f"Say the number {i}"}], **body}}).encode() + b"\n"
        for i in range(n)
    )


def _wait(sdk: Any, batch_id: str, timeout: float = 60) -> Any:
    return batch_reaching(sdk, batch_id, timeout=timeout)


def test_openai_sdk_batch_workflow(fake_served: tuple[Served, OpenAIUpstream], tmp_path: Path) -> None:
    served, upstream = fake_served
    sdk = openai.OpenAI(base_url=served.base_url, api_key="unused")
    source = tmp_path / "requests.jsonl"
    source.write_bytes(_lines("fake/gpt-fake", 6))
    uploaded = sdk.files.create(file=source.open("rb"), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == source.stat().st_size
    assert sdk.files.content(uploaded.id).content == source.read_bytes()
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                               metadata={"job": "nightly"})
    assert batch.status in ("validating", "in_progress")
    batch = _wait(sdk, batch.id)
    assert batch.status == "completed"
    assert batch.request_counts.total == 6 and batch.request_counts.completed == 6
    assert batch.metadata == {"job": "nightly"}
    out = [json.loads(line) for line in sdk.files.content(batch.output_file_id).text.splitlines()]
    by_id = {o["custom_id"]: o for o in out}
    assert sorted(by_id) == [f"req-{i}" for i in range(6)]
    assert by_id["req-3"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: Say the number 3"
    assert upstream.request_count == 6
    assert [b.id for b in sdk.batches.list()] == [batch.id]


def test_failed_lines_go_to_the_error_file(fake_served: tuple[Served, OpenAIUpstream], tmp_path: Path) -> None:
    served, upstream = fake_served
    sdk = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    source = tmp_path / "requests.jsonl"
    source.write_bytes(_lines("fake/gpt-fake", 2) + _lines("nosuchprovider/x", 1).replace(b"req-0", b"req-bad"))
    uploaded = sdk.files.create(file=source.open("rb"), purpose="batch")
    batch = _wait(sdk, sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    errors = [json.loads(line) for line in sdk.files.content(batch.error_file_id).text.splitlines()]
    assert [e["custom_id"] for e in errors] == ["req-bad"]
    assert errors[0]["response"]["status_code"] == 404


def test_bad_requests_get_openai_errors(fake_served: tuple[Served, OpenAIUpstream], tmp_path: Path) -> None:
    served, _ = fake_served
    sdk = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        sdk.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        sdk.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    source = tmp_path / "bad.jsonl"
    source.write_bytes(b'{"custom_id": "a", "url": "/v1/embeddings", "method": "POST", "body": {}}\n')
    uploaded = sdk.files.create(file=source.open("rb"), purpose="batch")
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "failed" and batch.errors.data[0].code == "mismatched_endpoint"
    assert sdk.files.delete(uploaded.id).deleted


def test_openai_sdk_batch_with_the_embedded_model(tmp_path: Path) -> None:
    from modelport.local_model import pull

    pull(progress=False)  # a fresh machine fetches the weights here; otherwise a no-op
    client = AsyncClient(max_retries=0)
    with Served(asgi_app(FilesAPI(tmp_path / "gw", client, concurrency=2))) as served:
        sdk = openai.OpenAI(base_url=served.base_url, api_key="unused")
        source = tmp_path / "requests.jsonl"
        source.write_bytes(_lines("local/smollm2", 2, max_tokens=8))
        uploaded = sdk.files.create(file=source.open("rb"), purpose="batch")
        batch = _wait(sdk, sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id, 120)
        assert batch.status == "completed" and batch.request_counts.completed == 2
        out = [json.loads(line) for line in sdk.files.content(batch.output_file_id).text.splitlines()]
        assert all(o["response"]["body"]["choices"][0]["message"]["content"] for o in out)
