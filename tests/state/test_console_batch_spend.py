"""The console's per-batch spend with PostgreSQL records, where a batch's journal is rows in
the database rather than a file: it is the sum of the journal rows' costs, while the batch
runs and once it is closed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import httpx
import psycopg
import pytest

from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream

UPSTREAM_KEY = "sk-upstream-console-spend-123456"
ROWS = 24


@pytest.fixture()
def upstream() -> Iterator[OpenAIUpstream]:
    # Slow enough that the batch is seen running for a while.
    with OpenAIUpstream(api_key=UPSTREAM_KEY, latency=0.3) as fake:
        yield fake


def _journal_cost(postgres_url: str, batch_id: str) -> float:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        if db.execute("SELECT to_regclass('journal_rows')").fetchone()[0] is None:
            return 0.0  # the job has not begun: its journal's tables are made as it does
        return float(db.execute("SELECT coalesce(sum(cost), 0) FROM journal_rows WHERE job = %s", (batch_id,)).fetchone()[0])


def test_the_console_shows_each_batch_s_spend_from_postgresql_records(tmp_path: Path, upstream: OpenAIUpstream, postgres_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from modelport.batch.file_contents import RecordsContents

    # A closed batch's journal rows are deleted; kept here, so the test can add up their costs.
    monkeypatch.setattr(RecordsContents, "forget_job", lambda self, job_id, scratch: None)
    config = {"providers": {"openai": {"base_url": upstream.base_url}},
              "prices": {"openai/gpt-fake": {"input": 3.0, "output": 7.0}}}
    settings = Settings(records=postgres_url, keys_path=str(tmp_path / "keys.db"), batch_dir=str(tmp_path / "batches"))
    content = "city\n" + "\n".join(f"town{i}" for i in range(ROWS)) + "\n"
    job = {"filename": "towns.csv", "content": content, "prompt": "Describe {city} in a few words", "model": "openai/gpt-fake"}
    with GatewayThread(settings, config=config, api_keys={"openai": UPSTREAM_KEY}) as gw, \
            httpx.Client(base_url=gw.url, timeout=60, headers={"x-modelport-console": "1"}) as c:
        started = c.post("/ui/api/batches", json=job)
        assert started.status_code == 200, started.text
        batch_id = started.json()["id"]
        seen_running = False
        deadline = time.monotonic() + 60
        while True:
            before = _journal_cost(postgres_url, batch_id)
            [row] = [b for b in c.get("/ui/api/batches").json()["batches"] if b["id"] == batch_id]
            after = _journal_cost(postgres_url, batch_id)
            if row["status"] == "completed" or time.monotonic() > deadline:
                break
            # Rows finish between the reads: the console's sum lies between the two.
            assert before - 1e-12 <= row["cost"] <= after + 1e-12, (before, row, after)
            seen_running = seen_running or 0 < row["cost"]
            time.sleep(0.05)
        assert row["status"] == "completed" and row["done"] == ROWS
        assert row["cost"] > 0 and row["unknown_cost_rows"] == 0
        assert row["cost"] == pytest.approx(_journal_cost(postgres_url, batch_id), rel=1e-12)
        assert seen_running, "the batch was never seen running with some rows answered"
