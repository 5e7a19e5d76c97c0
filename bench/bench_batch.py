"""Batch engine benchmarks (not tests: run by hand, numbers go in the report).

1. Throughput at a rate limit. A loopback fake upstream allows 3,000 requests per minute,
   enforced like a provider does: a token bucket refilled continuously (50/s) with one
   second of burst, 429 + retry-after-ms when empty, x-ratelimit-* headers on every answer.
   It answers in 50 ms. We send 5,000 requests through
   a. the modelport engine, told nothing about the limit (it learns it from the headers);
   b. a pause-on-429 runner in the style of the openai-cookbook parallel processor (capacity
      tracked per minute, starting full; after any 429 every request waits 15 s), stopped
      after --baseline-cap seconds and judged on what it answered by then.
   Reported: achieved throughput as a fraction of the limit, 429s received, rows answered
   more than once (must be 0), wall time.

2. Memory. ``modelport batch run`` over a JSONL file of N rows (default 1,000,000) against a
   zero-latency upstream in its own process; the peak RSS of the batch process is reported
   with RSS samples over time (flat means memory does not grow with the row count).

    python bench/bench_batch.py throughput [--requests 5000]
    python bench/bench_batch.py memory [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.server import FakeServer, Recorded, Reply  # noqa: E402

LIMIT_RPM = 3000
LATENCY = 0.05


class LimitedUpstream:
    """Chat completions behind a provider-style request limit; counts answers per row."""

    def __init__(self, rpm: int = LIMIT_RPM, latency: float = LATENCY, burst: float = 1.0) -> None:
        self.rate = rpm / 60
        self.capacity = self.rate * burst
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.rpm = rpm
        self.lock = threading.Lock()
        self.answered: collections.Counter[str] = collections.Counter()
        self.rejected = 0
        self.server = FakeServer(latency=latency, history=10)
        self.server.route("POST", "/v1/chat/completions", self.chat)

    def chat(self, request: Recorded) -> Reply:
        with self.lock:
            now = time.monotonic()
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.level < 1:
                self.rejected += 1
                wait_ms = int((1 - self.level) / self.rate * 1000) + 1
                return Reply.json({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": None,
                                             "code": "rate_limit_exceeded"}}, 429,
                                  {"retry-after-ms": str(wait_ms), **self._headers(0)})
            self.level -= 1
            remaining = int(self.level * 60)
            row = request.body["messages"][-1]["content"]
            self.answered[row] += 1
        body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
        return Reply.json(body, headers=self._headers(remaining))

    def _headers(self, remaining: int) -> dict[str, str]:
        return {"x-ratelimit-limit-requests": str(self.rpm), "x-ratelimit-remaining-requests": str(max(0, remaining)),
                "x-ratelimit-reset-requests": f"{int(1000 / self.rate)}ms"}

    @property
    def url(self) -> str:
        return self.server.url + "/v1"


def _report(name: str, n: int, wall: float, upstream: LimitedUpstream) -> dict[str, object]:
    duplicates = sum(1 for c in upstream.answered.values() if c > 1)
    result = {
        "runner": name, "requests": n, "answered": len(upstream.answered), "wall_s": round(wall, 2),
        "throughput_rps": round(n / wall, 2), "fraction_of_limit": round(n / wall / (LIMIT_RPM / 60), 3),
        "429s": upstream.rejected, "duplicates": duplicates,
    }
    print(json.dumps(result), flush=True)
    return result


def bench_modelport(n: int) -> dict[str, object]:
    import modelport
    from modelport.client import AsyncClient

    upstream = LimitedUpstream()
    upstream.server.start()
    try:
        client = AsyncClient(max_retries=0, config={"providers": {"fake": {"base_url": upstream.url}}})
        rows = [{"text": f"row {i}"} for i in range(n)]
        started = time.monotonic()
        out = modelport.batch(rows, model="fake/m", prompt="{text}", client=client, concurrency=32)
        wall = time.monotonic() - started
        assert sum(1 for r in out if r["error"] is None) == n
        return _report("modelport (limit learned from headers)", n, wall, upstream)
    finally:
        upstream.server.stop()


async def _pause_on_429(url: str, n: int, rpm: int, cap: float) -> None:
    """The comparison runner, written here in the cookbook's style: per-minute capacity that
    starts full and refills continuously, unbounded concurrency, and a 15 s pause for
    everyone after any rate-limit error."""
    import aiohttp

    pause_after_429 = 15.0
    capacity = float(rpm)
    last_update = time.monotonic()
    last_429 = -1e9
    queue: collections.deque[tuple[int, int]] = collections.deque((i, 0) for i in range(n))
    pending: set[asyncio.Task[None]] = set()
    stop_at = time.monotonic() + cap
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def call(i: int, attempt: int) -> None:
            nonlocal last_429
            body = {"model": "m", "messages": [{"role": "user", "content": f"row {i}"}]}
            async with session.post(url + "/chat/completions", json=body) as r:
                await r.read()
                if r.status == 429:
                    last_429 = time.monotonic()
                    queue.append((i, attempt + 1))

        while (queue or pending) and time.monotonic() < stop_at:
            now = time.monotonic()
            capacity = min(float(rpm), capacity + (now - last_update) * rpm / 60)
            last_update = now
            if queue and capacity >= 1 and now - last_429 >= pause_after_429:
                i, attempt = queue.popleft()
                capacity -= 1
                task = asyncio.create_task(call(i, attempt))
                pending.add(task)
                task.add_done_callback(pending.discard)
                continue
            await asyncio.sleep(0.001)
        for task in pending:
            task.cancel()


def bench_pause_on_429(n: int, cap: float) -> dict[str, object]:
    """Stopped after ``cap`` seconds: it is slow enough that finishing proves nothing more."""
    upstream = LimitedUpstream()
    upstream.server.start()
    try:
        started = time.monotonic()
        asyncio.run(_pause_on_429(upstream.url, n, LIMIT_RPM, cap))
        return _report("pause-on-429 (cookbook style)", len(upstream.answered), time.monotonic() - started, upstream)
    finally:
        upstream.server.stop()


_ZERO_LATENCY_SERVER = r"""
import sys
from aiohttp import web
BODY = (b'{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":'
        b'{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}')
