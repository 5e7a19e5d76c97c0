"""One HTTP exchange of the gateway: the request as read (bounded in size and time), the
answer in the route's dialect, and the interrupts (deadline, idle body, hang-up) that stop
a request's work for a reason its code can tell apart from a shutdown.

Every response, error or not, carries ``x-request-id`` and ``x-modelport`` (the version);
every log line names the request id.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import parse_qsl

from .. import __version__
from ..dialects.base import ServerDialect
from ..errors import AuthenticationError, BadRequestError, MethodNotAllowedError, ModelportError, RequestTooLargeError, TimeoutError, error_for_status
from ..jsonio import JSONDecodeError, dumps, loads
from ..throttle import ThrottledLog
from ..providers import GATEWAY_HEADER_NAME
from ..types import ChatRequest, InvalidShape, Usage, validate_request
from .auth import CONTROL_CHARACTERS, Caller
from .fair import HEAVY_BYTES, FairExecutor
from .settings import BODY_TIMEOUT, BODY_TOTAL_TIMEOUT

log = logging.getLogger("modelport.server")
_failures = ThrottledLog(log)
T = TypeVar("T")

# Bodies a browser sends cross-origin without a preflight; no JSON client labels JSON so.
# (application/x-www-form-urlencoded stays accepted: it is what `curl -d` sends.)
_NOT_JSON = frozenset({"text/plain", "multipart/form-data"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_JSON_CONTENT_TYPE = (b"content-type", b"application/json")
# Every answer names the gateway: on LM Studio's or Ollama's port, a client (and `modelport
# models`) can then tell a modelport gateway from the server it expected (providers.py).
GATEWAY_HEADER = (GATEWAY_HEADER_NAME.encode(), __version__.encode())

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Request:
    """One HTTP exchange, as the doors and the call pipeline see it: what came in, who
    sent it, and the answer (``respond``, ``fail``) in the route's dialect."""

    __slots__ = ("scope", "receive", "send", "method", "path", "headers", "query", "id", "id_header",
                 "caller", "door", "dialect", "model", "status", "started", "error_kind", "usage", "cost", "disconnected", "metered",
                 "body_timeout", "body_total_timeout", "cors", "fair", "heavy")

    def __init__(self, scope: dict[str, Any], receive: Receive, send: Send, request_id: str,
                 body_timeout: float = BODY_TIMEOUT, fair: FairExecutor | None = None,
                 body_total_timeout: float = BODY_TOTAL_TIMEOUT) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.body_timeout = body_timeout
        self.body_total_timeout = body_total_timeout
        # Where this request's heavy decoding runs (off the event loop, taking turns by key).
        self.fair = fair
        # Whether its body is big enough to decode there (see fair.py).
        self.heavy = False
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        raw_query = scope.get("query_string") or b""
        self.query: dict[str, str] = dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else {}
        given = self.headers.get("x-request-id")
        self.id = given if given and _REQUEST_ID.match(given) else request_id
        self.id_header = (b"x-request-id", self.id.encode())
        self.caller: Caller | None = None
        self.door = "-"
        # The dialect the answer and its errors speak: the route's, set when it is found.
        self.dialect: ServerDialect | None = None
        self.model = "-"
        self.status = 0
        self.started = time.perf_counter()
        self.error_kind: str | None = None
        self.usage: Usage | None = None
        self.cost = 0.0
        self.disconnected = False
        # Whether this request has been booked against the key's rpm (see Gateway.meter).
        self.metered = False
        # CORS headers for an allowed browser origin; every answer carries them.
        self.cors: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def key_name(self) -> str:
        return self.caller.name if self.caller is not None else "-"

    def presented_key(self) -> str | None:
        """The gateway key, wherever the caller's SDK puts it; refused if it holds a control
        character (``?key=...%0A``: no key has one)."""
        headers = self.headers
        auth = headers.get("authorization")
        if auth and auth[:7].lower() == "bearer ":
            key: str | None = auth[7:].strip()
        else:
            key = headers.get("x-api-key") or headers.get("x-goog-api-key") or self.query.get("key")
        if key and CONTROL_CHARACTERS.search(key):
            raise AuthenticationError("the gateway key holds a control character (a newline, tab or escape)",
                                      hint="send the key exactly as `modelport keys create` printed it; in ?key=, drop a trailing %0A")
        return key

    async def body(self, limit: int) -> bytes:
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise RequestTooLargeError(f"request body of {length} bytes is over this gateway's limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        idle = IdleWatch(self.body_timeout, self.body_total_timeout)
        try:
            while True:
                try:
                    message = await self.receive()
                except asyncio.CancelledError:
                    reason = idle.absorb()
                    if reason is None:
                        raise
                    if reason == "idle":
                        raise BadRequestError(f"no part of the request body arrived for {self.body_timeout:g} s", status=408,
                                              code="request_timeout", param="body") from None
                    raise BadRequestError(
                        f"the request body did not arrive whole within this gateway's limit of {self.body_total_timeout:g} s "
                        f"({size} bytes came)", status=408, code="request_timeout", param="body",
                        hint="send the body at once, or ask the gateway's operator to raise [server] body_total_timeout") from None
                idle.progress()
                if message["type"] == "http.disconnect":
                    self.disconnected = True
                    raise BadRequestError("the client went away before sending the whole body", param="body")
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise RequestTooLargeError(f"request body is over this gateway's limit of {limit} bytes")
                    chunks.append(chunk)
                if not message.get("more_body"):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            # Synchronous with the last receive's return, so the cancel can land only on a receive.
            idle.stop()

    async def json(self, limit: int) -> Any:
        content_type = self.headers.get("content-type")
        if content_type is not None and content_type.partition(";")[0].strip().lower() in _NOT_JSON:
            # What a web page can send without a CORS preflight; no JSON client sends it.
            raise BadRequestError(f"body: sent as {content_type.partition(';')[0].strip()}, but this endpoint reads JSON",
                                  status=415, code="unsupported_media_type", param="body",
                                  hint="send the body with content-type: application/json")
        raw = await self.body(limit)
        self.heavy = len(raw) > HEAVY_BYTES
        return await self.off_loop(_parse_json, raw) if self.heavy else _parse_json(raw)

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``: inline for a small request, on the fair executor for a heavy one."""
        if self.heavy and self.fair is not None:
            return await self.fair.run(self.key_name, fn, *args)
        return fn(*args)

    async def decode(self, decoder: Callable[..., T], *args: Any, check: bool = True) -> T:
        """A dialect's decoding of this request's body (and, unless ``check`` is false, the
        canonical checks), off the event loop for a heavy body (see fair.py)."""
        return await self.off_loop(decode_body, decoder, args, check) if self.heavy else decode_body(decoder, args, check)

    async def respond(self, body: Any, status: int = 200, headers: dict[str, str] | None = None,
                      content_type: bytes | None = None) -> None:
        """One whole response: JSON (``body`` any JSON value) or raw bytes with a content type."""
        payload = body if isinstance(body, bytes) else dumps(body)
        head = [(b"content-type", content_type) if content_type else _JSON_CONTENT_TYPE,
                (b"content-length", str(len(payload)).encode()), self.id_header, GATEWAY_HEADER, *self.cors]
        if headers:
            head.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        self.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": head})
        await self.send({"type": "http.response.body", "body": payload})

    async def fail(self, exc: ModelportError) -> None:
        """The error in the route's dialect (set by the route table, even for a path no route has)."""
        self.error_kind = exc.kind
        if exc.status >= 500:
            # One line, and one per condition every so often: an outage refuses every request.
            _failures.warning(f"{exc.kind}:{exc.message}", "%s %s %s failed: %s", self.id, self.method, self.path, exc.message)
        dialect = self.dialect
        if dialect is None:
            from .. import dialects

            dialect = dialects.get("openai")  # nothing routed yet: OpenAI's shape, the most common
        status, body, headers = dialect.encode_error(exc)
        if isinstance(exc, MethodNotAllowedError):
            headers = {**headers, "allow": ", ".join(exc.allow)}
        elif status == 408:
            # The body stopped short: what the connection carries next is no request, so close it.
            headers = {**headers, "connection": "close"}
        elif status == 508:
            # A routing loop does not heal by itself: stop the caller's SDK from retrying it.
            headers = {**headers, "x-should-retry": "false"}
        if isinstance(body, dict) and "request_id" in body:
            body["request_id"] = self.id
        await self.respond(body, status, headers)


def decode_body(decoder: Callable[..., T], args: tuple[Any, ...], check: bool) -> T:
    """A dialect's decoding of a body; a body shaped so oddly that the decoder trips over it
    is still the caller's mistake (400), never the server's (500)."""
    try:
        decoded = decoder(*args)
        if check and isinstance(decoded, ChatRequest):
            validate_request(decoded)
        return decoded
    except ModelportError:
        raise
    except InvalidShape as exc:
        raise BadRequestError(str(exc), param=exc.field) from None
    except RecursionError:
        raise BadRequestError("invalid request body: nested too deeply", param="body") from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise BadRequestError(f"invalid request body: {type(exc).__name__}: {exc}", param="body") from None


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise BadRequestError("body: required: send a JSON object", param="body", code="missing_required_parameter")
    try:
        return loads(raw)
    except (JSONDecodeError, ValueError) as exc:
        raise BadRequestError(f"body: not valid JSON ({exc})", param="body", code="invalid_json") from None


class Interrupt:
    """Cancels the running task for a reason (deadline, client gone) that the code catching
    the CancelledError can tell apart from a shutdown's cancellation."""

    __slots__ = ("task", "reason")

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.reason: str | None = None

    def fire(self, reason: str) -> None:
        if self.reason is None and self.task is not None:
            self.reason = reason
            self.task.cancel()

    def disarm(self) -> None:
        """From here on nothing may cancel the task (its cleanup is under way)."""
        self.task = None

    def absorb(self) -> str | None:
        """After a CancelledError: this interrupt's reason (the cancel is undone), or None."""
        task = asyncio.current_task()
        if self.reason is not None and task is not None and hasattr(task, "uncancel"):
            task.uncancel()
        return self.reason


class IdleWatch(Interrupt):
    """Interrupts ("idle") once ``seconds`` pass without ``progress()``, and ("total") once
    ``total`` seconds pass at all. One timer per body read, re-armed only when it fires
    early: asyncio.timeout() around every receive measured ~30 us per receive against
    ~1 us for the bare await."""

    __slots__ = ("loop", "seconds", "last", "deadline", "timer")

    def __init__(self, seconds: float, total: float) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.seconds = seconds
        self.last = self.loop.time()
        self.deadline = self.last + total
        self.timer = self.loop.call_later(min(seconds, total), self._check)

    def progress(self) -> None:
        self.last = self.loop.time()

    def _check(self) -> None:
        now = self.loop.time()
        if now >= self.deadline:
            self.fire("total")
            return
        left = min(self.last + self.seconds, self.deadline) - now
        if left > 0:
            self.timer = self.loop.call_later(left, self._check)
        else:
            self.fire("idle")

    def stop(self) -> None:
        self.timer.cancel()
        self.disarm()


def timeout_error(seconds: float) -> TimeoutError:
    return TimeoutError(f"the request took longer than this gateway's limit of {seconds:g} s", hint="ask for fewer tokens, or raise --timeout")


def client_gone() -> ModelportError:
    # Nobody reads this answer (the connection is closed); it names the outcome in logs and metrics.
    return error_for_status(499, "the client closed the connection before the answer was ready", code="client_closed_request")


def not_allowed(method: str, path: str, allowed: tuple[str, ...]) -> MethodNotAllowedError:
    return MethodNotAllowedError(f"{method} is not allowed on {path}; use {' or '.join(allowed)}", allow=allowed)
