"""OpenAI's Files and Batch APIs (protocols §2.13, §2.14), served locally by the batch engine.

``FilesAPI`` holds the handlers as plain async methods: parsed arguments in, OpenAI-shaped
dicts (or bytes) out, modelport errors raised for 4xx. The gateway mounts them; so does
``asgi_app`` below, a raw ASGI app for ``/v1/files`` and ``/v1/batches`` that a gateway can
delegate those paths to (and that tests run as is).

A batch is a batch-engine job over the uploaded file (OpenAI batch format in, OpenAI batch
format out, keyed by ``custom_id``), run as a task on the server's event loop through any
backend the client routes to, the embedded model included. Jobs keep their journals under
``root``; ``startup()`` resumes the ones a stopped server left running, so a restart loses
nothing and answers no row twice.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from ..errors import BadRequestError, ModelportError, NotFoundError
from ..jsonio import JSONDecodeError, dumps, loads

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_ENDPOINTS = ("/v1/chat/completions",)
MAX_BATCH_LINES = 50_000
_OPEN = ("validating", "in_progress", "finalizing", "cancelling")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, filename TEXT, bytes INTEGER, created_at INTEGER, purpose TEXT);
CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, created_at INTEGER, object BLOB);
"""


class FilesAPI:
    def __init__(self, root: str | Path | None = None, client: Any = None, *, concurrency: int = 8) -> None:
        if root is None:
            from ..config import data_dir

            root = data_dir() / "gateway"
        self.root = Path(root)
        from ..config import private_dir, private_file

        private_dir(self.root / "files")
        private_dir(self.root / "jobs")
        self.db = sqlite3.connect(str(private_file(self.root / "files.db")), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        self.client = client
        self.concurrency = concurrency
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _client(self) -> Any:
        if self.client is None:
            from . import make_client
            from .spec import JobSpec

            self.client = make_client(JobSpec(job_id="gateway"))
        return self.client

    # -- files ---------------------------------------------------------------------------

    async def upload_file(self, filename: str, content: bytes, purpose: str) -> dict[str, Any]:
        if purpose not in FILE_PURPOSES:
            raise BadRequestError(f"purpose must be one of {', '.join(FILE_PURPOSES)}", param="purpose")
        return self._store_file(filename, content, purpose)

    def _store_file(self, filename: str, content: bytes, purpose: str) -> dict[str, Any]:
        file_id = "file-" + secrets.token_hex(12)
        from ..config import write_private

        write_private(self.root / "files" / file_id, content)
        created = int(time.time())
        self.db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)", (file_id, filename, len(content), created, purpose))
        return _file_object(file_id, filename, len(content), created, purpose)

    async def list_files(self, purpose: str | None = None, limit: int = 10000, order: str = "desc", after: str | None = None) -> dict[str, Any]:
        rows = self.db.execute("SELECT id, filename, bytes, created_at, purpose FROM files ORDER BY created_at, rowid").fetchall()
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

    async def get_file(self, file_id: str) -> dict[str, Any]:
        row = self.db.execute("SELECT id, filename, bytes, created_at, purpose FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"No such File object: {file_id}", param="file_id", code="not_found")
        return _file_object(*row)

    async def file_content(self, file_id: str) -> bytes:
        await self.get_file(file_id)
        return (self.root / "files" / file_id).read_bytes()

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        await self.get_file(file_id)
        self.db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        (self.root / "files" / file_id).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    # -- batches -------------------------------------------------------------------------

    async def create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
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
        info = await self.get_file(file_id)
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
        errors = self._validate_input(file_id, endpoint)
        if errors:
            obj.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
            self._save(obj)
            return obj
        self._save(obj)
        self._start(batch_id)
        return obj

    def _validate_input(self, file_id: str, endpoint: str) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        n = 0
        with (self.root / "files" / file_id).open("rb") as f:
            for line_no, line in enumerate(f, 1):
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

    def _job(self, batch_id: str, obj: dict[str, Any]) -> tuple[Any, Any]:
        from ..config import private_file
        from . import open_job
        from .spec import JobSpec

        # Made 0600 here: the engine's writer appends to a file that exists, keeping its mode.
        output = private_file(self.root / "jobs" / f"{batch_id}.jsonl")
        spec = JobSpec(job_id=batch_id, input=str(self.root / "files" / obj["input_file_id"]), input_format="openai",
                       output=str(output), output_format="openai", concurrency=self.concurrency)
        return open_job(self.root / "jobs" / f"{batch_id}.db", spec)

    def _start(self, batch_id: str) -> None:
        if batch_id not in self._tasks or self._tasks[batch_id].done():
            self._tasks[batch_id] = asyncio.get_running_loop().create_task(self._run(batch_id))

    async def _run(self, batch_id: str) -> None:
        from . import arun

        obj = self._load(batch_id)
        journal, spec = self._job(batch_id, obj)
        try:
            if obj["status"] == "validating":
                obj.update(status="in_progress", in_progress_at=int(time.time()))
                self._save(obj)
            stats = await arun(journal, spec, client=self._client())
            obj = self._load(batch_id)
            totals = journal.totals()
            if stats.status == "completed":
                obj.update(status="finalizing", finalizing_at=int(time.time()))
                self._save(obj)
                self._finalize(obj, spec.output)
                obj.update(status="completed", completed_at=int(time.time()))
            elif stats.status == "cancelled":
                self._finalize(obj, spec.output)
                obj.update(status="cancelled", cancelled_at=int(time.time()))
            else:
                obj.update(status="failed", failed_at=int(time.time()),
                           errors={"object": "list", "data": [{"code": "batch_failed", "message": stats.message or stats.status, "param": None, "line": None}]})
            obj["request_counts"] = _counts(totals)
            self._save(obj)
        finally:
            journal.close()

    def _finalize(self, obj: dict[str, Any], output: str) -> None:
        """Split the job's output into OpenAI's output file (200s) and error file (the rest)."""
        good: list[bytes] = []
        bad: list[bytes] = []
        path = Path(output)
        if path.exists():
            with path.open("rb") as f:
                for line in f:
                    record = loads(line)
                    response = record.get("response") or {}
                    (good if response.get("status_code") == 200 else bad).append(line)
        if good:
            obj["output_file_id"] = self._store_file(f"{obj['id']}_output.jsonl", b"".join(good), "batch_output")["id"]
        if bad:
            obj["error_file_id"] = self._store_file(f"{obj['id']}_error.jsonl", b"".join(bad), "batch_output")["id"]

    async def get_batch(self, batch_id: str) -> dict[str, Any]:
        obj = self._load(batch_id)
        if obj["status"] in _OPEN:
            journal = self._journal_if_any(batch_id)
            if journal is not None:
                try:
                    obj["request_counts"] = _counts(journal.totals())
                finally:
                    journal.close()
        return obj

    def _journal_if_any(self, batch_id: str) -> Any:
        from .journal import Journal

        path = self.root / "jobs" / f"{batch_id}.db"
        return Journal(path) if path.exists() else None

    async def list_batches(self, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        rows = self.db.execute("SELECT id FROM batches ORDER BY created_at DESC, rowid DESC").fetchall()
        ids = [r[0] for r in rows]
        if after:
            ids = ids[ids.index(after) + 1:] if after in ids else []
        page = [await self.get_batch(i) for i in ids[:limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(ids) > limit}

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        obj = self._load(batch_id)
        if obj["status"] not in _OPEN:
            return obj
        journal = self._journal_if_any(batch_id)
        if journal is not None:
            try:
                journal.set("cancel", True)
            finally:
                journal.close()
        obj.update(status="cancelling", cancelling_at=int(time.time()))
        self._save(obj)
        return obj

    async def startup(self) -> None:
        """Resume the batches a previous server process left open."""
        for (batch_id,) in self.db.execute("SELECT id FROM batches").fetchall():
            if self._load(batch_id)["status"] in _OPEN:
                self._start(batch_id)

    async def shutdown(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def wait(self, batch_id: str) -> None:
        """Until the batch's task ends (tests, and servers draining)."""
        task = self._tasks.get(batch_id)
        if task is not None:
            await asyncio.shield(task)

    def _save(self, obj: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)", (obj["id"], obj["created_at"], dumps(obj)))

    def _load(self, batch_id: str) -> dict[str, Any]:
        row = self.db.execute("SELECT object FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"No batch found with id '{batch_id}'.", param="batch_id", code="not_found")
        return loads(row[0])


def _file_object(file_id: str, filename: str, size: int, created: int, purpose: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": created, "expires_at": None, "filename": filename,
            "purpose": purpose, "status": "processed", "status_details": None}


def _counts(totals: dict[str, Any]) -> dict[str, int]:
    return {"total": totals["rows"], "completed": totals["done"], "failed": totals["failed"]}


# -- a raw ASGI app over the handlers ---------------------------------------------------------

Send = Callable[[dict[str, Any]], Awaitable[None]]


def asgi_app(api: FilesAPI) -> Callable[..., Awaitable[None]]:
    """ASGI for ``/v1/files...`` and ``/v1/batches...``; errors in OpenAI's error shape."""

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await api.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await api.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = dict(parse_qsl(scope.get("query_string", b"").decode()))
        try:
            result = await handle(api, scope["method"], scope["path"], query, headers, body)
        except ModelportError as exc:
            from ..dialects import openai as dialect

            status, payload, extra = dialect.encode_error(exc)
            await _respond(send, status, dumps(payload), "application/json", extra)
            return
        if isinstance(result, bytes):
            await _respond(send, 200, result, "application/octet-stream")
        else:
            await _respond(send, 200, dumps(result), "application/json")

    return app


async def handle(api: FilesAPI, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes) -> Any:
    """Route one request to its handler (shared by ``asgi_app`` and any gateway that mounts us)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["v1"]:
        parts = parts[1:]
    if parts[:1] == ["files"]:
        if len(parts) == 1 and method == "POST":
            fields = parse_multipart(headers.get("content-type", ""), body)
            upload = fields.get("file")
            if upload is None:
                raise BadRequestError("multipart field 'file' is required", param="file")
            return await api.upload_file(upload[0] or "upload.jsonl", upload[1], fields.get("purpose", (None, b""))[1].decode())
        if len(parts) == 1 and method == "GET":
            return await api.list_files(query.get("purpose"), int(query.get("limit", 10000)), query.get("order", "desc"), query.get("after"))
        if len(parts) == 2 and method == "GET":
            return await api.get_file(parts[1])
        if len(parts) == 2 and method == "DELETE":
            return await api.delete_file(parts[1])
        if len(parts) == 3 and parts[2] == "content" and method == "GET":
            return await api.file_content(parts[1])
    if parts[:1] == ["batches"]:
        if len(parts) == 1 and method == "POST":
            try:
                payload = loads(body or b"{}")
            except JSONDecodeError:
                raise BadRequestError("the body is not valid JSON") from None
            return await api.create_batch(payload)
        if len(parts) == 1 and method == "GET":
            return await api.list_batches(query.get("after"), int(query.get("limit", 20)))
        if len(parts) == 2 and method == "GET":
            return await api.get_batch(parts[1])
        if len(parts) == 3 and parts[2] == "cancel" and method == "POST":
            return await api.cancel_batch(parts[1])
    raise NotFoundError(f"no route for {method} {path}")


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data -> {field: (filename, bytes)}, with the stdlib's MIME parser."""
    if not content_type.startswith("multipart/form-data"):
        raise BadRequestError("uploads must be multipart/form-data", param="file")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


async def _respond(send: Send, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
