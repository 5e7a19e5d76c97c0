"""Per-operation cost of the record stores on SQLite and on PostgreSQL (loopback).

    PYTHONPATH=. python bench/bench_records.py [--keys 100] [--n 300]

Starts a throwaway PostgreSQL (tests/servers.py, the Debian package) and prints, for each
engine, the median and p95 of: the gateway's once-a-second key reload, saving one key's
usage, a stored response written (group commit awaited) and read back, and a response
cache get and put.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from modelport.cache import ResponseCache
from modelport.server.auth import KeyStore
from modelport.server.responses_store import ResponseStore, Stored
from modelport.types import ChatRequest, ChatResponse, Message


def timed(fn: Callable[[], object], n: int) -> str:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return f"p50 {statistics.median(samples):8.0f} us   p95 {samples[int(len(samples) * 0.95) - 1]:8.0f} us"


def run(label: str, url: str | None, root: Path, keys: int, n: int) -> None:
    store = KeyStore(root / "gateway.db", url=url)
    ids = [store.create(f"k{i}").split("_")[1] for i in range(keys)]
    print(f"{label}")
    print(f"  key reload ({keys} keys)      {timed(store.records, n)}")
    print(f"  usage of one key saved      {timed(lambda: store.add_usage({ids[0]: [1, 10, 5, 0.001, time.time()]}), n)}")
    store.close()

    async def responses() -> None:
        saved = ResponseStore(root / "responses.db", url=url)
        count = iter(range(10**9))
        loop = asyncio.get_running_loop()

        def save() -> None:
            i = next(count)
            future = saved.save("owner", Stored({"id": f"resp_{i}", "output": [{"id": f"msg_{i}", "type": "message"}]}, []))
            future.result()

        print(f"  stored response written     {await loop.run_in_executor(None, timed, save, n)}")
        print(f"  stored response read        {await loop.run_in_executor(None, timed, lambda: saved._get('owner', 'resp_1'), n)}")
        await saved.aclose()

    asyncio.run(responses())
    cache = ResponseCache(root / "cache.db", url=url)
    request = ChatRequest("openai/gpt-4o-mini", [Message.user("hi")])
    answer = ChatResponse("r", "gpt-4o-mini", Message.assistant("hello " * 50))
    print(f"  cache put                   {timed(lambda: cache.put(request, answer), n)}")
    print(f"  cache get (hit)             {timed(lambda: cache.get(request), n)}")
    cache.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    from tests.servers import PostgresServer

    with tempfile.TemporaryDirectory() as sqlite_root, tempfile.TemporaryDirectory(prefix="mp-postgres-") as pg_root:
        run("SQLite (WAL, synchronous=NORMAL)", None, Path(sqlite_root), args.keys, args.n)
        server = PostgresServer(Path(pg_root))
        server.start()
        try:
            run("PostgreSQL (loopback, psycopg pool)", server.new_database(), Path(sqlite_root) / "unused", args.keys, args.n)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
