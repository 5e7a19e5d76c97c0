"""The Files and Batches API across many gateway instances: records on the records layer
(SQLite or PostgreSQL), an existing files.db upgraded in place, a batch made on one instance
read and cancelled on another, leases taken over by exactly one instance, and a gateway
killed with -9 mid-batch whose batch another gateway finishes, every row exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.batch.files_api import FilesAPI, Owner
from modelport.server.batches_door import BatchesDoor
from modelport.client import AsyncClient
from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.servers import free_port


def _lines(n: int) -> bytes:
    return b"".join(
        json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "fake/gpt-fake", "messages": [{"role": "user", "content": f"number {i}"}]}}).encode() + b"\n"
        for i in range(n)
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def records(request: pytest.FixtureRequest) -> str | None:
    """Where the instances keep their records: one SQLite file in the shared batch dir, or PostgreSQL."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


# -- 1. an existing files.db is upgraded in place ------------------------------------------------

@pytest.mark.parametrize("with_owners", [False, True])
def test_a_files_db_from_before_versions_counts_as_the_version_it_matches(tmp_path: Path, with_owners: bool) -> None:
    root = tmp_path / "gw"
    (root / "files").mkdir(parents=True)
    owner_column = ", owner TEXT NOT NULL DEFAULT '-'" if with_owners else ""
    done = {"id": "batch_old", "object": "batch", "status": "completed", "created_at": 5, "request_counts": {"total": 1, "completed": 1, "failed": 0}}
    with sqlite3.connect(root / "files.db") as db:
        db.execute(f"CREATE TABLE files (id TEXT PRIMARY KEY, filename TEXT, bytes INTEGER, created_at INTEGER, purpose TEXT{owner_column})")
        db.execute(f"CREATE TABLE batches (id TEXT PRIMARY KEY, created_at INTEGER, object BLOB{owner_column})")
        # Inserted out of id order within one second: the old order (rowid) must survive.
        for file_id in ("file-b", "file-a"):
            db.execute("INSERT INTO files (id, filename, bytes, created_at, purpose) VALUES (?, 'x.jsonl', 3, 7, 'batch')", (file_id,))
        db.execute("INSERT INTO batches (id, created_at, object) VALUES (?, ?, ?)", ("batch_old", 5, json.dumps(done).encode()))
    for file_id in ("file-a", "file-b"):
        (root / "files" / file_id).write_bytes(b"{}\n")

    async def scenario() -> tuple[list[str], list[dict[str, Any]], dict[str, Any]]:
        api = FilesAPI(root)
        try:
            files = [f["id"] for f in (await api.list_files(order="asc"))["data"]]
            batches = (await api.list_batches())["data"]
            new = await api.upload_file("new.jsonl", b"{}\n", "batch")
            return files, batches, new
        finally:
            await api.shutdown()

    files, batches, new = asyncio.run(scenario())
    assert files == ["file-b", "file-a"]
    assert [b["id"] for b in batches] == ["batch_old"] and batches[0]["status"] == "completed"
    with sqlite3.connect(root / "files.db") as db:
        assert db.execute("SELECT version FROM modelport_schema WHERE component = 'files'").fetchone()[0] == 6  # step 6 keeps a closed batch's spend
        assert db.execute("SELECT status, lease_owner FROM batches").fetchall() == [("completed", None)]
        assert db.execute("SELECT owner FROM files WHERE id = ?", (new["id"],)).fetchone() == ("-",)


# -- 2. one batch, two instances ------------------------------------------------------------------

