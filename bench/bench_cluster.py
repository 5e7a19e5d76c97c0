"""What scale-out costs per request: throughput and latency of the gateway with its state in
the process, in Redis + PostgreSQL, over N instances, and under ``--workers N``; and how many
Redis script calls and PostgreSQL statements each request costs, counted by the servers
themselves (Redis ``INFO commandstats``, PostgreSQL ``pg_stat_database``).

    python bench/bench_cluster.py                       # every layout, 3 s per cell
    python bench/bench_cluster.py --layouts one,redis --seconds 5 --instances 2

Every call is a non-streamed chat completion under a gateway key with an rpm and a budget
(so the counters are asked twice per call) against the zero-latency fake upstream in its
own process; the load comes from this process (aiohttp, keep-alive), spread round-robin
over the instances. Redis and PostgreSQL are the test suite's throwaway servers (PostgreSQL
with fsync off). The numbers feed the sizing in docs/deploy.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_gateway import load, start_upstream  # noqa: E402

import tests.isolation  # noqa: E402  (a private HOME and data dirs for everything started here)
from tests.cluster import Cluster  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402

LAYOUTS = ("one", "redis", "instances", "workers")
BODY = {"model": "echo", "messages": [{"role": "user", "content": "one two three four five six seven eight"}], "max_tokens": 16}


class _Upstream:
    """What Cluster needs of an upstream: its base URL."""

    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}/v1"


def _redis_usec(redis: RedisServer) -> tuple[int, float]:
    import redis as client

    r = client.Redis.from_url(redis.url)
    try:
        stat = r.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
        return stat["calls"], stat["usec"]
    finally:
        r.close()


def _pg_stats(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("SELECT pg_stat_clear_snapshot()")
        row = db.execute("SELECT xact_commit, tup_inserted, tup_updated, tup_fetched FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return dict(zip(("transactions", "inserted", "updated", "fetched"), row))


async def _spread_load(urls: list[str], concurrency: int, seconds: float, key: str) -> dict[str, float]:
    """``concurrency`` connections spread over the instances; the cells' rps add up."""
    shares = [concurrency // len(urls) + (1 if i < concurrency % len(urls) else 0) for i in range(len(urls))]
    cells = await asyncio.gather(*(load(url + "/v1/chat/completions", share, False, seconds, {"authorization": f"Bearer {key}"}, BODY)
                                   for url, share in zip(urls, shares) if share))
    return {"rps": sum(c["rps"] for c in cells), "p50_ms": max(c["p50_ms"] for c in cells),
            "errors": sum(c["errors"] for c in cells), "n": sum(c["n"] for c in cells)}


def run_layout(name: str, args: argparse.Namespace, upstream: _Upstream, redis: RedisServer | None,
               postgres: PostgresServer | None, root: Path) -> dict[str, Any]:
    options: dict[str, Any] = {"count": 1}
    records = None
    if name in ("redis", "instances"):
        records = postgres.new_database()
        options.update(counters=redis.url, records=records)
        redis.flush()
    if name == "instances":
        options["count"] = args.instances
    if name == "workers":
        options["workers"] = args.workers
    result: dict[str, Any] = {"layout": name, **{k: v for k, v in options.items() if k in ("count", "workers")}}
    with Cluster(root / name, upstream, **options) as cluster:  # type: ignore[arg-type]
        key = cluster.create_key("bench", rpm=10**9, budget=10**9)
        for concurrency in args.concurrency:
            before_redis = _redis_usec(redis) if "counters" in options else None
            before_pg = _pg_stats(records) if records else None
            cell = asyncio.run(_spread_load(cluster.urls, concurrency, args.seconds, key))
            if before_redis is not None:
                calls, usec = _redis_usec(redis)
                cell["redis_calls_per_request"] = (calls - before_redis[0]) / max(cell["n"], 1)
                cell["redis_usec_per_call"] = (usec - before_redis[1]) / max(calls - before_redis[0], 1)
            if before_pg is not None:
                after = _pg_stats(records)
                cell.update({f"pg_{k}_per_request": (after[k] - before_pg[k]) / max(cell["n"], 1) for k in after})
            result[f"c{concurrency}"] = cell
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}")
    parser.add_argument("--seconds", type=float, default=3.0, help="load per cell")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated concurrencies")
    parser.add_argument("--instances", type=int, default=2, help="gateways in the 'instances' layout")
    parser.add_argument("--workers", type=int, default=2, help="workers in the 'workers' layout")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    layouts = [name for name in args.layouts.split(",") if name]
    root = Path(tempfile.mkdtemp(prefix="mp-bench-cluster-"))
    upstream_proc = start_upstream()
    redis = postgres = None
    results = []
    try:
        if any(name in ("redis", "instances") for name in layouts):
            (root / "redis").mkdir()
            redis = RedisServer(root / "redis")
            redis.start()
            postgres = PostgresServer(Path(tempfile.mkdtemp(prefix="mp-bench-pg-")))
            postgres.start()
        upstream = _Upstream(upstream_proc.upstream_port)  # type: ignore[attr-defined]
        for name in layouts:
            try:
                result = run_layout(name, args, upstream, redis, postgres, root)
            except Exception as exc:  # a layout this build cannot run yet: say why, go on
                result = {"layout": name, "skipped": f"{type(exc).__name__}: {str(exc)[:300]}"}
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        for server in (redis, postgres):
            if server is not None:
                server.stop()
        if postgres is not None:
            shutil.rmtree(postgres.root, ignore_errors=True)
        upstream_proc.terminate()
        upstream_proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tests.isolation.SESSION_ROOT, ignore_errors=True)
    baseline = next((r for r in results if r["layout"] == "one" and "c1" in r), None)
    if baseline is not None:
        top = f"c{args.concurrency[-1]}"
        for r in results:
            if "c1" in r and r is not baseline:
                errors = sum(r[f"c{c}"]["errors"] for c in args.concurrency)
                if errors:
                    print(f"{r['layout']}: {errors} calls failed, so its numbers mean nothing (see its JSON line)")
                    continue
                print(f"{r['layout']}: +{r['c1']['p50_ms'] - baseline['c1']['p50_ms']:.2f} ms p50 at c=1, "
                      f"{r[top]['rps'] / baseline[top]['rps']:.2f}x the requests/s of one in-process gateway at {top}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
