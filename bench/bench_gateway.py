"""What the gateway costs: added latency and throughput over calling the upstream directly,
against LiteLLM's proxy routed to the same upstream, plus startup time and memory.

    python bench/bench_gateway.py                      # gateway vs direct, and the Responses door vs the chat door
    python bench/bench_gateway.py --litellm VENV/bin/litellm

LiteLLM is never a modelport dependency; give it its own virtualenv:

    python -m venv /tmp/bench-litellm && /tmp/bench-litellm/bin/pip install 'litellm[proxy]'

Every server runs in its own process on loopback (the fake upstream, the gateway, LiteLLM
with one worker), and the load comes from this process over keep-alive aiohttp
connections, so no two of them share a GIL. The fake upstream answers at once, so the
numbers are the servers' own overhead. Runs are bounded by ``--seconds`` per cell.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
# LiteLLM refuses to start without a strong master key; the other servers ignore it.
BENCH_KEY = "sk-bench-" + "5f3c9a1e7b2d4c6f8a0e1d3b5c7a9f2e"
BODY = {"model": "gpt-fake", "messages": [{"role": "user", "content": "one two three four five six seven eight"}], "max_tokens": 16}
# The same question on the Responses door (stored, as by default), and the end of its stream.
RESPONSES_BODY = {"model": "gpt-fake", "input": "one two three four five six seven eight", "max_output_tokens": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    """Seconds until ``url`` answers 200 (or raises when the process dies or time runs out)."""
    import urllib.request

    started = time.perf_counter()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{url} not ready after {timeout} s")
        time.sleep(0.01)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_upstream() -> subprocess.Popen:
    """The fake OpenAI upstream in its own process; its port is read from its first line."""
    code = textwrap.dedent("""
        import time
        from tests.fakes.openai_upstream import OpenAIUpstream
        fake = OpenAIUpstream().start()
        print(fake.port, flush=True)
        while True:
            time.sleep(3600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    proc.upstream_port = int(proc.stdout.readline())  # type: ignore[attr-defined]
    return proc


def start_gateway(port: int, upstream: str, workdir: Path, extra_config: str = "") -> tuple[subprocess.Popen, float]:
    """The gateway in its own process, routing gpt-fake to the upstream; ``extra_config`` is
    appended to its config file (other benches add tables such as [state])."""
    config = workdir / "modelport.toml"
    config.write_text(f'[aliases]\n"gpt-fake" = "bench/gpt-fake"\n[providers.bench]\nbase_url = "{upstream}/v1"\n{extra_config}')
    env = {**os.environ, "MODELPORT_DATA_DIR": str(workdir / "data"), "MODELPORT_CONFIG_DIR": str(workdir)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "modelport", "serve", "--port", str(port), "--config", str(config), "--no-log"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/health", proc)
    return proc, time.perf_counter() - started


def start_litellm(binary: str, port: int, upstream: str, workdir: Path) -> subprocess.Popen:
    config = workdir / "litellm.yaml"
    config.write_text(textwrap.dedent(f"""
        model_list:
          - model_name: gpt-fake
            litellm_params:
              model: openai/gpt-fake
              api_base: {upstream}/v1
              api_key: sk-bench
        litellm_settings:
          drop_params: true
        general_settings:
          master_key: {BENCH_KEY}
    """))
    proc = subprocess.Popen([binary, "--config", str(config), "--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "LITELLM_LOG": "ERROR"})
    wait_ready(f"http://127.0.0.1:{port}/health/liveliness", proc, timeout=180)
    return proc


async def load(url: str, concurrency: int, stream: bool, seconds: float, headers: dict[str, str],
               request: dict[str, object] = BODY, end: bytes = b"[DONE]") -> dict[str, float]:
    body = json.dumps({**request, "stream": stream}).encode()
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"content-type": "application/json", **headers}) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with session.post(url, data=body) as r:
                    payload = await r.read()
                    if r.status != 200 or (stream and end not in payload):
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        for _ in range(min(concurrency, 4)):  # warm connections and code paths
            async with session.post(url, data=body) as r:
                await r.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "rps": len(latencies) / elapsed,
        "errors": errors,
        "n": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="load per cell")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--litellm", help="path of the litellm CLI in its own virtualenv")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    procs: list[subprocess.Popen] = []
    results: dict[str, object] = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            upstream_proc = start_upstream()
            procs.append(upstream_proc)
            upstream = f"http://127.0.0.1:{upstream_proc.upstream_port}"  # type: ignore[attr-defined]
            gateway, startup = start_gateway(free_port(), upstream, workdir)
            procs.append(gateway)
            results["gateway_startup_s"] = round(startup, 3)
            results["gateway_rss_mb_idle"] = round(rss_mb(gateway.pid), 1)
            targets = {"direct": f"{upstream}/v1/chat/completions", "modelport": f"http://127.0.0.1:{gateway.args[5]}/v1/chat/completions"}
            if args.litellm:
                litellm_port = free_port()
                procs.append(start_litellm(args.litellm, litellm_port, upstream, workdir))
                targets["litellm"] = f"http://127.0.0.1:{litellm_port}/v1/chat/completions"
            table = {}
            for stream in (False, True):
                for concurrency in levels:
                    for name, url in targets.items():
                        cell = asyncio.run(load(url, concurrency, stream, args.seconds, {"authorization": f"Bearer {BENCH_KEY}"}))
                        table[f"{name} {'stream' if stream else 'plain'} c={concurrency}"] = cell
                        print(f"{name:10} {'stream' if stream else 'plain ':6} c={concurrency:<3} "
                              f"p50 {cell['p50_ms']:7.2f} ms  p99 {cell['p99_ms']:7.2f} ms  {cell['rps']:8.0f} rps  errors {cell['errors']}", flush=True)
            # The Responses door against the chat door on the same gateway: added latency at
            # c=1 and streamed throughput at c=16.
            responses_url = targets["modelport"].replace("/chat/completions", "/responses")
            for stream, concurrency in ((False, 1), (True, 16)):
                kind = "stream" if stream else "plain"
                cell = asyncio.run(load(responses_url, concurrency, stream, args.seconds, {}, RESPONSES_BODY, b"response.completed"))
                table[f"responses {kind} c={concurrency}"] = cell
                chat = table.get(f"modelport {kind} c={concurrency}")
                versus = f"  (chat door: p50 {chat['p50_ms']:.2f} ms, {chat['rps']:.0f} rps)" if chat else ""
                print(f"{'responses':10} {kind:6} c={concurrency:<3} p50 {cell['p50_ms']:7.2f} ms  p99 {cell['p99_ms']:7.2f} ms  "
                      f"{cell['rps']:8.0f} rps  errors {cell['errors']}{versus}", flush=True)
            results["cells"] = table
            results["gateway_rss_mb_after_load"] = round(rss_mb(gateway.pid), 1)
            for stream in ("plain", "stream"):
                added = table[f"modelport {stream} c=1"]["p50_ms"] - table[f"direct {stream} c=1"]["p50_ms"]
                results[f"added_p50_ms_c1_{stream}"] = round(added, 3)
                results[f"max_rps_modelport_{stream}"] = round(max(table[f"modelport {stream} c={c}"]["rps"] for c in levels))
                if args.litellm:
                    results[f"max_rps_litellm_{stream}"] = round(max(table[f"litellm {stream} c={c}"]["rps"] for c in levels))
        finally:
            for proc in reversed(procs):
                proc.send_signal(signal.SIGINT)
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    summary = {k: v for k, v in results.items() if k != "cells"}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