async def chat(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def bench_memory(rows: int) -> dict[str, object]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="mp-bench-"))
    server = subprocess.Popen([sys.executable, "-c", _ZERO_LATENCY_SERVER, str(port)])
    try:
        source = tmp / "in.jsonl"
        with source.open("w") as f:
            for i in range(rows):
                f.write(f'{{"text": "row {i} of the memory benchmark"}}\n')
        config = tmp / "config.toml"
        config.write_text(f'[providers.fake]\nbase_url = "http://127.0.0.1:{port}/v1"\n')
        env = {**os.environ, "MODELPORT_CONFIG": str(config), "MODELPORT_DATA_DIR": str(tmp / "data")}
        time.sleep(1.0)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", "from modelport.cli import main; main()", "batch", "run", str(source),
                                 "-m", "fake/m", "--prompt", "{text}", "--output", str(tmp / "out.jsonl"), "--quiet", "--json",
                                 "--concurrency", "64"], env=env, stdout=subprocess.PIPE)
        samples = []
        while proc.poll() is None:
            rss = _rss_mb(proc.pid)
            if rss:
                samples.append((round(time.monotonic() - started, 1), rss))
            time.sleep(1.0)
        peak = _peak_mb(samples)
        summary = json.loads(proc.stdout.read() or b"{}")
        wall = time.monotonic() - started
        lines = sum(1 for _ in (tmp / "out.jsonl").open("rb"))
        step = max(1, len(samples) // 10)
        result = {"rows": rows, "output_lines": lines, "wall_s": round(wall, 1), "rows_per_s": round(rows / wall),
                  "peak_rss_mb": peak, "rss_samples_mb": samples[::step], "status": summary.get("status")}
        print(json.dumps(result), flush=True)
        return result
    finally:
        server.terminate()
        server.wait()


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _peak_mb(samples: list[tuple[float, float]]) -> float | None:
    return max((rss for _, rss in samples), default=None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["throughput", "memory", "all"])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-cap", type=float, default=120.0, help="seconds the pause-on-429 runner may take")
    args = parser.parse_args()
    if args.which in ("throughput", "all"):
        bench_modelport(args.requests)
        bench_pause_on_429(args.requests, args.baseline_cap)
    if args.which in ("memory", "all"):
        bench_memory(args.rows)


if __name__ == "__main__":
    main()
