"""Faults across instances (issue 12): Redis, then PostgreSQL, stops under load, and a gateway
dies with kill -9 in the middle of a batch.

* While the counters' Redis is away, no request of a limited key passes unchecked (no 2xx)
  and none gets a 500: each gets a 503 in its caller's dialect (Anthropic's is 529, its
  "overloaded"); within 5 s of Redis's return every instance admits again.
* While PostgreSQL is away, what needs it (a stored Responses API answer) is refused with a
  503, never a 500 and never a 2xx that stored nothing; chat calls, which need only the
  counters, are still checked; within 5 s of its return, stored answers work again.
* A batch whose gateway is killed is taken over by another once its lease runs out, and its
  output holds every custom_id exactly once.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable

import openai
import pytest

from tests.cluster import UNAVAILABLE, Call, Cluster, ClusterUpstream, Outcome, SteadyLoad, Tally, chat_call
from tests.waiting import await_for

DIALECTS = ("openai", "anthropic", "gemini")
# How long each dependency stays away: PostgreSQL's longer than the records' wait for a
# connection (5 s), so that calls waiting on it end in their 503 while it is still away.
REDIS_OUTAGE = 2.0
POSTGRESQL_OUTAGE = 7.0
# Until every instance has served under the load, before the outage (1 s was enough when idle).
STARTUP_BOUND = 30.0
RECOVERY_BOUND = 5.0  # the bound, from the dependency's return to each instance's first success
# A batch's lease: short, so a takeover comes within seconds of the kill.
LEASE_SECONDS = 2.0


def _running(server: Any) -> Any:
    if not server.running:
        server.start()
    return server


@pytest.fixture(scope="module")
def cluster(redis_server: Any, postgres_server: Any, tmp_path_factory: pytest.TempPathFactory):
    _running(redis_server).flush()
    records = _running(postgres_server).new_database()
    with ClusterUpstream() as upstream, Cluster(tmp_path_factory.mktemp("cluster"), upstream, count=4, counters=redis_server.url,
                                                records=records) as running:
        yield running
    _running(redis_server)
    _running(postgres_server)


def _responses_call(url: str, key: str, i: int) -> Call:
    """A Responses API call that stores its answer (the default): it needs the records."""
    return Call("openai", url, "/v1/responses", {"authorization": f"Bearer {key}"},
                {"model": "echo", "input": f"remember {i}", "max_output_tokens": 8})


async def _outage(cluster: Cluster, server: Any, seconds: float, make: Callable[[int], Call],
                  needs_it: Callable[[Outcome], bool]) -> tuple[list[Outcome], float, float, dict[str, float]]:
    """Steady load; the server stops for ``seconds`` and comes back. Returns every
    outcome, when the outage began (the server had exited) and ended (its restart began),
    and per instance the delay from the server's return (listening again) to that
    instance's first success of a call that needs the server."""
    steady = SteadyLoad(make, concurrency=12)
    running = asyncio.ensure_future(steady.run())
    try:
        # Every instance serves before the outage: awaited (a loaded machine starts slowly).
        await await_for(lambda: {o.call.url for o in steady.tally.outcomes if o.ok and needs_it(o)} == set(cluster.urls),
                        STARTUP_BOUND, lambda: f"before the outage, not every instance served: {Tally(list(steady.tally.outcomes)).summary()}")
        await asyncio.to_thread(server.stop)
        down = time.monotonic()
        await asyncio.sleep(seconds)
        # The outage ends when the restart begins: the server may answer before start() returns.
        back = time.monotonic()
        await asyncio.to_thread(server.start)
        up = time.monotonic()
        while time.monotonic() - up < RECOVERY_BOUND + 5:
            if len(_first_success_after(steady.tally.outcomes, up, needs_it)) == len(cluster.urls):
                break
            await asyncio.sleep(0.1)
    finally:
        steady.stop()
        await running
    outcomes = steady.tally.outcomes
    return outcomes, down, back, _first_success_after(outcomes, up, needs_it)


def _first_success_after(outcomes: list[Outcome], up: float, needs_it: Callable[[Outcome], bool]) -> dict[str, float]:
    first: dict[str, float] = {}
    for o in sorted(outcomes, key=lambda o: o.ended):
        if o.ok and o.started >= up and needs_it(o):
            first.setdefault(o.call.url, o.ended - up)
    return first


