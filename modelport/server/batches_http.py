"""OpenAI's Files and Batches API over HTTP: the paths, methods and multipart uploads of
``/v1/files`` and ``/v1/batches``, routed to ``batch.files_api.FilesAPI``. The gateway's
Batches door serves them (``handle``); ``asgi_app`` serves them alone, for a batch server
without the gateway's doors."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, unquote

from ..batch.files_api import FilesAPI, Owner
from ..errors import BadRequestError, ModelportError, NotFoundError
from ..jsonio import JSONDecodeError, dumps, loads

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


async def handle(api: FilesAPI, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
                 owner: Owner = Owner()) -> Any:
    """Route one request to its handler (shared by ``asgi_app`` and any gateway that mounts us)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["v1"]:
        parts = parts[1:]
    if parts[:1] == ["files"]:
        if len(parts) == 1 and method == "POST":
            # Off the event loop: even a bounded parse of a 16 MiB body takes a while.
            fields = await asyncio.to_thread(parse_multipart, headers.get("content-type", ""), body)
            upload = fields.get("file")
            if upload is None:
                raise BadRequestError("multipart field 'file' is required", param="file")
            return await api.upload_file(upload[0] or "upload.jsonl", upload[1], _purpose(fields.get("purpose", (None, b""))[1]), owner)
        if len(parts) == 1 and method == "GET":
            return await api.list_files(query.get("purpose"), _limit(query, 10000), query.get("order", "desc"), query.get("after"), owner)
        if len(parts) == 2 and method == "GET":
            return await api.get_file(parts[1], owner)
        if len(parts) == 2 and method == "DELETE":
            return await api.delete_file(parts[1], owner)
        if len(parts) == 3 and parts[2] == "content" and method == "GET":
            return await api.file_content(parts[1], owner)
    if parts[:1] == ["batches"]:
        if len(parts) == 1 and method == "POST":
            try:
                payload = loads(body or b"{}")
            except JSONDecodeError:
                raise BadRequestError("the body is not valid JSON") from None
            return await api.create_batch(payload, owner)
        if len(parts) == 1 and method == "GET":
            return await api.list_batches(query.get("after"), _limit(query, 20), owner)
        if len(parts) == 2 and method == "GET":
            return await api.get_batch(parts[1], owner)
        if len(parts) == 3 and parts[2] == "cancel" and method == "POST":
            return await api.cancel_batch(parts[1], owner)
    raise NotFoundError(f"no route for {method} {path}")


def _limit(query: dict[str, str], default: int, most: int = 10000) -> int:
    """The ``limit`` query parameter: a whole number from 1 to ``most`` (a 400 names it)."""
    raw = query.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= most:
        raise BadRequestError(f"limit: {raw[:40]!r} is not a whole number from 1 to {most}", param="limit")
    return int(raw)


def _purpose(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("purpose: not valid UTF-8 text", param="purpose") from None


# The Files API reads two fields (file and purpose); a few more are tolerated, thousands are
# an attack on the parser.
MAX_PARTS = 8
MAX_PART_HEADER_BYTES = 8192
# Every field but the file itself is a short string.
MAX_FIELD_BYTES = 65536
_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,70})"|([^\s;,"]{1,70}))', re.IGNORECASE)
_PARAM = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data -> {field: (filename, bytes)}, in one pass of ``bytes.find``,
    refusing more than ``MAX_PARTS`` parts, part headers over ``MAX_PART_HEADER_BYTES`` and
    fields other than ``file`` over ``MAX_FIELD_BYTES`` before doing any work for them."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadRequestError("uploads must be multipart/form-data", param="file")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise BadRequestError("the multipart/form-data content type has no boundary", param="file")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise BadRequestError("the multipart body has no part (its boundary does not occur)", param="file")
    fields: dict[str, tuple[str | None, bytes]] = {}
    separator = b"\r\n" + delimiter
    pos = start + len(delimiter)
    parts = 0
    while not body.startswith(b"--", pos):  # "--" after a delimiter closes the body
        parts += 1
        if parts > MAX_PARTS:
            raise BadRequestError(f"the upload has more than {MAX_PARTS} multipart parts; the Files API takes 'file' and 'purpose'",
                                  param="file", code="too_many_parts")
        head_end = body.find(b"\r\n\r\n", pos, pos + MAX_PART_HEADER_BYTES + 4)
        if head_end < 0:
            raise BadRequestError(f"a multipart part's headers are missing or longer than {MAX_PART_HEADER_BYTES} bytes",
                                  param="file", code="invalid_multipart")
        headers = _part_headers(body[pos:head_end])
        end = body.find(separator, head_end + 4)
        if end < 0:
            raise BadRequestError("the multipart body ends before its closing boundary", param="file", code="invalid_multipart")
        name, filename = _disposition(headers.get("content-disposition", ""))
        if name != "file" and end - head_end - 4 > MAX_FIELD_BYTES:
            raise BadRequestError(f"multipart field {name!r} is over {MAX_FIELD_BYTES} bytes", param=name or "file", code="invalid_multipart")
        if name:
            fields[name] = (filename, body[head_end + 4:end])
        pos = end + len(separator)
    return fields


def _part_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _disposition(value: str) -> tuple[str | None, str | None]:
    """(name, filename) of a ``form-data`` Content-Disposition (RFC 7578, with RFC 5987's
    ``filename*`` when a client sends it)."""
    params: dict[str, str] = {}
    for key, raw in _PARAM.findall(value):
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key.lower()] = raw
    filename = params.get("filename")
    extended = params.get("filename*")
    if extended and "''" in extended:
        charset, _, encoded = extended.partition("''")
        filename = unquote(encoded, encoding=charset or "utf-8", errors="replace")
    return params.get("name"), filename


async def _respond(send: Send, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
