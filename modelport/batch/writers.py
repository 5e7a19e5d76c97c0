"""Output records and streaming writers.

A row's output record is derived from its journal entry only, so the same journal always
gives the same output, byte for byte: that is what lets a resumed job truncate its output
to the last committed length and extend it.

Formats: JSONL and CSV are appended as rows become final (in input order); Parquet cannot
be appended to, so it is written from the journal once the job has ended, in row groups.
OpenAI batch-format input gets OpenAI batch-format output lines, keyed by ``custom_id``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from ..jsonio import dumps

if TYPE_CHECKING:
    from .seams import BatchJournal
    from .spec import JobSpec

OUTPUT_FORMATS = ("jsonl", "csv", "parquet", "openai")
log = logging.getLogger("modelport.batch")
RESULT_COLUMNS = ("answer", "parsed", "input_tokens", "output_tokens", "cost", "cached", "finish_reason", "error")


def output_format(path: str | Path, input_format: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    return "openai" if input_format == "openai" else "jsonl"


def record_for(spec: JobSpec, idx: int, key: str | None, data: Any, state: int, result: Any, error: Any,
               cost: float | None, cached: bool) -> dict[str, Any]:
    """The output record of one final journal row, in the job's output shape."""
    if spec.input_format == "openai" and spec.output_format in (None, "openai"):
        return openai_record(spec.job_id, idx, key, result, error)
    return row_record(idx, data, result, error, cost, cached)


def row_record(idx: int, data: Any, result: Any, error: Any, cost: float | None, cached: bool) -> dict[str, Any]:
    """The plain output record of one final row."""
    response = (result or {}).get("response") or {}
    usage = response.get("usage") or {}
    if error is None and (result or {}).get("parse_error"):
        error = {"type": "invalid_output", "status": None, "code": None, "message": result["parse_error"]}
    tokens = {"input_tokens": usage.get("input_tokens", 0), "output_tokens": usage.get("output_tokens", 0)}
    # Prompt-cache reads and writes (part of input_tokens), where the provider reported any.
    tokens.update((name, usage[name]) for name in ("cached_tokens", "cache_write_tokens") if usage.get(name))
    return {
        "index": idx,
        "input": data,
        "answer": _text(response) if response else None,
        "parsed": (result or {}).get("parsed"),
        "usage": tokens,
        "cost": cost,
        "cached": cached,
        "finish_reason": response.get("finish_reason"),
        "error": error,
    }


def flat_record(record: dict[str, Any]) -> dict[str, Any]:
    """A row record as flat columns: the input's columns, then the result columns."""
    data = record["input"]
    out: dict[str, Any] = dict(data) if isinstance(data, dict) else {"prompt": data}
    error = record["error"]
    out.update(
        answer=record["answer"],
        parsed=record["parsed"],
        input_tokens=record["usage"]["input_tokens"],
        output_tokens=record["usage"]["output_tokens"],
        cost=record["cost"],
        cached=record["cached"],
        finish_reason=record["finish_reason"],
        error=None if error is None else error.get("message"),
    )
    return out


def openai_record(job_id: str, idx: int, key: str | None, result: Any, error: Any) -> dict[str, Any]:
    """One line of an OpenAI batch's output file: ``{id, custom_id, response: {status_code,
    request_id, body}, error}``."""
    line_id = f"batch_req_{job_id}_{idx}"
    if error is not None:
        status = int(error.get("status") or 500)
        body = {"error": {"message": error.get("message", ""), "type": error.get("type", "server_error"), "param": None,
                          "code": error.get("code")}}
        return {"id": line_id, "custom_id": key, "response": {"status_code": status, "request_id": line_id, "body": body},
                "error": None}
    from ..dialects import openai as dialect
    from ..serialize import response_from_dict

    response = response_from_dict(result["response"])
    body = dialect.encode_response(response, response.model)
    return {"id": line_id, "custom_id": key, "response": {"status_code": 200, "request_id": line_id, "body": body}, "error": None}


def _text(response: dict[str, Any]) -> str:
    parts = (response.get("message") or {}).get("content") or []
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


class RecordEncoder:
    """Output records to bytes, the same bytes for the same records every time; a CSV
    header comes with the first rows of a file, and later rows keep its column order."""

    def __init__(self, fmt: str, columns: list[str] | None = None) -> None:
        self.fmt = fmt
        self.columns = columns

    def encode(self, records: Iterable[dict[str, Any]], at_start: bool) -> bytes:
        if self.fmt != "csv":
            return b"".join(dumps(r) + b"\n" for r in records)
        rows = [flat_record(r) for r in records]
        if not rows:
            return b""
        text = io.StringIO()
        if self.columns is None:
            self.columns = list(rows[0])
            if at_start:
                csv.writer(text).writerow(self.columns)
        writer = csv.DictWriter(text, self.columns, extrasaction="ignore")
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        return text.getvalue().encode("utf-8")


