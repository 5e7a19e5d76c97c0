"""What per-key counters cost: reserve+settle per request in each store, and what Redis-backed
counters add to the gateway over in-process ones.

    python bench/bench_counters.py                 # starts its own redis-server
    python bench/bench_counters.py --redis redis://127.0.0.1:6379/0

1. Store cost: one booking (rpm, tpm and budget, the worst case) plus its settlement,
   awaited one after another (c=1), and 16 at a time (bookings/s), in memory, in a SQLite
   file and in Redis on loopback.
2. Gateway: non-streamed chat with a metered gateway key against a zero-latency fake
   upstream (bench_gateway's helpers), one gateway with ``memory:`` and one with
   ``redis://`` counters: added p50 over calling the upstream directly at c=1, and
   requests/s at c=16, medians of interleaved rounds. The issue's targets: added p50 under
   1.5 ms with Redis, and Redis throughput at least 0.7 of memory's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_gateway import free_port, load, start_gateway, start_upstream  # noqa: E402
from modelport.state.counter_stores import open_counters  # noqa: E402
from modelport.state.counters import Counters, KeyLimits  # noqa: E402

# Generous enough never to refuse: the cost measured is the booking's, not a refusal's.
LIMITS = KeyLimits(rpm=10**9, tpm=10**12, budget=1e9)


async def store_cost(counters: Counters, seconds: float) -> dict[str, float]:
    """µs per reserve+settle at c=1, and reserve+settle pairs per second at c=16."""
    for _ in range(50):  # connect, load the scripts, warm the file
        await counters.settle(await counters.reserve("warm", LIMITS, 100, 1e-6), 50, 5e-7)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        await counters.settle(await counters.reserve("bench", LIMITS, 100, 1e-6), 50, 5e-7)
        n += 1
    serial_us = (time.perf_counter() - started) / n * 1e6
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(i: int) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await counters.settle(await counters.reserve(f"bench{i % 4}", LIMITS, 100, 1e-6), 50, 5e-7)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(16)))
    return {"us_per_request_c1": round(serial_us, 1), "per_s_c16": round(done / (time.perf_counter() - started))}


def start_redis(workdir: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return f"redis://127.0.0.1:{port}/0", proc


def stop(proc: subprocess.Popen) -> None:
    # SIGINT lets the gateway drain; the fake upstream (a sleeping loop) just ends.
    proc.send_signal(signal.SIGINT if "modelport" in proc.args else signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="load per cell")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the gateway cells")
    parser.add_argument("--redis", help="a Redis to use (default: start redis-server on a free port)")
    args = parser.parse_args()
    results: dict[str, object] = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0]}
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            redis_url = args.redis
            if redis_url is None:
                redis_url, redis_proc = start_redis(workdir)
                procs.append(redis_proc)
            import redis

            redis.Redis.from_url(redis_url).flushdb()
            stores = {"memory": "memory:", "sqlite": f"sqlite:///{workdir / 'counters.db'}", "redis": redis_url}
            for name, url in stores.items():

                async def measure(url: str = url) -> dict[str, float]:
                    counters = open_counters(url)
                    try:
                        return await store_cost(counters, args.seconds)
                    finally:
                        await counters.close()

                cell = asyncio.run(measure())
                results[f"store {name}"] = cell
                print(f"store {name:7} reserve+settle {cell['us_per_request_c1']:8.1f} µs/request at c=1   "
                      f"{cell['per_s_c16']:8.0f} requests/s at c=16", flush=True)

            upstream_proc = start_upstream()
            procs.append(upstream_proc)
            upstream = f"http://127.0.0.1:{upstream_proc.upstream_port}"  # type: ignore[attr-defined]
            from modelport.server.auth import KeyStore

            key = KeyStore(workdir / "data" / "gateway.db").create("bench", rpm=LIMITS.rpm, tpm=LIMITS.tpm, budget=LIMITS.budget)
            prices = '[prices]\n"bench/gpt-fake" = { input = 0.15, output = 0.6 }\n'
            headers = {"authorization": f"Bearer {key}"}
            targets = {"direct": (f"{upstream}/v1/chat/completions", {})}
            for name, url in (("memory", "memory:"), ("redis", redis_url)):
                (workdir / name).mkdir()
                (workdir / name / "data").symlink_to(workdir / "data")  # the same key store
                proc, _ = start_gateway(free_port(), upstream, workdir / name, prices + f'[state]\ncounters = "{url}"\n')
                procs.append(proc)
                targets[name] = (f"http://127.0.0.1:{proc.args[5]}/v1/chat/completions", headers)
            # Short cells, interleaved round by round, medians reported: on a shared machine
            # the load drifts, and it then drifts for every target alike.
            cells: dict[tuple[str, int], list[dict[str, float]]] = {}
            for _ in range(args.rounds):
                for name, (url, with_headers) in targets.items():
                    for c in (1, 16):
                        cell = asyncio.run(load(url, c, False, args.seconds / args.rounds * 2, with_headers))
                        assert cell["errors"] == 0, f"{name}: {cell['errors']} requests failed"
                        cells.setdefault((name, c), []).append(cell)
            p50 = {name: statistics.median(cell["p50_ms"] for cell in cells[(name, 1)]) for name in targets}
            rps = {name: statistics.median(cell["rps"] for cell in cells[(name, 16)]) for name in targets}
            for name in targets:
                added = f"(adds {p50[name] - p50['direct']:.2f} ms)" if name != "direct" else ""
                print(f"{name:14} c=1 p50 {p50[name]:6.2f} ms {added:16} c=16 {rps[name]:6.0f} rps", flush=True)
                results[f"{name}_p50_ms_c1"] = round(p50[name], 3)
                results[f"{name}_rps_c16"] = round(rps[name])
            for name in ("memory", "redis"):
                results[f"gateway_{name}_added_p50_ms_c1"] = round(p50[name] - p50["direct"], 3)
            results["redis_over_memory_p50_ms_c1"] = round(p50["redis"] - p50["memory"], 3)
            results["redis_over_memory_rps_ratio_c16"] = round(rps["redis"] / rps["memory"], 3)
        finally:
            for proc in reversed(procs):
                stop(proc)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
