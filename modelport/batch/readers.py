"""Streaming input readers: one row at a time, so a million-row file costs no memory.

Every reader yields ``(key, data)``: ``key`` is the row's ``custom_id`` for OpenAI batch
format (outputs are keyed by it) and None otherwise; ``data`` is the row itself (a dict
of columns, a string prompt, or the OpenAI batch line).

Formats: JSONL (plain rows, or OpenAI batch format, recognised by ``custom_id`` and
``body`` on its first line), CSV, and Parquet (needs pyarrow).
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any, Iterator

from ..jsonio import JSONDecodeError, loads

FORMATS = ("jsonl", "csv", "parquet", "openai")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

Row = tuple[str | None, Any]


def detect_format(path: str | Path) -> str:
    """The input's format from its suffix, refining JSONL to OpenAI batch format by content."""
    path = Path(path)
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {path.name}: use .jsonl, .csv or .parquet (or --format)")
    if fmt == "jsonl" and is_openai_batch_line(_first_line(path)):
        return "openai"
    return fmt


def is_openai_batch_line(row: Any) -> bool:
    return isinstance(row, dict) and "custom_id" in row and isinstance(row.get("body"), dict)


def _first_line(path: Path) -> Any:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                try:
                    return loads(line)
                except JSONDecodeError:
                    return None
    return None


def read_rows(path: str | Path, fmt: str, skip: int = 0) -> Iterator[Row]:
    """Rows of the file from row number ``skip`` on (blank JSONL lines are not rows)."""
    rows = {"jsonl": _jsonl, "openai": _openai, "csv": _csv, "parquet": _parquet}[fmt](Path(path))
    return itertools.islice(rows, skip, None) if skip else rows


def _jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield None, loads(line)
            except JSONDecodeError as exc:
                raise ValueError(f"{path.name} line {n} is not valid JSON: {exc}") from None


def _openai(path: Path) -> Iterator[Row]:
    for _, row in _jsonl(path):
        if not is_openai_batch_line(row):
            raise ValueError(f"{path.name}: every line of an OpenAI batch file needs custom_id and body; got {str(row)[:80]}")
        yield str(row["custom_id"]), row


def _csv(path: Path) -> Iterator[Row]:
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield None, row


def _parquet(path: Path) -> Iterator[Row]:
    from ..extras import require

    pq = require("pyarrow.parquet", "reading Parquet")
    for batch in pq.ParquetFile(path).iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            yield None, row


def iter_records(rows: Any) -> Iterator[Row]:
    """Rows given in Python: a pandas DataFrame, or an iterable of dicts or strings."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        columns = [str(c) for c in rows.columns]
        for values in rows.itertuples(index=False, name=None):
            yield None, {c: _plain(v) for c, v in zip(columns, values)}
        return
    for row in rows:
        yield (str(row["custom_id"]) if is_openai_batch_line(row) else None), row


def _plain(value: Any) -> Any:
    """numpy scalars and NaN as JSON-able Python values."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            value = item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and value != value:
        return None
    return value
