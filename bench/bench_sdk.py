"""SDK overhead: modelport vs the official openai SDK vs raw HTTP, same loopback upstream.

    python bench/bench_sdk.py [--calls 2000] [--concurrency 50]

The fake upstream runs in its own process (so it doesn't share our GIL) and answers at
once. Also measures `import` time of modelport, openai and (when installed) litellm as the
median of 5 fresh interpreters, minus a bare interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hello there"}]}


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    code = (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from tests.fakes.openai_upstream import OpenAIUpstream\n"
        "up = OpenAIUpstream().start(); print(up.url, flush=True)\n"
        "while True: time.sleep(3600)\n" % str(ROOT)
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def rate(n: int, seconds: float) -> float:
    return n / seconds


def sync_modelport(url: str, n: int) -> float:
    from modelport import Client

    client = Client(base_urls={"openai": url + "/v1"}, api_keys={"openai": "sk-bench"}, max_retries=0)
    client.chat("openai/gpt-fake", "warm up")
    t = time.perf_counter()
    for _ in range(n):
        client.chat("openai/gpt-fake", "hello there")
    return rate(n, time.perf_counter() - t)


def sync_openai(url: str, n: int) -> float:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0)
    client.chat.completions.create(**BODY)
    t = time.perf_counter()
    for _ in range(n):
        client.chat.completions.create(**BODY)
    return rate(n, time.perf_counter() - t)


def sync_httpx(url: str, n: int) -> float:
    import httpx

    with httpx.Client() as client:
        client.post(url + "/v1/chat/completions", json=BODY).json()
        t = time.perf_counter()
        for _ in range(n):
            client.post(url + "/v1/chat/completions", json=BODY).json()
        return rate(n, time.perf_counter() - t)


async def _gather(n: int, concurrency: int, call) -> float:  # type: ignore[no-untyped-def]
    await call()
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            await call()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rate(n, time.perf_counter() - t)


async def async_modelport(url: str, n: int, concurrency: int) -> float:
    from modelport import AsyncClient

    client = AsyncClient(base_urls={"openai": url + "/v1"}, api_keys={"openai": "sk-bench"}, max_retries=0)
    try:
        return await _gather(n, concurrency, lambda: client.chat("openai/gpt-fake", "hello there"))
    finally:
        await client.aclose()


async def async_openai(url: str, n: int, concurrency: int) -> float:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0)
    try:
        return await _gather(n, concurrency, lambda: client.chat.completions.create(**BODY))
    finally:
        await client.close()


async def async_aiohttp(url: str, n: int, concurrency: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async def call() -> None:
            async with session.post(url + "/v1/chat/completions", json=BODY) as r:
                await r.json()

        return await _gather(n, concurrency, call)


def import_ms(module: str, python: str = sys.executable) -> float | None:
    def once(stmt: str) -> float:
        out = subprocess.run([python, "-c", f"import time; t=time.perf_counter(); {stmt}; print(time.perf_counter()-t)"],
                             capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    try:
        once(f"import {module}")
    except subprocess.CalledProcessError:
        return None
    return statistics.median(once(f"import {module}") for _ in range(5)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--litellm-python", default=sys.executable,
                        help="interpreter that has litellm (it is no dependency of ours): "
                        "python -m venv /tmp/bench-litellm && /tmp/bench-litellm/bin/pip install litellm")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console()
    proc, url = start_upstream()
    try:
        results: dict[str, list[float]] = {}
        with console.status("measuring...") as status:
            for r in range(args.rounds):
                for name, fn in (("sync modelport", sync_modelport), ("sync openai", sync_openai), ("sync httpx (raw)", sync_httpx)):
                    status.update(f"round {r + 1}/{args.rounds}: {name}")
                    results.setdefault(name, []).append(fn(url, args.calls))
                for name, afn in (("async modelport", async_modelport), ("async openai", async_openai), ("async aiohttp (raw)", async_aiohttp)):
                    status.update(f"round {r + 1}/{args.rounds}: {name} c={args.concurrency}")
                    results.setdefault(name, []).append(asyncio.run(afn(url, args.calls * 2, args.concurrency)))
    finally:
        proc.kill()
    table = Table(title=f"calls/s against a loopback upstream ({args.calls} sync calls, {args.calls * 2} async at c={args.concurrency}, median of {args.rounds})")
    table.add_column("client")
    table.add_column("calls/s", justify="right")
    table.add_column("vs openai", justify="right")
    med = {k: statistics.median(v) for k, v in results.items()}
    for name, value in med.items():
        base = med["sync openai"] if name.startswith("sync") else med["async openai"]
        table.add_row(name, f"{value:,.0f}", f"{value / base:.2f}x")
    console.print(table)

    bare = import_ms("sys") or 0.0
    imports = Table(title="import time, ms over a bare interpreter (median of 5)")
    imports.add_column("module")
    imports.add_column("ms", justify="right")
    for module in ("modelport", "openai", "anthropic", "litellm"):
        python = args.litellm_python if module == "litellm" else sys.executable
        ms = import_ms(module, python)
        base = bare if python == sys.executable else (import_ms("sys", python) or 0.0)
        imports.add_row(module, "not installed" if ms is None else f"{ms - base:.1f}")
    console.print(imports)


if __name__ == "__main__":
    main()