def _check_outage(cluster: Cluster, outcomes: list[Outcome], down: float, back: float, recovered: dict[str, float],
                  needs_it: Callable[[Outcome], bool]) -> None:
    wrong = [(o.call.dialect, o.call.path, o.status, o.error or o.body) for o in outcomes
             if o.status == 0 or (o.status >= 500 and o.status not in UNAVAILABLE[o.call.dialect])]
    assert not wrong, f"answers that are neither a success nor a refusal: {wrong[:5]}"
    during = [o for o in outcomes if o.started > down and o.ended < back and needs_it(o)]
    assert len(during) >= 8, f"only {len(during)} calls ran during the outage"
    passed = [o for o in during if o.ok]
    assert not passed, f"{len(passed)} of {len(during)} calls passed while the dependency was down: {[(o.call.dialect, o.call.url, round(o.started - down, 3), round(o.ended - o.started, 3)) for o in passed[:5]]}"
    refused = [o for o in during if o.status not in UNAVAILABLE[o.call.dialect] or o.kind is None]
    assert not refused, f"refusals that are not a 503 in the caller's dialect: {[(o.call.dialect, o.status, o.body) for o in refused[:5]]}"
    assert set(recovered) == set(cluster.urls) and max(recovered.values()) <= RECOVERY_BOUND, (
        f"seconds from the return to each instance's first success: {recovered}")


def test_redis_away_under_load_fails_closed_and_recovers(cluster: Cluster, redis_server: Any) -> None:
    key = cluster.create_key("limited", rpm=100_000)  # limited (so checked), never by this load

    def make(i: int) -> Call:
        return chat_call(DIALECTS[i % 3], cluster.urls[i % len(cluster.urls)], key, "echo", f"load {i}", 8)

    outcomes, down, back, recovered = asyncio.run(_outage(cluster, redis_server, REDIS_OUTAGE, make, lambda o: True))
    _check_outage(cluster, outcomes, down, back, recovered, lambda o: True)


def test_postgresql_away_under_load_fails_closed_and_recovers(cluster: Cluster, postgres_server: Any) -> None:
    key = cluster.create_key("recorder", rpm=100_000)

    def make(i: int) -> Call:
        url = cluster.urls[i // 2 % len(cluster.urls)]
        # Every other call stores a response (needs PostgreSQL); the rest are chat calls (counters only).
        return _responses_call(url, key, i) if i % 2 else chat_call(DIALECTS[i // 8 % 3], url, key, "echo", f"load {i}", 8)

    def stores(o: Outcome) -> bool:
        return o.call.path == "/v1/responses"

    outcomes, down, back, recovered = asyncio.run(_outage(cluster, postgres_server, POSTGRESQL_OUTAGE, make, stores))
    _check_outage(cluster, outcomes, down, back, recovered, stores)


# -- kill -9 during a batch -----------------------------------------------------------------------


def _batch_lines(rows: int) -> bytes:
    return b"".join(json.dumps({"custom_id": f"row-{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": "echo", "messages": [{"role": "user", "content": f"row {i}"}], "max_tokens": 8}}).encode() + b"\n"
                    for i in range(rows))


def test_a_batch_of_a_killed_instance_is_finished_by_another_every_row_once(
        redis_server: Any, postgres_server: Any, tmp_path: Path) -> None:
    rows = 150
    _running(redis_server).flush()
    server = {"batch_dir": str(tmp_path / "shared-batches"), "batch_lease_seconds": LEASE_SECONDS}
    with ClusterUpstream(latency=0.1) as upstream, Cluster(tmp_path / "cluster", upstream, count=4, counters=redis_server.url,
                                                             records=_running(postgres_server).new_database(), server=server) as cluster:
        key = cluster.create_key("batcher")  # no limits: batches are not metered against them yet
        runner, watcher, taker, reader = (openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30) for url in cluster.urls)
        uploaded = runner.files.create(file=("rows.jsonl", _batch_lines(rows)), purpose="batch")
        batch = runner.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        deadline = time.monotonic() + 60
        while (watcher.batches.retrieve(batch.id).request_counts.completed or 0) < 20:
            assert time.monotonic() < deadline, "the batch did not start"
            time.sleep(0.05)
        cluster.instances[0].kill()
        killed = time.monotonic()
        assert taker.batches.retrieve(batch.id).status == "in_progress"  # it died mid-batch
        while (done := taker.batches.retrieve(batch.id)).status not in ("completed", "failed", "cancelled", "expired"):
            assert time.monotonic() - killed < LEASE_SECONDS + 40, done
            time.sleep(0.1)
        assert done.status == "completed", done
        assert time.monotonic() - killed >= LEASE_SECONDS / 2  # not before the dead one's lease ran out
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (rows, rows, 0)
        assert batch.id in [b.id for b in reader.batches.list()]
        out = [json.loads(line) for line in reader.files.content(done.output_file_id).content.splitlines()]
        ids = sorted(o["custom_id"] for o in out)
        assert ids == sorted(f"row-{i}" for i in range(rows)), f"{len(ids)} lines, {len(set(ids))} distinct custom_ids"
        assert all(o["response"]["status_code"] == 200 for o in out)
