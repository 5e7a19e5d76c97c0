"""`--mode native`: jobs through the providers' own batch APIs, with the live mode's output
and resume guarantees: OpenAI against modelport's own gateway (a real implementation of
the Files + Batch wire format), Anthropic and Gemini against small fakes, and kills at the
two dangerous moments (while the batch runs remotely; between the provider's answer and
the journal's commit) that must never lead to a second remote batch."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from modelport.batch import arun, open_job
from modelport.batch.journal import Journal
from modelport.batch.native import SUBMITTED, job_tag
from modelport.batch.spec import JobSpec
from modelport.client import AsyncClient
from modelport.errors import ConfigError
from modelport.prices import NATIVE_BATCH_DISCOUNT, cost, price_for
from modelport.server import Settings
from modelport.server.testing import GatewayThread
from modelport.types import Usage
from tests.fakes.anthropic_batches import AnthropicBatchesUpstream
from tests.fakes.gemini_batches import GeminiBatchesUpstream
from tests.fakes.openai_batches import OpenAIBatchesUpstream
from tests.fakes.openai_upstream import OpenAIUpstream

FAKES = {"openai": OpenAIBatchesUpstream, "anthropic": AnthropicBatchesUpstream, "gemini": GeminiBatchesUpstream}
MODELS = {"openai": "openai/gpt-fake", "anthropic": "anthropic/claude-fake", "gemini": "gemini/gemini-fake"}


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_BATCH_POLL_SECONDS", "0.05")


def _client(provider: str, base_url: str) -> AsyncClient:
    return AsyncClient(max_retries=0, config={"providers": {provider: {"base_url": base_url}}}, api_keys={provider: "sk-test"})


def _job(tmp_path: Path, model: str, n: int, **spec: Any) -> tuple[Journal, JobSpec, list[dict[str, str]]]:
    rows = [{"text": f"item {i}"} for i in range(n)]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = JobSpec(job_id=spec.pop("job_id", "native-job"), model=model, prompt="Say {text}", input=str(source), input_format="jsonl",
                  output=str(tmp_path / "out.jsonl"), output_format="jsonl", mode="native", params={"max_tokens": 20}, **spec)
    journal, job = open_job(tmp_path / "job.db", job)
    return journal, job, rows


def run_job(journal: Journal, spec: JobSpec, client: AsyncClient) -> Any:
    async def main() -> Any:
        try:
            return await arun(journal, spec, client=client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def _output(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_native_job_answers_every_row_in_input_order(provider: str, tmp_path: Path) -> None:
    with FAKES[provider]() as fake:
        journal, spec, _ = _job(tmp_path, MODELS[provider], 5)
        stats = run_job(journal, spec, client=_client(provider, fake.base_url))
        journal.close()
        assert stats.status == "completed" and (stats.done, stats.failed) == (5, 0)
        assert fake.creates == 1
    out = _output(tmp_path)
    assert [r["index"] for r in out] == list(range(5))
    assert [r["answer"] for r in out] == [f"echo: Say item {i}" for i in range(5)]
    assert all(r["usage"]["input_tokens"] == 10 and r["error"] is None for r in out)


@pytest.fixture()
def gateway_with_upstream(tmp_path: Path) -> Iterator[GatewayThread]:
    with OpenAIUpstream() as upstream:
        config = {"aliases": {"gpt-4o-mini": "up/gpt-4o-mini"}, "providers": {"up": {"base_url": upstream.base_url}}}
        with GatewayThread(Settings(log_calls=False, batch_dir=str(tmp_path / "gw")), config=config) as gw:
            yield gw


def test_openai_native_through_the_gateways_batch_api(gateway_with_upstream: GatewayThread, tmp_path: Path) -> None:
    lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"number {i}"}]}} for i in range(4)]
    lines[2]["body"]["model"] = "no-such-model"
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    spec = JobSpec(job_id="oa-native", input=str(source), input_format="openai", output=str(tmp_path / "out.jsonl"),
                   output_format="openai", mode="native")
    journal, spec = open_job(tmp_path / "job.db", spec)
    # Line models are OpenAI's ids: the job sends them to "openai", here the gateway.
    client = AsyncClient(max_retries=0, config={"aliases": {"gpt-4o-mini": "openai/gpt-4o-mini", "no-such-model": "openai/no-such-model"},
                                                 "providers": {"openai": {"base_url": gateway_with_upstream.url + "/v1"}}},
                         api_keys={"openai": "unused"})
    stats = run_job(journal, spec, client=client)
    remotes = journal.remotes()
    journal.close()
    assert stats.status == "completed" and (stats.done, stats.failed) == (3, 1), stats.message
    # Two models, two provider batches; the output is still one file in input order.
    assert len(remotes) == 2 and all(r["status"] == "collected" for r in remotes)
    out = _output(tmp_path)
    assert [o["custom_id"] for o in out] == ["q0", "q1", "q2", "q3"]
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: number 0"
    assert out[2]["response"]["status_code"] == 404
    # Native batches cost the discounted price.
    usage = out[0]["response"]["body"]["usage"]
    full = cost(Usage(usage["prompt_tokens"], usage["completion_tokens"]), price_for("openai", "gpt-4o-mini"))
    assert full and stats.cost == pytest.approx(3 * full * (1 - NATIVE_BATCH_DISCOUNT), rel=0.01)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_crash_between_submit_and_journal_write_finds_the_batch(provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider created the batch, then the process died before recording its id: the
    resume finds it by its tag among the provider's batches and creates no second one."""
    with FAKES[provider]() as fake:
        fake.hold = True
        journal, spec, _ = _job(tmp_path, MODELS[provider], 3)
        original = Journal.set_remote

        def crash(self: Journal, name: str, first: int, last: int, remote_id: Any, status: str, info: Any = None) -> None:
            if status == SUBMITTED:
                raise KeyboardInterrupt("killed right after the provider answered")
            original(self, name, first, last, remote_id, status, info)

        monkeypatch.setattr(Journal, "set_remote", crash)
        with pytest.raises(KeyboardInterrupt):
            run_job(journal, spec, client=_client(provider, fake.base_url))
        journal.close()
        monkeypatch.setattr(Journal, "set_remote", original)
        assert fake.creates == 1

        fake.hold = False
        journal, spec = open_job(tmp_path / "job.db")
        stats = run_job(journal, spec, client=_client(provider, fake.base_url))
        journal.close()
        assert stats.status == "completed" and stats.done == 3
        assert fake.creates == 1
    assert [r["answer"] for r in _output(tmp_path)] == [f"echo: Say item {i}" for i in range(3)]