class AppendWriter:
    """Appends records to a JSONL or CSV file, starting from a known-good length."""

    def __init__(self, path: str | Path, fmt: str, size: int) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = "r+b" if self.path.exists() else "w+b"
        self.file = self.path.open(mode)
        # Drop anything past the committed length: a torn line from a killed run.
        self.file.truncate(size)
        self.file.seek(size)
        self.encoder = RecordEncoder(fmt, _csv_header(self.path) if fmt == "csv" and size else None)

    @property
    def size(self) -> int:
        return self.file.tell()

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        self.file.write(self.encoder.encode(records, self.file.tell() == 0))

    def flush(self) -> int:
        """Push the bytes to the OS (they then survive the process being killed); returns the length."""
        self.file.flush()
        return self.file.tell()

    def close(self) -> None:
        self.file.close()


def append_format(spec: JobSpec) -> str:
    return "csv" if spec.output_format == "csv" else "jsonl"


def _output_chunks(journal: BatchJournal, spec: JobSpec, rows: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(rows so far, bytes) of the output the journal's final rows make, in order: the first
    ``rows`` of them, or all that are contiguous from the first."""
    encoder = RecordEncoder(append_format(spec))
    start = 0
    while rows is None or start < rows:
        limit = 2000 if rows is None else min(2000, rows - start)
        batch = journal.final_rows(start, limit)
        if not batch:
            return
        chunk = encoder.encode([record_for(spec, *row) for row in batch], start == 0)
        start = batch[-1][0] + 1
        yield start, chunk


def output_intact(journal: BatchJournal, spec: JobSpec) -> bool:
    """Whether the output file begins with exactly the rows the journal says were written:
    each once, in order, nothing torn, truncated or overwritten (bytes past them are a torn
    tail, which appending drops)."""
    rows, size = journal.written
    path = _output(spec)
    try:
        if path.stat().st_size < size:
            return False
    except FileNotFoundError:
        return size == 0
    seen = 0
    done = 0
    with path.open("rb") as f:
        for done, chunk in _output_chunks(journal, spec, rows):
            if f.read(len(chunk)) != chunk:
                return False
            seen += len(chunk)
    return done == rows and seen == size


def rewrite_output(journal: BatchJournal, spec: JobSpec) -> None:
    """Write the output again from the journal (to a new file renamed into place)."""
    path = _output(spec)
    tmp = path.with_name(path.name + ".tmp")
    rows = size = 0
    try:  # the new file keeps the old one's permissions (a gateway batch's output is 0600)
        mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
    if mode is not None:
        os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as f:
        for rows, chunk in _output_chunks(journal, spec):
            f.write(chunk)
        size = f.tell()
    os.replace(tmp, path)
    journal.set_written(rows, size)


def open_output(journal: BatchJournal, spec: JobSpec) -> AppendWriter:
    """The output, to append to from where the journal's written rows end; a file damaged
    since (truncated mid-line, overwritten) is first rewritten from the journal."""
    if not output_intact(journal, spec):
        log.warning("the output %s differs from what the journal says was written (truncated or changed since); "
                    "rewriting it from the journal", spec.output)
        rewrite_output(journal, spec)
    return AppendWriter(_output(spec), append_format(spec), journal.written[1])


def _output(spec: JobSpec) -> Path:
    """The job's output file; only a job with one is written out."""
    if spec.output is None:
        raise ValueError(f"batch job {spec.job_id} has no output file")
    return Path(spec.output)


def _csv_header(path: Path) -> list[str] | None:
    """The header of an existing CSV output, so appended rows keep its column order."""
    with path.open(newline="", encoding="utf-8") as f:
        return next(csv.reader(f), None)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return dumps(value).decode()
    return "" if value is None else value


def write_parquet(path: str | Path, batches: Iterable[list[dict[str, Any]]]) -> None:
    """Write flat records, batch by batch, as row groups; a temporary file is renamed into
    place so a half-written Parquet file is never left behind."""
    from ..extras import require

    pa = require("pyarrow", "writing Parquet")
    pq = require("pyarrow.parquet", "writing Parquet")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    writer = None
    schema = None
    try:
        for batch in batches:
            rows = [{k: (dumps(v).decode() if isinstance(v, (dict, list)) else v) for k, v in flat_record(r).items()} for r in batch]
            if not rows:
                continue
            if writer is None:
                schema = _parquet_schema(pa, pa.Table.from_pylist(rows).schema)
                writer = pq.ParquetWriter(tmp, schema)
            table = pa.Table.from_pylist(rows, schema=schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        os.replace(tmp, path)


def _parquet_schema(pa: Any, inferred: Any) -> Any:
    """Fixed types for the result columns, and string for input columns that were all null
    in the first batch (a later batch may have values)."""
    fixed = {"answer": pa.string(), "parsed": pa.string(), "input_tokens": pa.int64(), "output_tokens": pa.int64(),
             "cost": pa.float64(), "cached": pa.bool_(), "finish_reason": pa.string(), "error": pa.string()}
    fields = []
    for f in inferred:
        kind = fixed.get(f.name) or (pa.string() if pa.types.is_null(f.type) else f.type)
        fields.append(pa.field(f.name, kind))
    return pa.schema(fields)
