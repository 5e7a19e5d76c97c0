"""Where the Files/Batches API keeps bytes: the uploaded and output files, and each batch's
journal. ``DiskContents`` keeps them under the gateway's batch directory (SQLite records:
one machine, or instances that share that directory); ``RecordsContents`` keeps them in the
records database itself (PostgreSQL records), so that instances on many machines need no
shared disk: a batch taken over on another machine finds its input and journal there.

Both are called from one thread at a time: the server's worker thread for files, a batch's
own thread for its journal and its input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..state.records import RecordsDB
from .journal import Journal
from .spec import JobSpec

# Rows of file content in the records: small enough for any driver's buffers.
CHUNK_BYTES = 1 << 20
# The table of file contents in the records (a step of the files schema, files_api._STEPS).
CHUNKS_TABLE = "CREATE TABLE file_chunks (file_id TEXT NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (file_id, n))"


class Contents(Protocol):
    def write(self, file_id: str, content: bytes) -> None: ...

    def read(self, file_id: str) -> bytes: ...

    def delete(self, file_id: str) -> None: ...

    def open_job(self, job_id: str, spec: JobSpec, input_file_id: str, scratch: Path) -> tuple[Journal, JobSpec]:
        """The job's journal and spec (stored on first open), its input and output paths on
        this machine (``scratch`` is a private directory of it)."""
        ...

    def forget_job(self, job_id: str, scratch: Path) -> None:
        """The job's batch is closed (its answers are in its output files): its journal may go."""
        ...

    def totals(self, job_id: str) -> dict[str, Any] | None:
        """The job's journal's ``totals``; None when it has no journal (here)."""
        ...


class DiskContents:
    """Files as ``files/<id>``, journals as ``jobs/<batch>.db`` under the batch directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, file_id: str, content: bytes) -> None:
        from ..config import write_private

        write_private(self.root / "files" / file_id, content)

    def read(self, file_id: str) -> bytes:
        return (self.root / "files" / file_id).read_bytes()

    def delete(self, file_id: str) -> None:
        (self.root / "files" / file_id).unlink(missing_ok=True)

    def open_job(self, job_id: str, spec: JobSpec, input_file_id: str, scratch: Path) -> tuple[Journal, JobSpec]:
        from . import open_job

        spec.input = str(self.root / "files" / input_file_id)
        return open_job(self.root / "jobs" / f"{job_id}.db", spec)

    def forget_job(self, job_id: str, scratch: Path) -> None:
        """The journal file stays, as it always has: ``modelport batch`` tools can read it."""

    def totals(self, job_id: str) -> dict[str, Any] | None:
        path = self.root / "jobs" / f"{job_id}.db"
        if not path.exists():
            return None
        journal = Journal(path)
        try:
            return journal.totals()
        finally:
            journal.close()


class RecordsContents:
    """Files in ``file_chunks``, journals in ``journal_meta`` and ``journal_rows``. A job's
    input is copied to ``scratch`` on this machine until the journal has ingested it; its
    output file is scratch too (the journal remakes it wherever the job resumes)."""

    def __init__(self, db: RecordsDB) -> None:
        self.db = db

    def write(self, file_id: str, content: bytes) -> None:
        with self.db.transaction():
            self.db.executemany("INSERT INTO file_chunks (file_id, n, data) VALUES (?, ?, ?)",
                                ((file_id, n, content[at:at + CHUNK_BYTES]) for n, at in enumerate(range(0, len(content) or 1, CHUNK_BYTES))))

    def read(self, file_id: str) -> bytes:
        rows = self.db.execute("SELECT data FROM file_chunks WHERE file_id = ? ORDER BY n", (file_id,)).fetchall()
        return b"".join(bytes(row[0]) for row in rows)

    def delete(self, file_id: str) -> None:
        self.db.execute("DELETE FROM file_chunks WHERE file_id = ?", (file_id,))

    def open_job(self, job_id: str, spec: JobSpec, input_file_id: str, scratch: Path) -> tuple[Journal, JobSpec]:
        from ..config import write_private
        from . import with_spec
        journal, stored = with_spec(Journal(self.db, job_id), spec)
        # The stored spec names the paths of the instance that began the job: this one's instead.
        stored.output = spec.output
        stored.input = str(scratch / f"{job_id}.input.jsonl")
        if not journal.ingest_done:
            write_private(Path(stored.input), self.read(input_file_id))
        return journal, stored

    def forget_job(self, job_id: str, scratch: Path) -> None:
        Journal(self.db, job_id).delete()
        for name in (f"{job_id}.jsonl", f"{job_id}.input.jsonl"):
            (scratch / name).unlink(missing_ok=True)

    def totals(self, job_id: str) -> dict[str, Any] | None:
        totals = Journal(self.db, job_id).totals()
        return totals if totals["rows"] else None


def contents_for(db: RecordsDB, root: Path) -> Contents:
    """Bytes go where the records go when those are shared between machines (PostgreSQL)."""
    return DiskContents(root) if db.engine == "sqlite" else RecordsContents(db)
