"""`--engine ray` on a local Ray instance: partitions on workers, one shared rate limiter,
and the same exactly-once, in-order output as the local engine. Skipped without Ray."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from modelport.batch import arun, open_job
from modelport.batch.spec import JobSpec
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.fakes.server import Recorded, Reply

ray = pytest.importorskip("ray")

from modelport.batch import ray_engine  # noqa: E402  (only with Ray present)


class TimedUpstream(OpenAIUpstream):
    """Records when each chat request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self._times_lock = threading.Lock()

    def _answer(self, recorded: Recorded) -> Reply:
        if recorded.path.endswith("/chat/completions"):
            with self._times_lock:
                self.times.append(time.monotonic())
        return super()._answer(recorded)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture()
def upstream() -> Iterator[TimedUpstream]:
    with TimedUpstream() as fake:
        yield fake


def _spec(tmp_path: Path, name: str, n: int, **options: Any) -> JobSpec:
    source = tmp_path / "rows.jsonl"
    if not source.exists():
        source.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(n)))
    return JobSpec(job_id=name, model="openai/gpt-4o-mini", prompt="Say {text}", input=str(source), input_format="jsonl",
                   output=str(tmp_path / f"{name}.jsonl"), output_format="jsonl", **options)


def _options(upstream: OpenAIUpstream) -> dict[str, Any]:
    return {"config": {"providers": {"openai": {"base_url": upstream.base_url}}}, "api_keys": {"openai": "sk-test"}}


def _run_ray(tmp_path: Path, spec: JobSpec, upstream: OpenAIUpstream, **changes: Any) -> Any:
    journal, spec = open_job(tmp_path / f"{spec.job_id}.db", spec, **changes)
    try:
        return asyncio.run(ray_engine.run(journal, spec, client_options=_options(upstream), partitions=2))
    finally:
        journal.close()


def test_ray_workers_write_into_the_test_session_not_the_users_files() -> None:
    # Workers copy the environment once, when the module's Ray instance starts: the call
    # log they write to must already be the test session's (it was the user's logs.db).
    from tests.isolation import REAL_DIRS, SESSION_ROOT

    @ray.remote
    def log_path() -> str:
        from modelport.calllog import default_log_path

        return str(default_log_path())

    path = Path(ray.get(log_path.remote()))
    assert path.is_relative_to(SESSION_ROOT)
    assert not any(path.is_relative_to(real) for real in REAL_DIRS)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ray_output_is_the_local_engines(tmp_path: Path, upstream: TimedUpstream) -> None:
    from modelport.client import AsyncClient

    local = _spec(tmp_path, "local", 40)
    journal, local = open_job(tmp_path / "local.db", local)

    async def run_local() -> Any:
        client = AsyncClient(max_retries=0, **_options(upstream))
        try:
            return await arun(journal, local, client=client)
        finally:
            await client.aclose()

    assert asyncio.run(run_local()).status == "completed"
    journal.close()
    upstream.clear()

    stats = _run_ray(tmp_path, _spec(tmp_path, "onray", 40), upstream)
    assert stats.status == "completed" and (stats.done, stats.failed, stats.total) == (40, 0, 40)
    assert upstream.request_count == 40
    assert _lines(tmp_path / "onray.jsonl") == _lines(tmp_path / "local.jsonl")
    assert (tmp_path / "onray.part-0.db").exists() and (tmp_path / "onray.part-1.db").exists()


def test_partitions_share_one_rate_limit(tmp_path: Path, upstream: TimedUpstream) -> None:
    # 600 rpm = 10 requests/s with a one-second burst: 30 rows need about 2 s in all. Two
    # partitions with a limiter each would finish in about 1 s.
    stats = _run_ray(tmp_path, _spec(tmp_path, "paced", 30, rpm=600), upstream)
    assert stats.status == "completed" and stats.done == 30
    span = max(upstream.times) - min(upstream.times)
    assert span >= 1.6, f"30 requests in {span:.2f}s: the partitions did not share the limit"


def test_resume_after_the_budget_sends_no_row_twice(tmp_path: Path, upstream: TimedUpstream) -> None:
    spec = _spec(tmp_path, "budget", 20, max_cost=0.00003, concurrency=1, params={"max_tokens": 5})
    first = _run_ray(tmp_path, spec, upstream)
    assert first.status == "budget" and 0 < first.done < 20
    sent_first = upstream.request_count
    second = _run_ray(tmp_path, spec, upstream, max_cost=1.0)
    assert second.status == "completed" and second.done == 20
    assert upstream.request_count == 20 and sent_first == first.done
    out = _lines(tmp_path / "budget.jsonl")
    assert [r["index"] for r in out] == list(range(20))
    assert [r["answer"] for r in out] == [f"echo: Say row {i}" for i in range(20)]
