"""`modelport batch run` marks the prefix its rows share for the provider's prompt cache
(issue 21): against a fake Anthropic upstream that accounts for its cache, the first row
writes the shared system prompt and the other 49 read it, the job's cost is the sum at
cache rates, and a SIGKILL with a resume keeps every row and every cent exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelport.prices import cost, price_for
from modelport.types import Usage
from tests.fakes.anthropic_upstream import AnthropicUpstream

ROWS = 50
SYSTEM = " ".join(f"rule{i}" for i in range(400))
CLI = [sys.executable, "-c", "from modelport.cli import main; main()"]
PRICE = price_for("anthropic", "claude-sonnet-4-5")


def _env(tmp_path: Path, base_url: str) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[providers.anthropic]\nbase_url = "{base_url}"\n')
    env = dict(os.environ)
    env.update(MODELPORT_CONFIG=str(config), MODELPORT_DATA_DIR=str(tmp_path / "data"), ANTHROPIC_API_KEY="sk-ant-fake",
               MODELPORT_LOG="0", PYTHONPATH=str(Path(__file__).parents[2]))
    return env


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": f"review number {i}"}) + "\n" for i in range(ROWS)))
    return source


def _command(source: Path, out: Path, *extra: str) -> list[str]:
    return [*CLI, "batch", "run", str(source), "-m", "anthropic/claude-sonnet-4-5", "--system", SYSTEM,
            "--prompt", "Classify the sentiment of this review: {text}", "--output", str(out), "-o", "max_tokens=8", "--quiet", *extra]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def _row_cost(usage: dict) -> float:
    return cost(Usage(usage["input_tokens"], usage["output_tokens"], usage.get("cached_tokens", 0), usage.get("cache_write_tokens", 0)), PRICE)


def _status(env: dict[str, str], job: str) -> dict:
    result = subprocess.run([*CLI, "batch", "status", job, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.timeout(180)
def test_a_batch_writes_the_shared_prefix_once_and_reads_it_49_times(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with AnthropicUpstream() as upstream:
        env = _env(tmp_path, upstream.base_url)
        done = subprocess.run(_command(_source(tmp_path), out, "--job-id", "cached", "--concurrency", "8"), env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        bodies = [r.body for r in upstream.requests]
    assert len(bodies) == ROWS
    for body in bodies:
        assert body["system"] == [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
        head = body["messages"][0]["content"][0]
        assert head == {"type": "text", "text": "Classify the sentiment of this review: ", "cache_control": {"type": "ephemeral"}}
    records = _records(out)
    assert sorted(r["index"] for r in records) == list(range(ROWS))
    reads = [r for r in records if r["usage"].get("cached_tokens")]
    writes = [r for r in records if r["usage"].get("cache_write_tokens")]
    assert len(reads) == ROWS - 1 and len(writes) == 1
    assert all(r["cost"] == pytest.approx(_row_cost(r["usage"])) for r in records)
    status = _status(env, "cached")
    assert status["cost"] == pytest.approx(sum(r["cost"] for r in records))
    # Cheaper than the same job with every row paying the full input rate.
    uncached = sum(cost(Usage(r["usage"]["input_tokens"], r["usage"]["output_tokens"]), PRICE) for r in records)
    assert status["cost"] < 0.35 * uncached


def test_no_cache_prefix_sends_no_markers_and_dry_run_estimates_both(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    source = _source(tmp_path)
    with AnthropicUpstream() as upstream:
        env = _env(tmp_path, upstream.base_url)
        dry = subprocess.run([*_command(source, out), "--dry-run", "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        estimate = json.loads(dry.stdout)
        assert estimate["cached_prefix_tokens"] > 0 and estimate["cost"] < 0.5 * estimate["cost_without_cache"]
        done = subprocess.run([*_command(source, out, "--no-cache-prefix", "--job-id", "plain")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert all("cache_control" not in json.dumps(r.body) for r in upstream.requests)
        assert upstream.request_count == ROWS


@pytest.mark.timeout(180)
def test_sigkill_and_resume_keep_every_row_and_its_cost_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with AnthropicUpstream(latency=0.2) as upstream:
        env = _env(tmp_path, upstream.base_url)
        proc = subprocess.Popen(_command(_source(tmp_path), out, "--job-id", "killed", "--concurrency", "4"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while upstream.request_count < 12 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the job ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        sent_before = upstream.request_count
        resumed = subprocess.run([*CLI, "batch", "resume", "killed", "--quiet"], env=env, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        # Rows in flight at the kill are sent again; none that was journaled is.
        assert ROWS <= upstream.request_count <= ROWS + sent_before
    records = _records(out)
    assert [r["index"] for r in records] == list(range(ROWS))
    assert sum(1 for r in records if r["usage"].get("cache_write_tokens")) == 1
    assert sum(1 for r in records if r["usage"].get("cached_tokens")) == ROWS - 1
    status = _status(env, "killed")
    assert status["cost"] == pytest.approx(sum(_row_cost(r["usage"]) for r in records))


def test_native_mode_marks_the_shared_prefix_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from modelport.batch import arun, open_job
    from modelport.batch.spec import JobSpec
    from modelport.client import AsyncClient
    from tests.fakes.anthropic_batches import AnthropicBatchesUpstream

    monkeypatch.setenv("MODELPORT_BATCH_POLL_SECONDS", "0.05")
    source = _source(tmp_path)
    with AnthropicBatchesUpstream() as fake:
        spec = JobSpec(job_id="native-cached", model="anthropic/claude-sonnet-4-5", prompt="Classify: {text}", system=SYSTEM,
                       input=str(source), input_format="jsonl", output=str(tmp_path / "out.jsonl"), output_format="jsonl",
                       mode="native", params={"max_tokens": 8})
        journal, spec = open_job(tmp_path / "job.db", spec)
        client = AsyncClient(max_retries=0, config={"providers": {"anthropic": {"base_url": fake.base_url}}}, api_keys={"anthropic": "k"})

        async def main():
            try:
                return await arun(journal, spec, client=client)
            finally:
                await client.aclose()

        stats = asyncio.run(main())
        journal.close()
        assert stats.status == "completed"
        params = [item["params"] for items in fake.requests_of.values() for item in items]
    assert len(params) == ROWS
    for p in params:
        assert p["system"][0]["cache_control"] == {"type": "ephemeral"}
        assert p["messages"][0]["content"][0] == {"type": "text", "text": "Classify: ", "cache_control": {"type": "ephemeral"}}
