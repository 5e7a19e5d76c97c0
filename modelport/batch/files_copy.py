"""Copy a gateway's Files/Batches state from its SQLite batch directory into another records
database: a step of ``modelport state migrate --to postgresql://...``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..state.copy import CustomCopy
from ..state.records import RecordsDB, SQLiteRecords, migrate
from .file_contents import DiskContents, RecordsContents, contents_for
from .journal import Journal
from .files_api import _OPEN, _STEPS, _legacy_version

_FILE_COLUMNS = "id, filename, bytes, created_at, purpose, owner, seq"


def copy_files_and_batches(batch_dir: Path, target: RecordsDB) -> dict[str, int]:
    """Copy the records of ``batch_dir/files.db`` (upgraded in place first) into ``target``.

    Idempotent: rows ``target`` has already are kept as they are, so running it again copies
    nothing twice. Where ``target`` keeps the bytes itself (PostgreSQL: see file_contents),
    the uploaded and output files go along, and so do the journals of open batches, so any
    instance can resume them. Copied open batches hold no lease: the first instance up
    takes them over. Returns how many files, batches and journals were copied."""
    source = SQLiteRecords(Path(batch_dir) / "files.db")
    try:
        migrate(source, "files", _STEPS, legacy=_legacy_version)
        files = source.execute(f"SELECT {_FILE_COLUMNS} FROM files").fetchall()
        batches = source.execute("SELECT id, created_at, object, owner, seq, status, cost, unknown_cost_rows FROM batches").fetchall()
    finally:
        source.close()
    migrate(target, "files", _STEPS)
    disk = DiskContents(Path(batch_dir))
    into = contents_for(target, Path(batch_dir))
    copied = {"files": 0, "batches": 0, "journals": 0}
    with target.transaction():
        for row in files:
            if target.execute(f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id",
                              tuple(row)).fetchone() is None:
                continue
            copied["files"] += 1
            if isinstance(into, RecordsContents):
                into.write(row[0], disk.read(row[0]))
        for batch_id, created, obj, owner, seq, status, cost, unknown in batches:
            if cost is None and status not in _OPEN:
                # Closed before spends were kept with batches: its journal file knows, and
                # the target keeps no journal of a closed batch.
                totals = disk.totals(batch_id)
                if totals is not None:
                    cost, unknown = totals["cost"], totals["unknown_cost_rows"]
            if target.execute("INSERT INTO batches (id, created_at, object, owner, seq, status, lease_owner, lease_until, cost,"
                              " unknown_cost_rows) VALUES (?, ?, ?, ?, ?, ?, NULL, 0, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id",
                              (batch_id, created, obj, owner, seq, status, cost, unknown)).fetchone() is None:
                continue
            copied["batches"] += 1
            journal = disk.root / "jobs" / f"{batch_id}.db"
            if isinstance(into, RecordsContents) and status in _OPEN and journal.exists():
                _copy_journal(journal, batch_id, target)
                copied["journals"] += 1
    return copied


def _copy_journal(path: Path, job: str, target: RecordsDB) -> None:
    """A batch journal file's rows and meta into the records, as job ``job``."""
    source = Journal(path)
    try:
        source.copy_into(Journal(target, job))
    finally:
        source.close()


def _copy_step(config: dict[str, Any], target: RecordsDB) -> dict[str, int]:
    """``modelport state migrate``'s step: this machine's batch directory, if it has one."""
    from ..config import data_dir

    root = Path((config.get("server") or {}).get("batch_dir") or data_dir() / "gateway")
    return copy_files_and_batches(root, target) if (root / "files.db").exists() else {}


FILES_COPY = CustomCopy("files and batches", _copy_step)