def test_a_batch_made_on_one_instance_is_listed_read_and_cancelled_on_another(tmp_path: Path, records: str | None) -> None:
    rows = 200

    async def scenario(upstream: OpenAIUpstream) -> None:
        config = {"providers": {"fake": {"base_url": upstream.base_url}}}
        a = FilesAPI(tmp_path / "gw", AsyncClient(max_retries=0, config=config), records=records, concurrency=2)
        # SQLite records are one file in a directory the instances share; PostgreSQL ones need no shared disk.
        b = FilesAPI(tmp_path / ("gw" if records is None else "gw-b"), AsyncClient(max_retries=0, config=config), records=records, concurrency=2)
        await a.startup()
        await b.startup()
        try:
            me = Owner("key-1")
            uploaded = await a.upload_file("in.jsonl", _lines(rows), "batch", me)
            batch = await a.create_batch({"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions"}, me)
            assert (await b.get_file(uploaded["id"], me))["bytes"] == len(_lines(rows))
            assert [x["id"] for x in (await b.list_batches(owner=me))["data"]] == [batch["id"]]
            assert (await b.list_batches(owner=Owner("key-2")))["data"] == []
            while upstream.request_count < 6:
                await asyncio.sleep(0.05)
            assert (await b.get_batch(batch["id"], me))["status"] == "in_progress"

            cancelling = await b.cancel_batch(batch["id"], me)
            asked = time.monotonic()
            assert cancelling["status"] == "cancelling"
            await asyncio.wait_for(a.wait(batch["id"]), timeout=15)
            # A sees B's cancel within a watch round (0.5 s) and stops after the rows in flight.
            stopped_after = time.monotonic() - asked
            done = await b.get_batch(batch["id"], me)
            assert done["status"] == "cancelled" and done["cancelled_at"] >= done["cancelling_at"]
            assert stopped_after < 5.0, stopped_after
            assert 0 < done["request_counts"]["completed"] < rows
            out = [json.loads(line)["custom_id"] for line in (await b.file_content(done["output_file_id"], me)).splitlines()]
            assert len(out) == len(set(out)) == done["request_counts"]["completed"]
        finally:
            await a.shutdown()
            await b.shutdown()

    with OpenAIUpstream(latency=0.05) as upstream:
        asyncio.run(scenario(upstream))


def test_an_expired_lease_goes_to_exactly_one_taker(tmp_path: Path, records: str | None) -> None:
    instances = [FilesAPI(tmp_path / "gw", records=records) for _ in range(3)]
    first = instances[0]

    def seed() -> None:
        for i in range(40):
            obj = {"id": f"batch_{i}", "object": "batch", "status": "in_progress", "created_at": 1}
            first.db.execute("INSERT INTO batches (id, created_at, object, owner, seq, status, lease_owner, lease_until)"
                             " VALUES (?, 1, ?, '-', ?, 'in_progress', 'dead-instance', ?)", (obj["id"], json.dumps(obj).encode(), i, time.time() - 1))
        first.db.execute("UPDATE batches SET status = 'completed' WHERE id = 'batch_0'")  # closed: nobody takes it
        first.db.execute("UPDATE batches SET lease_until = ? WHERE id = 'batch_1'", (time.time() + 60,))  # still held

    first._io.submit(seed).result()
    for api in instances:
        api._io.submit(lambda api=api: api.db).result()  # each opens (and migrates) its records first
    with ThreadPoolExecutor(3) as pool:
        taken = list(pool.map(lambda api: api._io.submit(api._take_over).result(), instances))
    ids = [batch_id for got in taken for batch_id, _ in got]
    assert sorted(ids) == sorted(f"batch_{i}" for i in range(2, 40))  # each once, by one instance
    owners = dict(first._io.submit(lambda: first.db.execute("SELECT id, lease_owner FROM batches").fetchall()).result())
    for api, got in zip(instances, taken):
        assert all(owners[batch_id] == api.instance for batch_id, _ in got)
    for api in instances:
        asyncio.run(api.shutdown())


