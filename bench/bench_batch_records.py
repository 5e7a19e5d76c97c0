"""Files/Batches API on the records layer (not a test: run by hand, numbers go in the report).

One batch of N rows (default 2,000) through ``FilesAPI`` against a zero-latency fake
upstream, its records and journal on
  a. SQLite (files.db and a journal file per batch, the default), and
  b. PostgreSQL (records, file contents and journal in the database; a throwaway server
     started like the tests' one, so the Debian ``postgresql`` package is needed).
Reported per engine: upload, create-to-completed wall time and rows/s, and the time a
cancel made on a second instance takes to stop the job running on the first.

    PYTHONPATH=. python bench/bench_batch_records.py [--rows 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

# Before modelport is imported: the rows' calls go to no call log, nothing of the user's is touched.
_HOME = Path(tempfile.mkdtemp(prefix="mp-bench-home-"))
os.environ.update({"MODELPORT_LOG": "0", "MODELPORT_CONFIG_DIR": str(_HOME / "config"), "MODELPORT_DATA_DIR": str(_HOME / "data"),
                   "MODELPORT_LOG_PATH": str(_HOME / "logs.db"), "MODELPORT_CACHE_PATH": str(_HOME / "cache.db")})

from modelport.batch.files_api import FilesAPI, Owner  # noqa: E402
from modelport.client import AsyncClient  # noqa: E402
from tests.fakes.openai_upstream import OpenAIUpstream  # noqa: E402
from tests.servers import PostgresServer  # noqa: E402


def _lines(n: int) -> bytes:
    return b"".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": "fake/gpt-fake", "messages": [{"role": "user", "content": f"n {i}"}]}}).encode() + b"\n"
                    for i in range(n))


async def _one(root: Path, records: str | None, rows: int, upstream: OpenAIUpstream) -> dict[str, Any]:
    config = {"providers": {"fake": {"base_url": upstream.base_url}}}
    a = FilesAPI(root / "a", AsyncClient(max_retries=0, config=config), records=records, concurrency=16)
    b = FilesAPI(root / ("a" if records is None else "b"), AsyncClient(max_retries=0, config=config), records=records, concurrency=16)
    await a.startup()
    await b.startup()
    me = Owner()
    try:
        started = time.perf_counter()
        uploaded = await a.upload_file("in.jsonl", _lines(rows), "batch", me)
        upload_s = time.perf_counter() - started
        started = time.perf_counter()
        batch = await a.create_batch({"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions"}, me)
        await a.wait(batch["id"])
        run_s = time.perf_counter() - started
        done = await b.get_batch(batch["id"], me)
        assert done["request_counts"]["completed"] == rows, done

        slow = await a.upload_file("slow.jsonl", _lines(rows), "batch", me)
        upstream.latency = 0.05
        batch = await a.create_batch({"input_file_id": slow["id"], "endpoint": "/v1/chat/completions"}, me)
        await asyncio.sleep(1.0)
        asked = time.perf_counter()
        await b.cancel_batch(batch["id"], me)
        await a.wait(batch["id"])
        cancel_s = time.perf_counter() - asked
        upstream.latency = 0.0
        return {"upload_s": round(upload_s, 3), "run_s": round(run_s, 3), "rows_per_s": round(rows / run_s),
                "cross_instance_cancel_s": round(cancel_s, 3)}
    finally:
        await a.shutdown()
        await b.shutdown()
        await a.client.aclose()
        await b.client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mp-bench-records-"))
    pg_root = Path(tempfile.mkdtemp(prefix="mp-bench-postgres-"))  # its own: PostgresServer hands it to the postgres user
    server = PostgresServer(pg_root)
    server.start()
    try:
        with OpenAIUpstream() as upstream:
            for name, records in (("sqlite", None), ("postgresql", server.new_database())):
                print(name, asyncio.run(_one(work / name, records, args.rows, upstream)), flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pg_root, ignore_errors=True)
        shutil.rmtree(_HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
