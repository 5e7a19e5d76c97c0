"""What ``serve --workers 2`` buys over ``--workers 1``: non-streamed chat requests/s against
a zero-latency upstream, and the latency the gateway adds at concurrency 1.

    python bench/bench_workers.py                  # 3 rounds of 8 s per cell
    python bench/bench_workers.py --rounds 5 --seconds 10 --connections 32

How it measures, so the load generator and the upstream take as little CPU as they can from
the gateway on a small machine:

* Load: ``wrk`` (Debian package ``wrk``; one thread, a Lua script that POSTs one chat
  body) over keep-alive connections, pinned with ``taskset`` to one CPU (``--load-cpu``).
* Upstream: a raw asyncio (uvloop) protocol in its own process on the same pinned CPU,
  answering every request with one canned OpenAI chat completion: no HTTP framework, no
  JSON parsing.
* Gateway: ``modelport serve --workers N --no-log`` unpinned, one process per worker.
* Cells alternate (1, 2, 1, 2, ...) so that load from other processes on the machine hits
  both alike; each cell's figure is the median of its rounds.
* Added p50: wrk's p50 through the gateway at one connection minus its p50 against the
  upstream directly.

``--model local/smollm2`` measures the embedded model instead (greedy, ``--max-tokens``):
one engine with every core's thread (``--workers 1``) against an engine per worker with
its share of the cores (``--workers 2``; see ``workers.engine_threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BODY = {"model": "gpt-fake", "messages": [{"role": "user", "content": "one two three four five six seven eight"}], "max_tokens": 16}

# The upstream: run as `python bench_workers.py --upstream`; prints its port.
UPSTREAM = r'''
import asyncio, json, socket, sys, time
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
body = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1767225600, "model": "gpt-fake",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "nine ten eleven"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}}).encode()
reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

class Canned(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            self.transport.write(reply)

async def main():
    server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
'''

LUA = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["content-type"] = "application/json"
"""


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu else argv


def start_upstream(cpu: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(pinned(cpu, [sys.executable, "-c", UPSTREAM]), stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def start_gateway(workers: int, upstream_port: int, workdir: Path, extra_env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "modelport.toml"
    config.write_text(f'[aliases]\n"gpt-fake" = "bench/gpt-fake"\n[providers.bench]\nbase_url = "http://127.0.0.1:{upstream_port}/v1"\n')
    from modelport.local_model import data_dir as models_dir

    # The model weights stay where this machine keeps them; everything else is the bench's own.
    env = {**os.environ, "MODELPORT_MODELS_DIR": str(models_dir()), "MODELPORT_DATA_DIR": str(workdir / "data"), "MODELPORT_CONFIG_DIR": str(workdir),
           "MODELPORT_LOG_PATH": str(workdir / "logs.db"), "PYTHONPATH": str(ROOT), **extra_env}
    proc = subprocess.Popen([sys.executable, "-m", "modelport", "serve", "--port", "0", "--workers", str(workers), "--config", str(config),
                             "--no-log"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    match = re.search(r"127\.0\.0\.1:(\d+)", proc.stdout.readline())
    if match is None:
        proc.kill()
        raise RuntimeError("the gateway did not start")
    return proc, int(match.group(1))


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise RuntimeError(f"wrk latency {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(port: int, path: str, connections: int, seconds: float, cpu: str, script: Path) -> dict[str, float]:
    out = subprocess.run(pinned(cpu, ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "60s", "--latency", "-s", str(script),
                                      f"http://127.0.0.1:{port}{path}"]), capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "errors": (float(errors.group(1)) if errors else 0.0) + (float(timeouts.group(1)) if timeouts else 0.0),
    }


def digits(rps: float) -> int:
    return 0 if rps >= 100 else 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for the throughput cells")
    parser.add_argument("--load-cpu", default="1" if len(os.sched_getaffinity(0)) > 1 else "",
                        help="CPU list (taskset -c) for wrk and the upstream; empty: unpinned")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--model", default="gpt-fake", help="e.g. local/smollm2 for the embedded engine")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install -y wrk")
    counts = [int(n) for n in args.workers.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    script = workdir / "chat.lua"
    body = {**BODY, "model": args.model, "max_tokens": args.max_tokens}
    if args.model != BODY["model"]:
        body["temperature"] = 0  # the same answer, so the same work, every time
    script.write_text(LUA.format(body=json.dumps(json.dumps(body))))
    upstream, upstream_port = start_upstream(args.load_cpu)
    results: dict[str, list[dict[str, float]]] = {}
    try:
        direct = [wrk(upstream_port, "/v1/chat/completions", 1, args.seconds / 2, args.load_cpu, script) for _ in range(args.rounds)]
        results["direct c=1"] = direct
        for _ in range(args.rounds):
            for n in counts:
                # One engine gets every core; several get their share each (workers.engine_threads).
                # MODELPORT_THREADS set for the bench: every engine gets that many.
                one_engine = n == 1 and args.model != BODY["model"] and "MODELPORT_THREADS" not in os.environ
                threads = {"MODELPORT_THREADS": str(len(os.sched_getaffinity(0)))} if one_engine else {}
                gateway, port = start_gateway(n, upstream_port, workdir / f"w{n}", threads)
                try:
                    wrk(port, "/v1/chat/completions", args.connections, 2, args.load_cpu, script)  # warm up (loads a model)
                    results.setdefault(f"workers={n} c={args.connections}", []).append(
                        wrk(port, "/v1/chat/completions", args.connections, args.seconds, args.load_cpu, script))
                    results.setdefault(f"workers={n} c=1", []).append(
                        wrk(port, "/v1/chat/completions", 1, args.seconds / 2, args.load_cpu, script))
                finally:
                    stop(gateway)
    finally:
        stop(upstream)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"load: wrk -t1 + canned upstream pinned to CPU {args.load_cpu or '(unpinned)'}; gateway unpinned; "
          f"{args.rounds} rounds, median; machine: {os.cpu_count()} CPUs")
    print(f"{'cell':<24}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>9}   rounds rps")
    median: dict[str, dict[str, float]] = {}
    for cell, runs in results.items():
        median[cell] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = median[cell]
        print(f"{cell:<24}{m['rps']:>10.{digits(m['rps'])}f}{m['p50_ms']:>10.3f}{m['p99_ms']:>10.3f}{m['errors']:>9.0f}   "
              + " ".join(f"{r['rps']:.{digits(r['rps'])}f}" for r in runs))
    base = median["direct c=1"]["p50_ms"]
    for n in counts:
        print(f"workers={n}: added p50 at c=1 = {median[f'workers={n} c=1']['p50_ms'] - base:.3f} ms")
    if len(counts) == 2 and median[f"workers={counts[0]} c={args.connections}"]["rps"]:
        a, b = (median[f"workers={n} c={args.connections}"]["rps"] for n in counts)
        print(f"workers={counts[1]} / workers={counts[0]} rps: {b / a:.2f}x  (target >= 1.4x)")


if __name__ == "__main__":
    main()