def test_on_one_machine_the_lease_of_a_dead_process_runs_out_at_once(tmp_path: Path) -> None:
    import socket

    from modelport.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_lease_seconds"):
        FilesAPI(tmp_path / "gw", lease_seconds=1.0)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    api = FilesAPI(tmp_path / "gw")
    holders = {"batch_dead": f"{socket.gethostname()}:{gone.pid}:ab", "batch_live": f"{socket.gethostname()}:{os.getpid()}:cd",
               "batch_far": f"elsewhere:{gone.pid}:ef"}

    def seed() -> None:
        for batch_id, holder in holders.items():
            obj = {"id": batch_id, "object": "batch", "status": "in_progress", "created_at": 1}
            api.db.execute("INSERT INTO batches (id, created_at, object, owner, seq, status, lease_owner, lease_until)"
                           " VALUES (?, 1, ?, '-', 0, 'in_progress', ?, ?)", (batch_id, json.dumps(obj).encode(), holder, time.time() + 60))

    api._io.submit(seed).result()
    # A restarted gateway resumes the crashed one's batch now, not in a minute; a live holder's
    # batch, and one held on another machine, wait for their leases.
    assert api._io.submit(api._take_over).result() == [("batch_dead", False)]
    asyncio.run(api.shutdown())


# -- 3. kill -9 the gateway running a batch ---------------------------------------------------------

def test_a_batch_of_a_killed_gateway_is_finished_by_another_every_row_once(tmp_path: Path, records: str | None) -> None:
    """PostgreSQL: gateways on (as if) two machines, no shared disk, B takes over when A's
    lease runs out. SQLite: two processes of one machine sharing the batch dir (serve
    --workers), B takes over as soon as it sees A's process is gone."""
    rows, lease = 150, 2.0
    batch_dir = tmp_path / "batches"
    with OpenAIUpstream(latency=0.1) as upstream:
        config = tmp_path / "modelport.toml"
        state = "" if records is None else f'[state]\nrecords = "{records}"\n\n'
        config.write_text(f'[server]\nbatch_dir = "{batch_dir}"\nbatch_lease_seconds = {lease}\n\n'
                          f'{state}[providers.fake]\nbase_url = "{upstream.base_url}"\n')
        port = free_port()
        with (tmp_path / "a.log").open("wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "modelport", "serve", "--config", str(config), "--port", str(port)],
                                       env={**os.environ, "MODELPORT_LOG": "0"}, stdout=log, stderr=subprocess.STDOUT)
        try:
            a = f"http://127.0.0.1:{port}/v1"
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, (tmp_path / "a.log").read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "gateway A did not start"
                time.sleep(0.1)
            # PostgreSQL: no shared disk, B has a batch dir of its own (input and journal are in the database).
            b_dir = batch_dir if records is None else tmp_path / "b-batches"
            settings = Settings(records=records, batch_dir=str(b_dir), batch_lease_seconds=lease, log_calls=False)
            with GatewayThread(settings, config={"providers": {"fake": {"base_url": upstream.base_url}}}) as gateway_b:
                uploaded = httpx.post(f"{a}/files", files={"file": ("in.jsonl", _lines(rows))}, data={"purpose": "batch"}).json()
                batch = httpx.post(f"{a}/batches", json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                                                         "completion_window": "24h"}).json()
                while httpx.get(f"{a}/batches/{batch['id']}").json()["request_counts"]["completed"] < 20:
                    assert time.monotonic() < deadline + 30, "the batch did not start on A"
                    time.sleep(0.05)
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
                killed_at = time.monotonic()
                b = gateway_b.url + "/v1"
                assert httpx.get(f"{b}/batches/{batch['id']}").json()["status"] == "in_progress"  # A died mid-batch
                while (done := httpx.get(f"{b}/batches/{batch['id']}").json())["status"] not in ("completed", "failed", "cancelled"):
                    assert time.monotonic() - killed_at < 40, done
                    time.sleep(0.1)
                assert done["status"] == "completed", done.get("errors")
                assert gateway_b.app is not None and batch["id"] in gateway_b.app.find_door(BatchesDoor).files_api()._jobs  # B ran it to its end
                if records is not None:
                    assert time.monotonic() - killed_at >= lease / 2  # not before A's lease ran out
                    # Nothing of the batch's state was on disk: uploads and journal are in PostgreSQL.
                    assert not list(batch_dir.glob("files/*")) and not list(batch_dir.glob("jobs/*.db"))
                    # Closed, the batch leaves neither journal rows nor scratch files behind on B, once
                    # its job has ended: "completed" shows before the job clears them.
                    job = gateway_b.app.find_door(BatchesDoor).files_api()._jobs[batch["id"]]
                    while not job.future.done():
                        assert time.monotonic() - killed_at < 40, "the job did not end"
                        time.sleep(0.05)
                    assert not list(b_dir.glob("jobs/*"))
                    from modelport.state.records import open_records

                    assert open_records(records, tmp_path / "unused.db").execute("SELECT count(*) FROM journal_rows").fetchone()[0] == 0
                assert done["request_counts"] == {"total": rows, "completed": rows, "failed": 0}
                out = [json.loads(line) for line in httpx.get(f"{b}/files/{done['output_file_id']}/content").content.splitlines()]
                assert sorted(o["custom_id"] for o in out) == sorted(f"req-{i}" for i in range(rows))
                assert all(o["response"]["status_code"] == 200 for o in out)
                # Gateway B answered the rest: more requests reached the upstream than A alone sent.
                assert upstream.request_count >= rows
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