def test_killed_while_the_batch_runs_resumes_the_same_batch(tmp_path: Path) -> None:
    with AnthropicBatchesUpstream() as fake:
        fake.hold = True
        rows = tmp_path / "rows.jsonl"
        rows.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(4)))
        env = {**os.environ, "MODELPORT_DATA_DIR": str(tmp_path / "data"), "MODELPORT_ANTHROPIC_BASE_URL": fake.base_url,
               "ANTHROPIC_API_KEY": "sk-ant-test", "MODELPORT_BATCH_POLL_SECONDS": "0.05"}
        cmd = [sys.executable, "-m", "modelport", "batch", "run", str(rows), "-m", "anthropic/claude-fake", "--prompt", "Say {text}",
               "--mode", "native", "--job-id", "killme", "--output", str(tmp_path / "out.jsonl"), "--quiet"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            # Created, then polled at least twice: the batch id is in the journal by then.
            while sum(r.method == "GET" for r in list(fake.requests)) < 2:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the job never polled its batch"
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert fake.creates == 1

        fake.hold = False
        resumed = subprocess.run([sys.executable, "-m", "modelport", "batch", "resume", "killme", "--json"], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        assert summary["status"] == "completed" and summary["done"] == 4
        assert fake.creates == 1
    out = _output(tmp_path)
    assert [r["answer"] for r in out] == [f"echo: Say row {i}" for i in range(4)]


def test_custom_ids_carry_the_job_tag(tmp_path: Path) -> None:
    with AnthropicBatchesUpstream() as fake:
        journal, spec, _ = _job(tmp_path, MODELS["anthropic"], 2, job_id="tagged")
        run_job(journal, spec, client=_client("anthropic", fake.base_url))
        journal.close()
        sent = [item["custom_id"] for items in fake.requests_of.values() for item in items]
    assert sent == [f"{job_tag('tagged')}-0", f"{job_tag('tagged')}-1"]


def test_a_provider_without_a_batch_api_is_a_clear_error(tmp_path: Path) -> None:
    journal, spec, _ = _job(tmp_path, "local/smollm2", 1)
    # Raised before the job starts (preflight), not found out after it was submitted.
    with pytest.raises(ConfigError, match="no batch API"):
        run_job(journal, spec, client=AsyncClient(max_retries=0))
    assert journal.get("status") is None
    journal.close()
