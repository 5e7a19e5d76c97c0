"""OpenAI's Files and Batch APIs (``/v1/files``, ``/v1/batches``), served locally by the batch engine.

``FilesAPI`` holds the handlers as plain async methods: parsed arguments in, OpenAI-shaped
dicts (or bytes) out, modelport errors raised for 4xx. The gateway mounts them; so does
``asgi_app`` below, a raw ASGI app for ``/v1/files`` and ``/v1/batches`` that a gateway can
delegate those paths to (and that tests run as is).

A batch is a batch-engine job over the uploaded file (OpenAI batch format in, OpenAI batch
format out, keyed by ``custom_id``), run on a thread and event loop of its own (its journal
writes never wait on, or hold up, the server's loop) through any backend the client routes
to, the embedded model included; the model calls themselves run on the server's loop. Jobs
keep their journals under ``root``; ``startup()`` resumes the ones a stopped server left
running, so a restart loses nothing and answers no row twice. Cancelling is a message to the
job: the batch is "cancelling" at once and "cancelled" when the job has stopped.

Many instances (gateway processes, on one machine or many) can share one store: the records
live wherever ``records`` names (a SQLite file by default, PostgreSQL for many machines; see
modelport.state). The contents (uploads, outputs, journals) live under ``root`` with SQLite
records (the processes of one machine share it) and in the database with PostgreSQL ones,
so that instances on many machines share no disk (see file_contents). The instance running a batch holds a lease on its row, renewed
every ``lease_seconds / 3``; every instance takes over, at start and then periodically, the
open batches whose lease has run out (one atomic UPDATE: exactly one taker) and resumes them
from their journal, so a dead instance's batches are finished by another, every row once.
A cancel is written to the row, so any instance can make it; the runner sees it within
``WATCH_SECONDS``.

Files and batches belong to the ``Owner`` that made them (a gateway key, or the anonymous
caller of an open server); others are told they do not exist, and admin keys see all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..errors import BadRequestError, ConfigError, ModelportError, NotFoundError, StateUnavailableError
from ..jsonio import JSONDecodeError, dumps, loads
from ..state.records import RecordsDB, Step, open_store
from ..state.runner import StoreRunner
from .file_contents import CHUNKS_TABLE, Contents, contents_for

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_ENDPOINTS = ("/v1/chat/completions",)
MAX_BATCH_LINES = 50_000
# Batches that run at once, each on a thread of its own; later ones wait for a free thread.
MAX_RUNNING_BATCHES = 4
_OPEN = ("validating", "in_progress", "finalizing", "cancelling")
# Who owns what a caller without a gateway key makes (an open loopback server), and the
# files and batches stored before owners were recorded.
ANONYMOUS = "-"

# How long a batch's runner may go without renewing its lease before another instance takes
# the batch over (``[server] batch_lease_seconds``); it renews every third of that.
LEASE_SECONDS = 15.0
# How often an instance looks for cancels of the batches it runs, written by other instances.
WATCH_SECONDS = 0.5
_OPEN_SQL = "status IN (" + ", ".join(f"'{status}'" for status in _OPEN) + ")"


def _fill_status_and_order(db: RecordsDB) -> None:
    """Rows from before step 3 get their status column (read off the object) and an order
    (SQLite's rowid, which PostgreSQL lacks: ``seq`` replaces it)."""
    tiebreak = "rowid" if db.engine == "sqlite" else "id"
    for n, (file_id, created) in enumerate(db.execute(f"SELECT id, created_at FROM files ORDER BY created_at, {tiebreak}").fetchall()):
        db.execute("UPDATE files SET seq = ? WHERE id = ?", (created * 10**9 + n, file_id))
    rows = db.execute(f"SELECT id, created_at, object FROM batches ORDER BY created_at, {tiebreak}").fetchall()
    for n, (batch_id, created, obj) in enumerate(rows):
        db.execute("UPDATE batches SET seq = ?, status = ? WHERE id = ?", (created * 10**9 + n, loads(obj)["status"], batch_id))


# The schema, versioned (modelport.state.records.migrate): every step it has ever needed.
_STEPS: tuple[Step, ...] = (
    "CREATE TABLE files (id TEXT PRIMARY KEY, filename TEXT, bytes INTEGER, created_at INTEGER, purpose TEXT);"
    "CREATE TABLE batches (id TEXT PRIMARY KEY, created_at INTEGER, object BLOB)",
    # Owners: the rows from before go to ANONYMOUS.
    f"ALTER TABLE files ADD COLUMN owner TEXT NOT NULL DEFAULT '{ANONYMOUS}';"
    f"ALTER TABLE batches ADD COLUMN owner TEXT NOT NULL DEFAULT '{ANONYMOUS}'",
    # Many instances: an order without rowid, and the status and lease of each batch as columns.
    "ALTER TABLE files ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE batches ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE batches ADD COLUMN status TEXT NOT NULL DEFAULT 'validating';"
    "ALTER TABLE batches ADD COLUMN lease_owner TEXT;"
    "ALTER TABLE batches ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;"
    "CREATE INDEX batches_lease ON batches (lease_owner);"
    "CREATE INDEX batches_open ON batches (status, lease_until)",
    _fill_status_and_order,
    # File contents in the records (used when those are PostgreSQL: see file_contents).
    CHUNKS_TABLE,
    # What a closed batch cost, kept with it: its journal may go once it is closed (file_contents).
    "ALTER TABLE batches ADD COLUMN cost REAL;"
    "ALTER TABLE batches ADD COLUMN unknown_cost_rows INTEGER",
)


def _legacy_version(db: RecordsDB) -> int:
    """The step a files.db made before versions were recorded matches: 1 without owners, 2 with."""
    if db.engine != "sqlite" or db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'files'").fetchone() is None:
        return 0
    return 2 if "owner" in {row[1] for row in db.execute("PRAGMA table_info(files)").fetchall()} else 1


_FILE_COLUMNS = "id, filename, bytes, created_at, purpose"
_VISIBLE = "(owner = ? OR ?)"

log = logging.getLogger("modelport.batch")


@dataclass(frozen=True, slots=True)
class Owner:
    """Who asks. Files and batches belong to the key that made them; another key is told
    they do not exist (404, never 403), and an admin key sees everything."""

    id: str = ANONYMOUS
    admin: bool = False

    def args(self) -> tuple[str, bool]:
        """The parameters of ``_VISIBLE``."""
        return self.id, self.admin


@dataclass(frozen=True, slots=True)
class Spend:
    """What a batch has cost so far: the sum of its answered rows' costs, and how many
    answered rows had no known price (``cost`` is then a lower bound)."""

    cost: float = 0.0
    unknown_cost_rows: int = 0


class _Store:
    """The records and the files' bytes, on one worker thread that owns the records connection
    (``files.db`` unless ``records`` names a database): files, and the batches table."""

    def __init__(self, root: str | Path | None = None, client: Any = None, *, concurrency: int = 8, records: str | None = None,
                 lease_seconds: float = LEASE_SECONDS, owned_client: Callable[[str], Any] | None = None) -> None:
        if root is None:
            from ..config import data_dir

            root = data_dir() / "gateway"
        self.root = Path(root)
        self.client = client
        # The client a batch's rows run through, for the key that made the batch (the
        # gateway's: its call pipeline logs and bills each row to that key); None: ``client``.
        self.owned_client = owned_client
        self.concurrency = concurrency
        if not lease_seconds >= 3 * WATCH_SECONDS:
            raise ConfigError(f"batch_lease_seconds = {lease_seconds!r} is too short to renew a lease in time",
                              hint=f"set [server] batch_lease_seconds to {3 * WATCH_SECONDS:g} or more (default {LEASE_SECONDS:g})")
        self.records = records
        self.lease_seconds = lease_seconds
        # Names this instance in the leases it holds: unique across machines and restarts.
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        # The worker thread, owner of the records connection. A PostgreSQL pool is the
        # process's, shared by every store: only a SQLite file is closed with the API.
        self._io: StoreRunner[RecordsDB] = StoreRunner("files", self._open, _close_sqlite)
        self._slots = threading.BoundedSemaphore(MAX_RUNNING_BATCHES)
        self._contents: Contents | None = None
        self._jobs: dict[str, _Job] = {}
        self._watcher: asyncio.Task[None] | None = None

    # -- the worker thread ----------------------------------------------------------------

    @property
    def db(self) -> RecordsDB:
        """The records, migrated to this version's schema; only the worker thread may use them."""
        return self._io.conn

    def _open(self) -> RecordsDB:
        from ..config import private_dir

        private_dir(self.root / "files")
        private_dir(self.root / "jobs")
        db = open_store(self.records, self.root / "files.db", "files", _STEPS, legacy=_legacy_version)
        self._contents = contents_for(db, self.root)
        return db

    @property
    def contents(self) -> Contents:
        """Where the files' bytes and the batches' journals are (known once the records are open)."""
        if self._contents is None:
            self.db  # noqa: B018 - opening the records chooses the contents
        assert self._contents is not None
        return self._contents

    def _client(self) -> Any:
        if self.client is None:
            from . import make_client
            from .spec import JobSpec

            self.client = make_client(JobSpec(job_id="gateway"))
        return self.client

    # -- files ---------------------------------------------------------------------------

    async def upload_file(self, filename: str, content: bytes, purpose: str, owner: Owner = Owner()) -> dict[str, Any]:
        if purpose not in FILE_PURPOSES:
            raise BadRequestError(f"purpose must be one of {', '.join(FILE_PURPOSES)}", param="purpose")
        return await self._io.run(self._store_file, filename, content, purpose, owner.id)

    def _store_file(self, filename: str, content: bytes, purpose: str, owner: str) -> dict[str, Any]:
        file_id = "file-" + secrets.token_hex(12)
        created = int(time.time())
        with self.db.transaction():
            self.contents.write(file_id, content)
            self.db.execute("INSERT INTO files (id, filename, bytes, created_at, purpose, owner, seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (file_id, filename, len(content), created, purpose, owner, time.time_ns()))
        return _file_object(file_id, filename, len(content), created, purpose)

    async def list_files(self, purpose: str | None = None, limit: int = 10000, order: str = "desc", after: str | None = None,
                         owner: Owner = Owner()) -> dict[str, Any]:
        rows = await self._io.run(self._file_rows, owner)
        if order == "desc":
            rows.reverse()
        if purpose:
            rows = [r for r in rows if r[4] == purpose]
        if after:
            ids = [r[0] for r in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        page = [_file_object(*r) for r in rows[:limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(rows) > limit}

    def _file_rows(self, owner: Owner) -> list[tuple[Any, ...]]:
        return self.db.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE {_VISIBLE} ORDER BY created_at, seq", owner.args()).fetchall()

    def _file_row(self, file_id: str, owner: Owner) -> tuple[Any, ...]:
        row = self.db.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ? AND {_VISIBLE}", (file_id, *owner.args())).fetchone()
        if row is None:
            raise NotFoundError(f"No such File object: {file_id}", param="file_id", code="not_found")
        return row

    async def get_file(self, file_id: str, owner: Owner = Owner()) -> dict[str, Any]:
        return _file_object(*await self._io.run(self._file_row, file_id, owner))

    async def file_content(self, file_id: str, owner: Owner = Owner()) -> bytes:
        def read() -> bytes:
            self._file_row(file_id, owner)
            return self.contents.read(file_id)

        return await self._io.run(read)

    async def delete_file(self, file_id: str, owner: Owner = Owner()) -> dict[str, Any]:
        def delete() -> None:
            self._file_row(file_id, owner)
            with self.db.transaction():
                self.db.execute("DELETE FROM files WHERE id = ?", (file_id,))
                self.contents.delete(file_id)

        await self._io.run(delete)
        return {"id": file_id, "object": "file", "deleted": True}

    async def file_models(self, file_id: str, owner: Owner = Owner()) -> set[str]:
        """The models a batch input file names (nothing for a file this owner cannot see:
        creating the batch then answers its 404)."""

        def models() -> set[str]:
            try:
                self._file_row(file_id, owner)
            except NotFoundError:
                return set()
            names: set[str] = set()
            for line in self.contents.read(file_id).split(b"\n"):
                try:
                    names.add(str(loads(line)["body"]["model"]))
                except (JSONDecodeError, ValueError, KeyError, TypeError):
                    continue
            return names

        return await self._io.run(models)

    # -- the batches table (worker thread) ------------------------------------------------

    def _change(self, batch_id: str, change: Callable[[dict[str, Any], str | None, float], bool], *,
                visible_to: Owner | None = None) -> tuple[dict[str, Any], str]:
        """Read, change and write the batch's object as one step: ``change`` edits it in place
        (given the row's lease owner and expiry) and says whether to save it. Without
        ``visible_to``, only the instance holding the lease may change it (else ``_LeaseLost``)."""
        with self.db.transaction():
            # A write first: it locks the row (PostgreSQL) or the database (SQLite) until the
            # commit, so no other instance writes the object between this read and this write.
            self.db.execute("UPDATE batches SET lease_until = lease_until WHERE id = ?", (batch_id,))
            obj, owner_id, lease_owner, lease_until = self._load_row(batch_id)
            if visible_to is not None:
                _check_visible(batch_id, owner_id, visible_to)
            elif lease_owner != self.instance:
                raise _LeaseLost(batch_id)
            if change(obj, lease_owner, lease_until):
                self.db.execute("UPDATE batches SET object = ?, status = ? WHERE id = ?", (dumps(obj), obj["status"], batch_id))
        return obj, owner_id

    def _load_row(self, batch_id: str) -> tuple[dict[str, Any], str, str | None, float]:
        row = self.db.execute("SELECT object, owner, lease_owner, lease_until FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"No batch found with id '{batch_id}'.", param="batch_id", code="not_found")
        return loads(row[0]), row[1], row[2], row[3]

    def _load_visible(self, batch_id: str, owner: Owner) -> dict[str, Any]:
        obj, owner_id, _, _ = self._load_row(batch_id)
        _check_visible(batch_id, owner_id, owner)
        return obj


class _Leases(_Store):
    """Which instance runs which open batch: leases renewed while a job runs here, taken over
    from an instance that stopped renewing them (it died), so every batch is finished once."""

    def _start(self, batch_id: str, *, cancelled: bool = False) -> None:
        raise NotImplementedError  # FilesAPI runs the jobs

    # -- leases: who runs which batch ------------------------------------------------------

    def _watch(self) -> None:
        """Start the watcher (once, on the server's loop)."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_forever(), name="modelport-batch-leases")

    async def _watch_forever(self) -> None:
        """Every ``WATCH_SECONDS``: pass cancels written by other instances to the jobs
        running here; every third of a lease: renew this instance's leases (saving the
        jobs' progress for the other instances to show), stop the jobs whose lease another
        instance has taken, restart those held here whose job has ended without closing
        them, and take over the batches whose lease has run out."""
        renew_every = self.lease_seconds / 3
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            running = {batch_id: job for batch_id, job in self._jobs.items() if not job.future.done() and not job.closing}
            renew = time.monotonic() - renewed >= renew_every
            try:
                if renew and not running and not await self._io.run(self._records_exist):
                    renewed = time.monotonic()
                    continue  # no batch anywhere yet: nothing to renew or take over
                if renew:
                    renewed = time.monotonic()
                    held = await self._io.run(self._renew, {batch_id: job.counts for batch_id, job in running.items()})
                elif running:
                    held = await self._io.run(self._held)
                else:
                    continue
                for batch_id, status in held.items():
                    job = running.get(batch_id)
                    if job is not None and status == "cancelling":
                        job.cancel.set()
                    elif job is None and renew:
                        self._start(batch_id, cancelled=status == "cancelling")
                for batch_id in running.keys() - held.keys():
                    log.warning("batch %s: another instance has taken it over; stopping the job here", batch_id)
                    running[batch_id].stop()
                if renew:
                    for batch_id, cancelled in await self._io.run(self._take_over):
                        self._start(batch_id, cancelled=cancelled)
            except StateUnavailableError as exc:
                # Back off: each try waits for a connection, holding up the worker thread.
                log.warning("batch leases: %s; trying again in %g s", exc, renew_every)
                await asyncio.sleep(renew_every)
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failed round
                log.exception("batch leases: a round failed; trying again")

    def _records_exist(self) -> bool:
        """Whether there are records to look at: a gateway that has never seen a batch
        leaves no files.db behind, but watches for one that another process makes."""
        return self._io.opened is not None or self.records is not None or (self.root / "files.db").exists()

    def _held(self) -> dict[str, str]:
        """The open batches this instance holds the lease of, with their status."""
        rows = self.db.execute(f"SELECT id, status FROM batches WHERE lease_owner = ? AND {_OPEN_SQL}", (self.instance,)).fetchall()
        return {batch_id: status for batch_id, status in rows}

    def _renew(self, counts: dict[str, dict[str, int] | None]) -> dict[str, str]:
        """Extend this instance's leases; save the running jobs' counts. Returns ``_held``."""
        rows = self.db.execute(f"UPDATE batches SET lease_until = ? WHERE lease_owner = ? AND {_OPEN_SQL} RETURNING id, status",
                               (time.time() + self.lease_seconds, self.instance)).fetchall()
        held = {batch_id: status for batch_id, status in rows}
        for batch_id, progress in counts.items():
            if batch_id in held and progress is not None:
                try:
                    self._change(batch_id, partial(_set_counts, progress))
                except _LeaseLost:
                    del held[batch_id]  # taken over a moment ago
        return held

    def _take_over(self) -> list[tuple[str, bool]]:
        """Lease to this instance every open batch whose lease has run out, in one UPDATE
        (concurrent instances each get others: a row goes to exactly one). Returns (id, cancelled)."""
        if not self._records_exist():
            return []
        if self.db.engine == "sqlite":
            self._expire_dead_holders()
        now = time.time()
        rows = self.db.execute(f"UPDATE batches SET lease_owner = ?, lease_until = ? WHERE {_OPEN_SQL} AND lease_until < ? RETURNING id, status",
                               (self.instance, now + self.lease_seconds, now)).fetchall()
        for batch_id, _ in rows:
            log.info("batch %s: taken over by %s (its lease had run out)", batch_id, self.instance)
        return [(batch_id, status == "cancelling") for batch_id, status in rows]

    def _expire_dead_holders(self) -> None:
        """SQLite records are shared by the processes of one machine only: there, a lease
        whose holder process has died has run out now, not at its expiry, so a gateway
        restarted after a crash resumes its batches at once. (A reused pid looks alive: the
        lease then runs out as usual.)"""
        host = socket.gethostname()
        rows = self.db.execute(f"SELECT id, lease_owner FROM batches WHERE {_OPEN_SQL} AND lease_owner IS NOT NULL AND lease_owner <> ?",
                               (self.instance,)).fetchall()
        for batch_id, holder in rows:
            holder_host, pid, _ = (holder.rsplit(":", 2) + ["", ""])[:3]
            if holder_host == host and pid.isdigit() and not _alive(int(pid)):
                self.db.execute("UPDATE batches SET lease_until = 0 WHERE id = ? AND lease_owner = ?", (batch_id, holder))



class FilesAPI(_Leases):
    """The handlers. Every records call and file read or write runs on one worker thread,
    which owns the records connection (``files.db`` unless ``records`` names a database);
    each batch runs on a thread and event loop of its own, so its journal never shares the
    server's loop (see ``_Job``)."""

    # -- batches -------------------------------------------------------------------------

    async def create_batch(self, body: dict[str, Any], owner: Owner = Owner()) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequestError("the body must be a JSON object")
        file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        if not isinstance(file_id, str):
            raise BadRequestError("input_file_id is required", param="input_file_id")
        if endpoint not in BATCH_ENDPOINTS:
            raise BadRequestError(f"endpoint {endpoint!r} is not supported here; use {BATCH_ENDPOINTS[0]}", param="endpoint")
        if body.get("completion_window", "24h") != "24h":
            raise BadRequestError("completion_window must be 24h", param="completion_window")
        info = await self.get_file(file_id, owner)
        if info["purpose"] != "batch":
            raise BadRequestError(f"file {file_id} has purpose {info['purpose']!r}, not 'batch'", param="input_file_id")
        batch_id = "batch_" + secrets.token_hex(12)
        now = int(time.time())
        obj = {
            "id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": file_id,
            "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": now, "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }

        def validate_and_save() -> bool:
            errors = self._validate_input(file_id, endpoint)
            if errors:
                obj.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
            # Leased to this instance from the start: no other takes it over while it starts here.
            self.db.execute("INSERT INTO batches (id, created_at, object, owner, seq, status, lease_owner, lease_until)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (batch_id, now, dumps(obj), owner.id, time.time_ns(), obj["status"],
                             None if errors else self.instance, 0.0 if errors else time.time() + self.lease_seconds))
            return not errors

        if await self._io.run(validate_and_save):
            self._start(batch_id)
        return obj

    def _validate_input(self, file_id: str, endpoint: str) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        n = 0
        for line_no, line in enumerate(self.contents.read(file_id).split(b"\n"), 1):
            if not line.strip():
                continue
            n += 1
            try:
                item = loads(line)
            except JSONDecodeError:
                errors.append({"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "param": None, "line": line_no})
                continue
            if not isinstance(item, dict) or not isinstance(item.get("body"), dict) or "custom_id" not in item:
                errors.append({"code": "invalid_request", "message": "Each line needs custom_id, method, url and body.", "param": None, "line": line_no})
            elif item.get("url") != endpoint:
                errors.append({"code": "mismatched_endpoint", "message": f"The line's url must be {endpoint}.", "param": "url", "line": line_no})
            elif item["custom_id"] in seen:
                errors.append({"code": "duplicate_custom_id", "message": "custom_id values must be unique in a batch.", "param": "custom_id", "line": line_no})
            else:
                seen.add(item["custom_id"])
        if n == 0:
            errors.append({"code": "empty_file", "message": "The input file has no requests.", "param": None, "line": None})
        if n > MAX_BATCH_LINES:
            errors.append({"code": "too_many_requests", "message": f"A batch holds at most {MAX_BATCH_LINES} requests.", "param": None, "line": None})
        return errors[:100]

    def _start(self, batch_id: str, *, cancelled: bool = False) -> None:
        """Run the batch on a thread of its own (from the server's event loop)."""
        job = self._jobs.get(batch_id)
        if job is not None and not job.future.done():
            return
        loop = asyncio.get_running_loop()
        job = _Job(_LoopBridge(self._client(), loop), loop.create_future())
        if cancelled:
            job.cancel.set()
        self._jobs[batch_id] = job
        self._watch()
        # A daemon thread: a job waiting on a server loop that is gone must not keep the process alive.
        threading.Thread(target=job.thread_main, args=(partial(self._run, batch_id, job), self._slots),
                         name=f"modelport-{batch_id}", daemon=True).start()

    async def _run(self, batch_id: str, job: _Job) -> None:
        """The batch's thread: all of its journal and file I/O happens here."""
        from . import Stats, arun

        def begin(obj: dict[str, Any], *_: Any) -> bool:
            if obj["status"] != "validating":
                return False
            obj.update(status="in_progress", in_progress_at=int(time.time()))
            return True

        try:
            obj, owner = self._io.call(self._change, batch_id, begin)
        except _LeaseLost:
            return  # another instance took it over before this job began
        if obj["status"] not in _OPEN:
            return
        journal, spec = self._job(batch_id, obj)
        try:
            if journal.held_elsewhere():
                # The instance that had it still runs its job (its lease ran out while it
                # stalled; it stops when it sees that): the watcher tries again next round.
                log.warning("batch %s: its journal is still in use by another process; resuming it later", batch_id)
                return
            try:
                client = job.client if self.owned_client is None else _LoopBridge(self.owned_client(owner), job.client.loop)
                stats = await arun(journal, spec, client=client, cancel=job.cancel, on_progress=job.progress)
            except StateUnavailableError as exc:
                # The records (and the journal in them) are out of reach: not the batch's fault.
                # It stays open and held here; the watcher resumes it when they are back.
                log.warning("batch %s paused: %s", batch_id, exc)
                return
            except Exception as exc:  # noqa: BLE001 - the batch fails with the reason; the server carries on
                log.exception("batch %s failed", batch_id)
                stats = Stats(status="error", message=f"{type(exc).__name__}: {exc}")
            totals = journal.totals()
            outputs = self._split_output(obj["id"], spec.output) if stats.status in ("completed", "cancelled") else None

            def finish(current: dict[str, Any], *_: Any) -> bool:
                # Read again, under the row's lock: a cancel may have marked the batch since it started.
                now = int(time.time())
                if stats.status == "completed":
                    current.update(status="completed", finalizing_at=now, completed_at=now)
                elif stats.status == "cancelled":
                    current.update(status="cancelled", cancelled_at=now)
                else:
                    current.update(status="failed", failed_at=now, errors={"object": "list", "data": [
                        {"code": "batch_failed", "message": stats.message or stats.status, "param": None, "line": None}]})
                for field, (name, content) in (outputs or {}).items():
                    current[field] = self._store_file(name, content, "batch_output", owner)["id"]
                current["request_counts"] = _counts(totals)
                # The batch is closed: nobody holds or takes it any more.
                self.db.execute("UPDATE batches SET lease_owner = NULL, lease_until = 0, cost = ?, unknown_cost_rows = ? WHERE id = ?",
                                (totals["cost"], totals["unknown_cost_rows"], batch_id))
                return True

            job.closing = True  # from here on the batch is closed by this job: the watcher leaves it be
            try:
                self._io.call(self._change, batch_id, finish)
            except _LeaseLost:
                log.warning("batch %s: another instance took it over; it closes the batch", batch_id)
                return
        finally:
            journal.close()
        self.contents.forget_job(batch_id, self.root / "jobs")

    def _job(self, batch_id: str, obj: dict[str, Any]) -> tuple[Any, Any]:
        from ..config import private_file
        from .spec import JobSpec

        # Made 0600 here: the engine's writer appends to a file that exists, keeping its mode.
        output = private_file(self.root / "jobs" / f"{batch_id}.jsonl")
        spec = JobSpec(job_id=batch_id, input_format="openai", output=str(output), output_format="openai", concurrency=self.concurrency)
        return self.contents.open_job(batch_id, spec, obj["input_file_id"], self.root / "jobs")

    @staticmethod
    def _split_output(batch_id: str, output: str) -> dict[str, tuple[str, bytes]]:
        """The job's output as OpenAI's output file (200s) and error file (the rest)."""
        good: list[bytes] = []
        bad: list[bytes] = []
        path = Path(output)
        if path.exists():
            with path.open("rb") as f:
                for line in f:
                    record = loads(line)
                    response = record.get("response") or {}
                    (good if response.get("status_code") == 200 else bad).append(line)
        files = {}
        if good:
            files["output_file_id"] = (f"{batch_id}_output.jsonl", b"".join(good))
        if bad:
            files["error_file_id"] = (f"{batch_id}_error.jsonl", b"".join(bad))
        return files

    async def get_batch(self, batch_id: str, owner: Owner = Owner()) -> dict[str, Any]:
        return self._live(await self._io.run(self._load_visible, batch_id, owner))

    def _live(self, obj: dict[str, Any]) -> dict[str, Any]:
        """An open batch with the counts its running job last reported."""
        job = self._jobs.get(obj["id"])
        if obj["status"] in _OPEN and job is not None and not job.future.done() and job.counts is not None:
            obj["request_counts"] = dict(job.counts)
        return obj

    async def list_batches(self, after: str | None = None, limit: int = 20, owner: Owner = Owner()) -> dict[str, Any]:
        def objects() -> list[dict[str, Any]]:
            rows = self.db.execute(f"SELECT object FROM batches WHERE {_VISIBLE} ORDER BY created_at DESC, seq DESC",
                                   owner.args()).fetchall()
            return [loads(r[0]) for r in rows]

        objs = await self._io.run(objects)
        ids = [o["id"] for o in objs]
        if after:
            objs = objs[ids.index(after) + 1:] if after in ids else []
        page = [self._live(o) for o in objs[:limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(objs) > limit}

    async def spends(self, batch_ids: list[str], owner: Owner = Owner()) -> dict[str, Spend]:
        """The spend of each of these batches the owner may see: kept with the batch once it
        is closed, else summed from its journal wherever that lives (a file beside SQLite
        records, the records themselves with PostgreSQL), so every instance shows the same."""
        return await self._io.run(self._spends, batch_ids, owner) if batch_ids else {}

    def _spends(self, batch_ids: list[str], owner: Owner) -> dict[str, Spend]:
        marks = ", ".join("?" for _ in batch_ids)
        rows = self.db.execute(f"SELECT id, cost, unknown_cost_rows FROM batches WHERE id IN ({marks}) AND {_VISIBLE}",
                               (*batch_ids, *owner.args())).fetchall()
        found: dict[str, Spend] = {}
        for batch_id, cost, unknown in rows:
            if cost is not None:
                found[batch_id] = Spend(cost, unknown)
                continue
            totals = self.contents.totals(batch_id)
            if totals is not None:
                found[batch_id] = Spend(totals["cost"], totals["unknown_cost_rows"])
        return found

    async def cancel_batch(self, batch_id: str, owner: Owner = Owner()) -> dict[str, Any]:
        """Ask the batch's job to stop, wherever it runs, and answer at once: "cancelling"
        until the job has stopped (it finishes the rows in flight), then "cancelled"."""

        def mark(obj: dict[str, Any], lease_owner: str | None, lease_until: float) -> bool:
            if obj["status"] not in _OPEN or obj["status"] == "cancelling":
                return False
            now = int(time.time())
            if lease_until > time.time():
                # Its runner (this instance or another) sees "cancelling" and stops the job.
                obj.update(status="cancelling", cancelling_at=now)
            else:
                # Nobody runs it (its runner died, and no instance has taken it over yet):
                # nothing left to stop, and the row's lock keeps takers out until this commits.
                obj.update(status="cancelled", cancelling_at=now, cancelled_at=now)
            return True

        obj, _ = await self._io.run(self._change, batch_id, mark, visible_to=owner)
        job = self._jobs.get(batch_id)
        if obj["status"] == "cancelling" and job is not None and not job.future.done():
            job.cancel.set()  # running here: no need to wait for the watcher
        return self._live(obj)

    async def startup(self) -> None:
        """Take over the open batches nobody runs (those a stopped or dead instance left),
        and keep doing so while the server runs (see ``_watch``)."""
        self._watch()
        try:
            taken = await self._io.run(self._take_over)
        except StateUnavailableError as exc:  # the watcher takes them over once the records are back
            log.warning("batches: %s", exc)
            return
        for batch_id, cancelled in taken:
            self._start(batch_id, cancelled=cancelled)

    async def shutdown(self) -> None:
        """Stop the running batches. They stay open, and their leases are given up so that
        the next ``startup``, here or on another instance, resumes them at once."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for job in self._jobs.values():
            job.stop()
        await asyncio.gather(*(job.future for job in self._jobs.values()), return_exceptions=True)

        def give_up_leases() -> None:
            db = self._io.opened
            if db is not None:
                db.execute("UPDATE batches SET lease_until = 0 WHERE lease_owner = ?", (self.instance,))

        try:
            await self._io.run(give_up_leases)
        except ModelportError as exc:  # the records are out of reach: the leases run out by themselves
            log.warning("could not give up the batch leases of %s: %s", self.instance, exc)
        await self._io.aclose()

    async def wait(self, batch_id: str) -> None:
        """Until the batch's job ends (tests, and servers draining)."""
        job = self._jobs.get(batch_id)
        if job is not None:
            await asyncio.shield(job.future)



def _set_counts(counts: dict[str, int], obj: dict[str, Any], *_: Any) -> bool:
    obj["request_counts"] = dict(counts)
    return True


def _close_sqlite(db: RecordsDB) -> None:
    if db.engine == "sqlite":
        db.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class _LeaseLost(Exception):
    """This instance no longer holds the batch's lease: another runs it now."""


def _check_visible(batch_id: str, owner_id: str, owner: Owner) -> None:
    if not owner.admin and owner_id != owner.id:
        raise NotFoundError(f"No batch found with id '{batch_id}'.", param="batch_id", code="not_found")


class _Job:
    """One batch's thread: its own event loop runs the batch engine (journal writes,
    output file), while model calls go back to the server's loop through ``client``.
    ``cancel`` asks the engine to stop sending (a user's cancel); ``stop`` interrupts it
    outright (the server shutting down: the batch stays open, to be resumed)."""

    def __init__(self, client: _LoopBridge, future: asyncio.Future[None]) -> None:
        self.client = client
        self.cancel = threading.Event()
        self.counts: dict[str, int] | None = None
        # Set when the job has ended and is closing its batch.
        self.closing = False
        # Done (on the server's loop) when the thread has ended.
        self.future = future
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def thread_main(self, main: Callable[[], Awaitable[None]], slots: threading.BoundedSemaphore) -> None:
        error: BaseException | None = None
        try:
            with slots:
                asyncio.run(self._guarded(main))
        except BaseException as exc:  # handed to whoever awaits the future
            error = exc
        try:
            self.client.loop.call_soon_threadsafe(_end_future, self.future, error)
        except RuntimeError:
            pass  # the server's loop is closed: nobody waits any more

    async def _guarded(self, main: Callable[[], Awaitable[None]]) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        if self._stopping:
            return
        try:
            await main()
        except asyncio.CancelledError:
            if not self._stopping:
                raise

    def stop(self) -> None:
        self._stopping = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the batch's loop has already ended: nothing left to stop

    def progress(self, stats: Any) -> None:
        self.counts = {"total": stats.total, "completed": stats.done, "failed": stats.failed}


class _LoopBridge:
    """The client as a batch's own loop sees it: each call runs on the server's loop, where
    the client's connections (and the gateway's backends) live."""

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = client
        self.loop = loop
        self.config = getattr(client, "config", None)

    def resolve(self, model: str | None) -> Any:
        # On the server's loop too: resolving may build (and cache) the model's backend.
        done: Future[Any] = Future()

        def call() -> None:
            try:
                done.set_result(self._target.resolve(model))
            except BaseException as exc:  # raised again on the batch's thread
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(call)
        return done.result()

    def request(self, model: str | None, prompt: Any = None, **params: Any) -> Any:
        return self._target.request(model, prompt, **params)

    async def send(self, request: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._target.send(request), self.loop))

    async def aclose(self) -> None:
        """The server closes the client itself."""


def _end_future(future: asyncio.Future[None], error: BaseException | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _file_object(file_id: str, filename: str, size: int, created: int, purpose: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": created, "expires_at": None, "filename": filename,
            "purpose": purpose, "status": "processed", "status_details": None}


def _counts(totals: dict[str, Any]) -> dict[str, int]:
    return {"total": totals["rows"], "completed": totals["done"], "failed": totals["failed"]}