# -- 4. the journal in the records answers as the journal in a file -----------------------------------

def test_a_journal_in_the_records_answers_as_one_in_a_file(tmp_path: Path, records: str | None) -> None:
    from modelport.batch.journal import Journal
    from modelport.state.records import open_records

    db = open_records(records, tmp_path / "records.db")
    journals = [Journal(tmp_path / "job.db"), Journal(db, "batch_x"), Journal(db, "batch_y")]
    answers = []
    for journal in journals:
        journal.set("spec", {"job_id": "x"})
        assert journal.ingest(((f"k{i}", {"n": i}) for i in range(7)), start=0) == 7
        journal.mark_inflight(0)
        journal.mark_inflight(2)
        journal.commit()
        assert journal.finish(0, result={"ok": 0}, input_tokens=3, output_tokens=2, cost=0.5)
        assert not journal.finish(0, result={"again": 1})  # a final row is never overwritten
        journal.finish(1, error={"kind": "boom"}, commit=False)
        journal.finish(3, result={"ok": 3}, cached=True)
        released = journal.release_inflight()
        journal.set_written(2, 40)
        answers.append((released, journal.open_rows(), journal.final_rows(0), journal.totals(), journal.written, journal.ingest_done))
        journal.close()
    assert answers[0] == answers[1] == answers[2]  # and the two jobs in one database keep to their own rows
    db.close()


# -- 5. `modelport state migrate`: a SQLite store copied into PostgreSQL ------------------------------

def test_a_sqlite_store_copied_into_postgresql_keeps_files_batches_and_open_jobs(tmp_path: Path, postgres_url: str) -> None:
    from modelport.batch.files_copy import copy_files_and_batches
    from modelport.state.records import open_records

    rows = 60

    async def scenario(upstream: OpenAIUpstream) -> None:
        config = {"providers": {"fake": {"base_url": upstream.base_url}}}
        me = Owner("key-1")
        old = FilesAPI(tmp_path / "old", AsyncClient(max_retries=0, config=config), concurrency=2)
        small = await old.upload_file("small.jsonl", _lines(2), "batch", me)
        finished = await old.create_batch({"input_file_id": small["id"], "endpoint": "/v1/chat/completions"}, me)
        await old.wait(finished["id"])
        big = await old.upload_file("big.jsonl", _lines(rows), "batch", me)
        open_batch = await old.create_batch({"input_file_id": big["id"], "endpoint": "/v1/chat/completions"}, me)
        while upstream.request_count < 12:
            await asyncio.sleep(0.02)
        await old.shutdown()  # the batch stays open, its journal part-way

        target = open_records(postgres_url, tmp_path / "unused.db")
        first = await asyncio.to_thread(copy_files_and_batches, tmp_path / "old", target)
        again = await asyncio.to_thread(copy_files_and_batches, tmp_path / "old", target)
        assert first == {"files": 3, "batches": 2, "journals": 1}  # two uploads and one output file
        assert again == {"files": 0, "batches": 0, "journals": 0}

        new = FilesAPI(tmp_path / "new", AsyncClient(max_retries=0, config=config), records=postgres_url, concurrency=2)
        await new.startup()  # takes the open batch over: no lease holds it
        try:
            assert (await new.file_content(big["id"], me)) == _lines(rows)
            done_small = await new.get_batch(finished["id"], me)
            assert done_small["status"] == "completed"
            assert len((await new.file_content(done_small["output_file_id"], me)).splitlines()) == 2
            await asyncio.wait_for(new.wait(open_batch["id"]), timeout=30)
            done = await new.get_batch(open_batch["id"], me)
            assert done["status"] == "completed" and done["request_counts"]["completed"] == rows
            out = [json.loads(line)["custom_id"] for line in (await new.file_content(done["output_file_id"], me)).splitlines()]
            assert sorted(out) == sorted(f"req-{i}" for i in range(rows))
        finally:
            await new.shutdown()

    with OpenAIUpstream(latency=0.05) as upstream:
        asyncio.run(scenario(upstream))
    # Only the rows the old instance had not answered were sent again (those in flight at most twice).
    assert upstream.request_count < 2 + rows + 4


# -- 6. PostgreSQL going away mid-batch ------------------------------------------------------------

def test_postgresql_going_away_mid_batch_is_a_503_and_the_batch_carries_on_when_it_is_back(tmp_path: Path, postgres_server: Any,
                                                                                         postgres_url: str) -> None:
    rows = 120
    settings = Settings(records=postgres_url, batch_dir=str(tmp_path / "batches"), batch_lease_seconds=3.0, log_calls=False)
    with OpenAIUpstream(latency=0.05) as upstream:
        try:
            with GatewayThread(settings, config={"providers": {"fake": {"base_url": upstream.base_url}}}) as gateway:
                api = gateway.url + "/v1"
                uploaded = httpx.post(f"{api}/files", files={"file": ("in.jsonl", _lines(rows))}, data={"purpose": "batch"}).json()
                batch = httpx.post(f"{api}/batches", json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                                                           "completion_window": "24h"}).json()
                deadline = time.monotonic() + 30
                while httpx.get(f"{api}/batches/{batch['id']}").json()["request_counts"]["completed"] < 10:
                    assert time.monotonic() < deadline, "the batch did not start"
                    time.sleep(0.05)
                postgres_server.stop()
                refused = httpx.get(f"{api}/batches/{batch['id']}", timeout=30)
                assert refused.status_code == 503
                assert "records database" in refused.json()["error"]["message"]
                time.sleep(1.0)
                postgres_server.start()
                deadline = time.monotonic() + 40
                while True:
                    answer = httpx.get(f"{api}/batches/{batch['id']}", timeout=30)
                    if answer.status_code == 200 and answer.json()["status"] in ("completed", "failed", "cancelled"):
                        break
                    assert time.monotonic() < deadline, answer.text
                    time.sleep(0.2)
                done = answer.json()
                assert done["status"] == "completed", done.get("errors")
                out = [json.loads(line)["custom_id"] for line in httpx.get(f"{api}/files/{done['output_file_id']}/content").content.splitlines()]
                assert sorted(out) == sorted(f"req-{i}" for i in range(rows))
        finally:
            if not postgres_server.running:
                postgres_server.start()
