"""The gateway: a raw ASGI app that speaks OpenAI, Anthropic and Gemini to any backend.

No framework: a request costs one dict lookup to route, one body read, one JSON parse and
one dialect translation each way. The front doors (``openai_door``, ``anthropic_door``,
``gemini_door``) glue a dialect to the services here: ``chat``, ``stream``, ``embed``,
``respond``. Everything that could block (SQLite for keys and usage, the call log) runs in
a worker thread or a background writer, never on the event loop.

Every response, error or not, carries ``x-request-id``; every log line names it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass, replace
from itertools import count
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from ..backends import current_caller
from ..client import AsyncClient
from ..errors import (
    BadRequestError,
    MethodNotAllowedError,
    ModelportError,
    NotFoundError,
    PermissionDeniedError,
    RequestTooLargeError,
    ServerError,
    StateUnavailableError,
    TimeoutError,
    error_for_status,
)
from ..jsonio import JSONDecodeError, dumps, loads
from ..state.counters import Booking, open_counters
from ..types import ChatRequest, ChatResponse, EmbeddingResponse, InvalidShape, Message, StreamAccumulator, StreamEvent, Usage, validate_request
from .auth import Caller, KeyRing, KeyStore
from .hops import next_hop
from .limits import MESSAGE_OVERHEAD_BOUND, prompt_token_bound, settlement, text_token_bound
from .metrics import Metrics
from .readiness import Readiness
from .router import DEFAULT_NAME, Router, Target, may_fall_back

log = logging.getLogger("modelport.server")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_JSON_HEADERS = ((b"content-type", b"application/json"),)
_SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))
KEY_SYNC_SECONDS = 1.0
BODY_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Settings:
    """What ``modelport serve`` is told; every limit has a safe default."""

    host: str = "127.0.0.1"
    port: int = 1234
    # None: required exactly when the server listens beyond loopback.
    auth: bool | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    # The request line and headers: at most this many bytes (else 431), whole within
    # header_timeout seconds of their first byte (else 408); see protocol.py.
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    # Longest wait for the next piece of a request body (else 408).
    body_timeout: float = BODY_TIMEOUT
    # Upper bound of max_tokens; requests without one get this many.
    max_tokens: int = 16384
    request_timeout: float = 600.0
    graceful_timeout: float = 30.0
    log_calls: bool | None = None
    access_log: bool = False
    keys_path: str | None = None
    # Uploads and batch jobs of the Files/Batches API; None: "gateway" in the data dir.
    # Gateways sharing SQLite records share it too; with PostgreSQL records the uploads,
    # outputs and journals are in the database and this holds only scratch files.
    batch_dir: str | None = None
    # How long a dead gateway's batches wait before another gateway takes them over.
    batch_lease_seconds: float = 15.0
    # How long stored Responses API responses stay retrievable (previous_response_id, GET).
    responses_ttl_days: float = 30.0
    # Where state shared between gateway processes lives ([state] in the config; see
    # modelport.state): None keeps counters in this process and records in SQLite files.
    counters: str | None = None
    records: str | None = None
    # This gateway's name in its metrics' ``instance`` label; None: host:port.
    instance: str | None = None
    # Longest time the gateway keeps accepting keys from its last good read of the key
    # store (a revoke it cannot see); after that, keyed requests get 503 until a read works.
    keys_max_stale: float = 10.0

    @property
    def auth_required(self) -> bool:
        return self.auth if self.auth is not None else self.host not in LOOPBACK_HOSTS


def instance_labels(settings: Settings, worker: Any = None) -> dict[str, str]:
    """The labels of every metric series of this process: where it serves, and which worker it is."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        import socket

        host = socket.gethostname()  # a wildcard address names no machine
    labels = {"instance": settings.instance or f"{host}:{settings.port}"}
    if worker is not None:
        labels["worker"] = str(worker.index)
    return labels


class Request:
    """One HTTP exchange, as the doors and the services see it."""

    __slots__ = ("scope", "receive", "send", "method", "path", "headers", "query", "id", "_id_header",
                 "caller", "door", "dialect", "model", "status", "started", "error_kind", "usage", "cost", "disconnected", "metered",
                 "body_timeout")

    def __init__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]], request_id: str,
                 body_timeout: float = BODY_TIMEOUT) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.body_timeout = body_timeout
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        raw_query = scope.get("query_string") or b""
        self.query: dict[str, str] = dict(parse_qsl(raw_query.decode("latin-1"))) if raw_query else {}
        given = self.headers.get("x-request-id")
        self.id = given if given and _REQUEST_ID.match(given) else request_id
        self._id_header = (b"x-request-id", self.id.encode())
        self.caller: Caller | None = None
        self.door = "-"
        self.dialect: Any = None
        self.model = "-"
        self.status = 0
        self.started = time.perf_counter()
        self.error_kind: str | None = None
        self.usage: Usage | None = None
        self.cost = 0.0
        self.disconnected = False
        # Whether this request has been booked against the key's rpm (see Gateway._meter).
        self.metered = False

    @property
    def key_name(self) -> str:
        return self.caller.name if self.caller is not None else "-"

    def presented_key(self) -> str | None:
        """The gateway key, wherever the caller's SDK puts it."""
        headers = self.headers
        auth = headers.get("authorization")
        if auth and auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return headers.get("x-api-key") or headers.get("x-goog-api-key") or self.query.get("key")

    async def body(self, limit: int) -> bytes:
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise RequestTooLargeError(f"request body of {length} bytes is over this gateway's limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        idle = _IdleWatch(self.body_timeout)
        try:
            while True:
                try:
                    message = await self.receive()
                except asyncio.CancelledError:
                    if idle.absorb() is None:
                        raise
                    raise BadRequestError(f"no part of the request body arrived for {self.body_timeout:g} s", status=408,
                                          code="request_timeout", param="body") from None
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
        raw = await self.body(limit)
        if not raw.strip():
            raise BadRequestError("body: required: send a JSON object", param="body", code="missing_required_parameter")
        try:
            return loads(raw)
        except (JSONDecodeError, ValueError) as exc:
            raise BadRequestError(f"body: not valid JSON ({exc})", param="body", code="invalid_json") from None


class _Interrupt:
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


class _IdleWatch(_Interrupt):
    """Interrupts ("idle") once ``seconds`` pass without ``progress()``. One timer per body
    read, re-armed only when it fires early: asyncio.timeout() around every receive
    measured ~30 us per receive against ~1 us for the bare await."""

    __slots__ = ("loop", "seconds", "last", "timer")

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.seconds = seconds
        self.last = self.loop.time()
        self.timer = self.loop.call_later(seconds, self._check)

    def progress(self) -> None:
        self.last = self.loop.time()

    def _check(self) -> None:
        left = self.last + self.seconds - self.loop.time()
        if left > 0:
            self.timer = self.loop.call_later(left, self._check)
        else:
            self.fire("idle")

    def stop(self) -> None:
        self.timer.cancel()
        self.disarm()


def _stream_headers(encoder: Any) -> tuple[tuple[bytes, bytes], ...]:
    """SSE unless the encoder names its own media type (Ollama's NDJSON)."""
    media_type = getattr(encoder, "media_type", None)
    return _SSE_HEADERS if media_type is None else ((b"content-type", media_type), *_SSE_HEADERS[1:])


def _timeout_error(seconds: float) -> TimeoutError:
    return TimeoutError(f"the request took longer than this gateway's limit of {seconds:g} s", hint="ask for fewer tokens, or raise --timeout")


def _client_gone() -> ModelportError:
    # Nobody reads this answer (the connection is closed); it names the outcome in logs and metrics.
    return error_for_status(499, "the client closed the connection before the answer was ready", code="client_closed_request")


Handler = Callable[[Request, str], Awaitable[None]]


class Gateway:
    """The ASGI application. ``config`` is a config dict or file path; ``api_keys`` are
    provider keys beyond the environment's and the keys file's. Retrying is the caller's
    SDK's job, so the gateway's own client never retries (fallbacks aside)."""

    def __init__(self, settings: Settings | None = None, *, config: Any = None, api_keys: dict[str, str] | None = None,
                 worker: Any = None) -> None:
        self.settings = settings or Settings()
        # Under `serve --workers N`: this process's Worker (index, count, peers_dir); see workers.py.
        self.worker = worker
        self.client = AsyncClient(config=config, api_keys=api_keys, max_retries=0, source="gateway")
        self.router = Router(self.client, api_keys)
        self.metrics = Metrics(self.router.metric_label, instance_labels(self.settings, worker))
        # The state layers register their dependencies' checks here (GET /ready, /health).
        self.readiness = Readiness()
        self._peers: Any = None
        # Per-key windows and budgets ([state] counters); a booking is held no longer than a
        # request can last.
        self.counters = open_counters(self.settings.counters, hold_seconds=self.settings.request_timeout + 60)
        self.readiness.register("counters", self.counters.healthy)
        self.keys = KeyRing(KeyStore(self.settings.keys_path, url=self.settings.records), self.counters)
        self.auth_required = self.settings.auth_required
        from ..calllog import log_for

        self.call_log = log_for("gateway", self.settings.log_calls, self.client.config)
        from ..cache import cache_for

        # The response cache ([cache] in the config): in the records database, so that every
        # instance sharing a PostgreSQL one shares it too.
        self.cache = cache_for(None, self.client.config, url=self.settings.records)
        self.readiness.register("records", self.keys.ping)
        self._sync_lock: asyncio.Lock | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._synced_at = 0.0
        # Why the last read of the key store failed; None once one works again.
        self._keys_error: BaseException | None = None
        self._prices: dict[str, Any] = {}
        self._ids = count(1)
        self._id_prefix = "req_" + os.urandom(4).hex()
        self._files_api: Any = None
        self._routes, self._patterns = self._route_table()

    # -- routing -------------------------------------------------------------------------

    def _route_table(self) -> tuple[dict[tuple[str, str], tuple[str, Any, Handler]], list[tuple[str, re.Pattern[str], str, Any, Handler]]]:
        from .. import dialects
        from .anthropic_door import AnthropicDoor
        from .gemini_door import GeminiDoor
        from .ollama_door import OllamaDoor
        from .openai_door import OpenAIDoor
        from .responses_door import ResponsesDoor
        from .ui.api import ConsoleDoor

        openai, anthropic, gemini, responses = (dialects.get(n) for n in ("openai", "anthropic", "gemini", "openai-responses"))
        oa, an, gm = OpenAIDoor(self, openai), AnthropicDoor(self, anthropic), GeminiDoor(self, gemini)
        rs = self.responses_door = ResponsesDoor(self, responses)
        self.console = ConsoleDoor(self)
        routes: dict[tuple[str, str], tuple[str, Any, Handler]] = {
            ("GET", "/health"): ("health", openai, self._health),
            ("GET", "/ready"): ("health", openai, self._ready),
            ("GET", "/metrics"): ("metrics", openai, self._metrics),
            ("POST", "/v1/messages"): ("anthropic", anthropic, an.messages),
            ("POST", "/v1/messages/count_tokens"): ("anthropic", anthropic, an.count_tokens),
            ("POST", "/v1/responses"): ("responses", responses, rs.create),
            ("POST", "/v1/responses/input_tokens"): ("responses", responses, rs.input_tokens),
        }
        for collection in ("/v1/files", "/v1/batches"):
            for method in ("GET", "POST"):
                routes[(method, collection)] = ("batches", openai, self._batches)
        # OpenAI under /v1 (its SDK), bare (a base URL without /v1) and /openai/v1 (Groq's SDK).
        for prefix in ("/v1", "", "/openai/v1"):
            routes[("POST", prefix + "/chat/completions")] = ("openai", openai, oa.chat_completions)
            routes[("POST", prefix + "/completions")] = ("openai", openai, oa.completions)
            routes[("POST", prefix + "/embeddings")] = ("openai", openai, oa.embeddings)
            routes[("GET", prefix + "/models")] = ("openai", openai, oa.models)
        for version in ("/v1beta", "/v1alpha"):
            routes[("GET", version + "/models")] = ("gemini", gemini, gm.models)
        patterns = [
            # One file or batch: the Files/Batches handlers tell the methods apart themselves.
            ("*", re.compile(r"^/v1/(?:files|batches)/[^/]+(?:/[a-z]+)?$"), "batches", openai, self._batches),
            # One stored response; the door tells its methods and sub-resources apart.
            ("*", re.compile(r"^/v1/responses/([^/]+)((?:/input_items|/cancel)?)$"), "responses", responses, rs.stored),
            # Gemini methods: the model may hold slashes and colons (qwen:latest), the method
            # (one the door serves) follows the last colon. Bare /models/...: LiteLLM with the
            # gateway's URL as its Gemini api_base.
            ("POST", re.compile(rf"^(?:/v1(?:beta|alpha)?/(?:models/)?|/models/)(.+):({'|'.join(gm.method_names)})$"), "gemini", gemini, gm.method),
            ("GET", re.compile(r"^/v1(?:beta|alpha)/models/(.+)$"), "gemini", gemini, gm.model),
            ("GET", re.compile(r"^(?:/openai)?/v1/models/(.+)$"), "openai", openai, oa.model),
            ("GET", re.compile(r"^/models/(.+)$"), "openai", openai, oa.model),
            # The web console: its JSON (keys checked per endpoint) and its pages (open: the page asks for a key).
            ("*", re.compile(r"^/ui/api/(.+)$"), "ui", openai, self.console.api),
            ("*", re.compile(r"^/ui/?((?:[A-Za-z0-9_-]+\.[a-z]+)?)$"), "ui-page", openai, self.console.page),
        ]
        ol = OllamaDoor(self, dialects.get("ollama"))
        routes.update(ol.routes())
        patterns.append(ol.pattern())
        # Handlers that run a model book the key's limits themselves (tokens and cost too);
        # every other endpoint costs one request of the key's rpm up front.
        self._model_handlers = frozenset({oa.chat_completions, oa.completions, oa.embeddings, an.messages, gm.method, rs.create,
                                          ol.chat, ol.generate, ol.embed, ol.embeddings})
        self._gemini_door = ("gemini", gemini, gm)
        self._anthropic_models = ("anthropic", anthropic, an.models)
        return routes, patterns

    def _route(self, req: Request) -> tuple[str, Any, Handler, str]:
        route = self._routes.get((req.method, req.path))
        if route is not None:
            door, dialect, handler = route
            if door == "openai" and req.path == "/v1/models":
                door, dialect, handler = self._models_door(req, route)
            return door, dialect, handler, ""
        allowed = sorted(m for m, p in self._routes if p == req.path)
        if allowed:
            req.dialect = self._routes[(allowed[0], req.path)][1]  # the 405 in the path's own dialect
            raise _not_allowed(req, tuple(allowed))
        for method, pattern, door, dialect, handler in self._patterns:
            match = pattern.match(req.path)
            if match is None:
                continue
            if method != req.method and method != "*":
                raise _not_allowed(req, (method,))
            if door == "openai" and self._speaks_gemini(req):
                door, dialect, gm = self._gemini_door
                handler = gm.model
            return door, dialect, handler, "\0".join(match.groups())
        paths = sorted({p for _, p in self._routes if p.startswith("/v1/")})
        raise NotFoundError(f"no such endpoint: {req.method} {req.path}; this gateway serves {', '.join(paths)} and Gemini's /v1beta/models/...", code="unknown_url")

    @staticmethod
    def _speaks_gemini(req: Request) -> bool:
        # GET /v1/models and /v1/models/{id} are both OpenAI's and Gemini's (genai 3.x uses /v1).
        headers = req.headers
        return "x-goog-api-key" in headers or "x-goog-api-client" in headers or "key" in req.query

    def _models_door(self, req: Request, route: tuple[str, Any, Handler]) -> tuple[str, Any, Handler]:
        """GET /v1/models is OpenAI's, Gemini's and Anthropic's path: the caller's headers tell which."""
        if self._speaks_gemini(req):
            door, dialect, gm = self._gemini_door
            return door, dialect, gm.models
        if "anthropic-version" in req.headers:
            return self._anthropic_models
        return route

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]]) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(Request(scope, receive, send, f"{self._id_prefix}{next(self._ids):x}", self.settings.body_timeout))
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, req: Request) -> None:
        metrics = self.metrics
        metrics.in_flight += 1
        try:
            try:
                door, req.dialect, handler, arg = self._route(req)
                req.door = door
                with next_hop(req.headers):
                    await self._authenticate(req, door)
                    if handler not in self._model_handlers:
                        await self._meter(req)
                    await handler(req, arg)
            except ModelportError as exc:
                await self.fail(req, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s unexpected error on %s %s", req.id, req.method, req.path)
                await self.fail(req, ServerError(f"internal error ({type(exc).__name__}); request id {req.id}"))
        finally:
            metrics.in_flight -= 1
            seconds = time.perf_counter() - req.started
            key = req.key_name
            metrics.request(req.door, req.model, key, req.status, seconds)
            if req.error_kind is not None:
                metrics.error(req.model, key, req.error_kind)
            if self.settings.access_log:
                log.info("%s %s %s %d model=%s key=%s %.1fms", req.id, req.method, req.path, req.status, req.model, key, seconds * 1000)

    async def _authenticate(self, req: Request, door: str) -> None:
        if door in ("health", "ui-page"):
            return
        key = req.presented_key()
        if key:
            key_id, caller = self.keys.lookup(key)
            if caller is None and key_id is not None:
                # Perhaps a key made since the last sync: read the store (unless a read that
                # began after this request arrived already did), then look again.
                await self.sync_keys(unless_since=req.started)
        if not self.auth_required:
            # Open server: a real gateway key still attributes usage and owns its files and
            # batches; SDK placeholders are ignored.
            if key and key.startswith("mpk_"):
                _, req.caller = self.keys.lookup(key)
            return
        self._check_keys_fresh(key)
        req.caller = self.keys.authenticate(key)

    def _check_keys_fresh(self, key: str | None) -> None:
        """Fail closed while the key store cannot be read: the keys last read stay good for
        ``keys_max_stale`` seconds (a brief outage or failover costs nothing), then every
        key is refused with a 503, so a key revoked meanwhile is not honoured for long (a
        read that hangs counts as failing); a well-formed key the last read did not have is
        refused with a 503 at once, since it may be new."""
        age = time.monotonic() - self.keys.loaded_at
        error = self._keys_error
        if not key or (error is None and age <= self.settings.keys_max_stale):
            return
        key_id, caller = self.keys.lookup(key)
        if age > self.settings.keys_max_stale or (key_id is not None and caller is None):
            # A records error names its database (without password); anything else only its type.
            reason = (error.message if isinstance(error, ModelportError) else type(error).__name__) if error is not None \
                else f"no read has finished for {age:.0f} s"
            raise StateUnavailableError(f"the gateway cannot read its keys ({reason}), so it cannot check this key",
                                        hint="check the records database ([state] records); the gateway reconnects by itself")

    # -- responses -----------------------------------------------------------------------

    async def respond(self, req: Request, body: Any, status: int = 200, headers: dict[str, str] | None = None,
                      content_type: bytes | None = None) -> None:
        """One whole response: JSON (``body`` any JSON value) or raw bytes with a content type."""
        payload = body if isinstance(body, bytes) else dumps(body)
        head = [(b"content-type", content_type) if content_type else _JSON_HEADERS[0],
                (b"content-length", str(len(payload)).encode()), req._id_header]
        if headers:
            head.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        req.status = status
        await req.send({"type": "http.response.start", "status": status, "headers": head})
        await req.send({"type": "http.response.body", "body": payload})

    async def fail(self, req: Request, exc: ModelportError) -> None:
        """The error in the caller's dialect (OpenAI's before a door is known)."""
        req.error_kind = exc.kind
        if exc.status >= 500:
            log.warning("%s %s %s failed: %s", req.id, req.method, req.path, exc)
        dialect = req.dialect
        if dialect is None:
            from .. import dialects

            dialect = dialects.get("gemini" if req.path.startswith(("/v1beta", "/v1alpha")) else "openai")
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
            body["request_id"] = req.id
        await self.respond(req, body, status, headers)

    # -- services for the doors ------------------------------------------------------------

    @staticmethod
    def decode(decoder: Callable[..., Any], *args: Any, check: bool = True) -> Any:
        """Run a dialect's request decoder and (unless ``check`` is false) the canonical
        checks on what it made; a body shaped so oddly that the decoder trips over it is
        still the caller's mistake (400), never the server's (500)."""
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

    async def _admit(self, req: Request, request: ChatRequest) -> tuple[tuple[Target, ...], ChatRequest, Booking | None, int]:
        """Route, check the key's models, cap max_tokens and book the key's limits at the
        worst case: a bound on the prompt's tokens (also returned) plus max_tokens."""
        targets = self.router.targets(request.model)
        req.model = request.model
        cap = self.settings.max_tokens
        if request.max_tokens is None or request.max_tokens <= 0 or request.max_tokens > cap:
            request = replace(request, max_tokens=cap)
        prompt_tokens = prompt_token_bound(request)
        caller = req.caller
        # Backends that share one engine between callers (the embedded model) share it fairly.
        current_caller.set(req.key_name)
        if caller is None:
            return targets, request, None, prompt_tokens
        self.keys.check_model(caller, request.model, targets[0].name)
        limits = caller.record.limits
        worst = Usage(prompt_tokens, request.max_tokens or 0)
        cost = self._worst_cost(targets, worst) if limits.budget is not None else 0.0
        return targets, request, await self.counters.reserve(caller.record.id, limits, worst.total_tokens, cost), prompt_tokens

    def _price(self, target: Target) -> Any:
        """The target's price, from this gateway's own config, looked up once per target."""
        try:
            return self._prices[target.name]
        except KeyError:
            from ..prices import price_for

            price = self._prices[target.name] = price_for(target.provider.name, target.model_id, overrides=self.client.prices)
            return price

    def _worst_cost(self, targets: tuple[Target, ...], usage: Usage) -> float:
        from ..prices import cost

        worst = 0.0
        for target in targets:
            value = cost(usage, self._price(target))
            if value is None:
                raise PermissionDeniedError(
                    f"model {target.name!r} has no known price, and this gateway key has a budget",
                    hint="use a priced model, or add its price under [prices] in the config",
                )
            worst = max(worst, value)
        return worst

    async def _settle(self, req: Request, booking: Booking | None, target: Target | None, usage: Usage | None) -> None:
        usage = usage or Usage()
        req.usage = usage
        spent = 0.0
        if target is not None and (usage.input_tokens or usage.output_tokens):
            from ..prices import cost

            spent = cost(usage, self._price(target)) or 0.0
        req.cost = spent
        self.metrics.usage(req.model, req.key_name, usage.input_tokens, usage.output_tokens, spent)
        caller = req.caller
        if caller is not None:
            await self.counters.settle(booking, usage.input_tokens + usage.output_tokens, spent)
            self.keys.record_usage(caller, usage.input_tokens, usage.output_tokens, spent)

    def _log_call(self, req: Request, request: ChatRequest, target: Target, response: ChatResponse | None, error: BaseException | None,
                  cached: bool = False) -> None:
        if self.call_log is not None:
            self.call_log.record(
                request, response, error, provider=target.provider.name, model=target.model_id,
                source="gateway", latency=time.perf_counter() - req.started, key_name=req.caller.name if req.caller else None,
                cached=cached, prices=self.client.prices,
            )

    async def _from_cache(self, request: ChatRequest) -> ChatResponse | None:
        """The cached answer to this request, read in a worker thread (a file or a database)."""
        if self.cache is None:
            return None
        return await asyncio.to_thread(self.cache.get, request)

    def _to_cache(self, request: ChatRequest, response: ChatResponse) -> None:
        """Keep an answer for the next identical request, written in a worker thread; a
        failed write costs only a later miss."""
        if self.cache is not None:
            future = asyncio.get_running_loop().run_in_executor(None, self.cache.put, request, response)
            future.add_done_callback(_log_cache_failure)

    async def chat(self, req: Request, request: ChatRequest) -> ChatResponse:
        """A whole answer, from the first target that does not fail with a fallback error."""
        targets, request, booking, prompt_tokens = await self._admit(req, request)
        interrupt = _Interrupt()
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.settings.request_timeout, interrupt.fire, "timeout")
        # The body is read: the next message is the caller hanging up, and then the backend
        # call is cancelled (a remote one is not billed for, a local one frees its slot).
        watcher = loop.create_task(self._watch_disconnect(req, interrupt))
        target = targets[0]
        response: ChatResponse | None = None
        cut_off = False  # stopped while the upstream worked: what it used is unknown
        cached = False  # answered from the response cache: it costs the key no tokens and nothing
        try:
            response = await self._from_cache(request)
            if response is not None:
                cached = True
                response.provider = target.provider.name
                self._log_call(req, request, target, response, None, cached=True)
                return response
            for i, target in enumerate(targets):
                try:
                    response = await target.backend.achat(request, target.model_id)
                except ModelportError as exc:
                    if i + 1 < len(targets) and may_fall_back(exc):
                        log.info("%s %s failed (%s); falling back to %s", req.id, target.name, exc.kind, targets[i + 1].name)
                        continue
                    self._log_call(req, request, target, None, exc)
                    raise
                response.provider = target.provider.name
                self._log_call(req, request, target, response, None)
                self._to_cache(request, response)
                return response
            raise AssertionError("unreachable: the last target returns or raises")
        except asyncio.CancelledError:
            cut_off = True
            reason = interrupt.absorb()
            if reason is None:
                raise
            error = _client_gone() if reason == "disconnect" else _timeout_error(self.settings.request_timeout)
            self._log_call(req, request, target, None, error)
            raise error from None
        finally:
            timer.cancel()
            interrupt.disarm()
            watcher.cancel()
            answer = response.message if response is not None else None
            usage = Usage() if cached else settlement(answer, response.usage if response is not None else None, prompt_tokens,
                                                       request.max_tokens or 0, complete=True, cut_off=cut_off)
            await self._settle(req, booking, target, usage)

    async def stream(self, req: Request, request: ChatRequest, encoder: Any) -> None:
        """Stream the answer through the dialect's encoder.

        Nothing is sent until the first event arrives, so failures before it (unknown model,
        upstream 429) still get a proper status, and fallbacks still apply. After that, a
        failure ends the stream with the dialect's error event.
        """
        targets, request, booking, prompt_tokens = await self._admit(req, request)
        loop = asyncio.get_running_loop()
        interrupt = _Interrupt()
        timer = loop.call_later(self.settings.request_timeout, interrupt.fire, "timeout")
        watcher: asyncio.Task[None] | None = None
        events: Any = None
        target = targets[0]
        acc = StreamAccumulator(request.model, target.provider.name)
        error: ModelportError | None = None
        send = req.send
        # What to charge: the delivered answer once one has begun, else the worst case if the
        # upstream was stopped while it worked (cut off), else nothing (an upstream error or
        # an answer replayed from the response cache).
        cut_off = complete = cached = False
        try:
            try:
                hit = await self._from_cache(request)
                cached = hit is not None
                events, first, target = await (_replay(hit, target) if hit is not None else self._open_stream(req, request, targets))
                acc.provider = target.provider.name
                self.metrics.time_to_first_token(req.model, time.perf_counter() - req.started)
                req.status = 200
                await send({"type": "http.response.start", "status": 200, "headers": [*_stream_headers(encoder), req._id_header]})
                watcher = loop.create_task(self._watch_disconnect(req, interrupt))
                if first is not None:
                    acc.add(first)
                    chunk = encoder.encode(first)
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    async for event in events:
                        acc.add(event)
                        chunk = encoder.encode(event)
                        if chunk:
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                tail = encoder.close()
                complete = True
            except asyncio.CancelledError:
                cut_off = events is None
                reason = interrupt.absorb()
                if reason is None:
                    raise
                if reason == "disconnect":
                    req.status = 499
                    req.error_kind = "disconnected"
                    return
                error = _timeout_error(self.settings.request_timeout)
                if req.status == 0:
                    raise error from None
                tail = encoder.error(error)
            except ModelportError as exc:
                if req.status == 0:
                    error = exc
                    raise
                # Mid-stream: the status is sent, so the error travels as the dialect's event.
                error = exc
                log.warning("%s stream from %s broke: %s", req.id, target.name, exc)
                req.error_kind = exc.kind
                tail = encoder.error(exc)
            timer.cancel()
            flush = getattr(encoder, "flush", None)
            if flush is not None:
                await flush()  # what the last event promises (a stored response) is done first
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            timer.cancel()
            interrupt.disarm()
            if watcher is not None:
                watcher.cancel()
            if events is not None:
                await events.aclose()
            answer = acc.response(time.perf_counter() - req.started)
            usage = Usage() if cached else settlement(answer.message if events is not None else None, acc.usage, prompt_tokens,
                                                       request.max_tokens or 0, complete=complete, cut_off=cut_off)
            await self._settle(req, booking, target, usage)
            self._log_call(req, request, target, answer if error is None else None, error, cached=cached)
            if complete and error is None and not cached:
                self._to_cache(request, answer)

    async def _open_stream(self, req: Request, request: ChatRequest, targets: tuple[Target, ...]) -> tuple[Any, StreamEvent | None, Target]:
        for i, target in enumerate(targets):
            events = target.backend.astream(request, target.model_id).__aiter__()
            try:
                return events, await events.__anext__(), target
            except StopAsyncIteration:
                return events, None, target
            except ModelportError as exc:
                await events.aclose()
                if i + 1 < len(targets) and may_fall_back(exc):
                    log.info("%s %s failed (%s); falling back to %s", req.id, target.name, exc.kind, targets[i + 1].name)
                    continue
                raise
        raise AssertionError("unreachable: the last target returns or raises")

    @staticmethod
    async def _watch_disconnect(req: Request, interrupt: _Interrupt) -> None:
        """Stop generating (and free the model's slot) as soon as the caller hangs up."""
        while True:
            message = await req.receive()
            if message["type"] == "http.disconnect":
                req.disconnected = True
                interrupt.fire("disconnect")
                return

    async def embed(self, req: Request, model: str, inputs: list[str]) -> EmbeddingResponse:
        targets = self.router.targets(model)
        req.model = model
        target = targets[0]
        caller = req.caller
        booking = None
        # A bound, as for chat: bytes, plus the BOS/EOS-style markers around each input.
        tokens = text_token_bound(inputs) + MESSAGE_OVERHEAD_BOUND * len(inputs)
        if caller is not None:
            self.keys.check_model(caller, model, target.name)
            limits = caller.record.limits
            cost = self._worst_cost(targets[:1], Usage(tokens)) if limits.budget is not None else 0.0
            booking = await self.counters.reserve(caller.record.id, limits, tokens, cost)
        interrupt = _Interrupt()
        timer = asyncio.get_running_loop().call_later(self.settings.request_timeout, interrupt.fire, "timeout")
        response = None
        cut_off = False
        try:
            response = await target.backend.aembed(inputs, target.model_id)
            return response
        except asyncio.CancelledError:
            cut_off = True
            if interrupt.absorb() is None:
                raise
            raise _timeout_error(self.settings.request_timeout) from None
        finally:
            timer.cancel()
            interrupt.disarm()
            answer = Message("assistant") if response is not None else None  # embeddings answer no tokens
            usage = settlement(answer, response.usage if response is not None else None, tokens, 0, complete=True, cut_off=cut_off)
            await self._settle(req, booking, target, usage)

    async def admit_model(self, req: Request, model: str) -> Target:
        """Route a model for a request that runs no model (token counting)."""
        target = self.router.targets(model)[0]
        req.model = model
        await self._meter(req)
        if req.caller is not None:
            self.keys.check_model(req.caller, model, target.name)
        return target

    async def _meter(self, req: Request) -> None:
        """Book one request against the key's rpm, once, for an endpoint that runs no model
        (the model services book their own, with tokens and cost). Zero tokens and zero cost
        leave the key's tpm and budget as they are."""
        if req.caller is not None and not req.metered:
            req.metered = True
            await self.counters.reserve(req.caller.record.id, req.caller.record.limits, 0, 0.0)

    def list_models(self, req: Request) -> list[Any]:
        """The gateway's models that this caller may call."""
        models = self.router.list_models()
        caller = req.caller
        if caller is None or not caller.record.models:
            return models
        return [info for info in models if self._may_call(caller, info.id)]

    def find_model(self, req: Request, model: str) -> Any:
        """One model's info; a model the caller may not call does not exist for it (404)."""
        req.model = model
        caller = req.caller
        restricted = caller is not None and bool(caller.record.models)
        try:
            info = self.router.find_model(model)
        except NotFoundError:
            if not restricted:
                raise
            info = None  # the router's answer lists every model, the ones this key may not use too
        if info is None or (caller is not None and not self._may_call(caller, model)):
            raise NotFoundError(f"model {model!r} is not available to this gateway key", code="model_not_found", param="model",
                                hint="GET /v1/models lists the models this key may use")
        return info

    def _may_call(self, caller: Caller, model: str) -> bool:
        try:
            target = self.router.targets(model)[0]
        except ModelportError:
            return caller.record.allows(model)
        return caller.record.allows(model, target.name)

    # -- built-in endpoints ----------------------------------------------------------------

    async def _health(self, req: Request, _: str) -> None:
        """Liveness: 200 at once while the process serves, whatever its dependencies say (their
        last known state; a check that hangs delays /ready, never this)."""
        body: dict[str, Any] = {"status": "ok", "in_flight": self.metrics.in_flight, "pid": os.getpid()}
        if self.worker is not None:
            body["worker"] = self.worker.index
        dependencies = self.readiness.known(max_age=1.0)
        if dependencies:
            body["dependencies"] = dependencies
        await self.respond(req, body)

    async def _ready(self, req: Request, _: str) -> None:
        """Readiness: 200 when every registered dependency answers, else 503 naming the ones down."""
        dependencies = await self.readiness.status()
        down = sorted(name for name, state in dependencies.items() if state != "ok")
        body = {"status": "unavailable" if down else "ready", "dependencies": dependencies}
        if down:
            body["down"] = down
        await self.respond(req, body, 503 if down else 200)

    async def _metrics(self, req: Request, _: str) -> None:
        peers = await self._peers.read() if self._peers is not None else ()
        await self.respond(req, self.metrics.render(peers), content_type=b"text/plain; version=0.0.4; charset=utf-8")

    # -- OpenAI's Files and Batches API, run by the batch engine -----------------------------

    def _batch_root(self) -> Any:
        from pathlib import Path

        if self.settings.batch_dir:
            return Path(self.settings.batch_dir)
        from ..config import data_dir

        return data_dir() / "gateway"

    def files_api(self) -> Any:
        """Made on first use, so a gateway that never sees a batch leaves no files behind."""
        if self._files_api is None:
            from ..batch.files_api import FilesAPI

            self._files_api = FilesAPI(self._batch_root(), _BatchClient(self), records=self.settings.records,
                                       lease_seconds=self.settings.batch_lease_seconds)
        return self._files_api

    async def _batches(self, req: Request, _: str) -> None:
        from ..batch.files_api import Owner, handle

        api = self.files_api()
        caller = req.caller
        # Without a key (an open server) every caller is the one anonymous owner.
        owner = Owner() if caller is None else Owner(caller.record.id, caller.record.admin)
        body = await req.body(self.settings.max_body_bytes) if req.method == "POST" else b""
        if caller is not None and req.method == "POST" and req.path == "/v1/batches":
            _refuse_metered_batches(caller)
            await self._check_batch_models(req, api, body, owner)
        result = await handle(api, req.method, req.path, req.query, req.headers, body, owner)
        if isinstance(result, bytes):
            await self.respond(req, result, content_type=b"application/octet-stream")
        else:
            await self.respond(req, result)

    async def _check_batch_models(self, req: Request, api: Any, body: bytes, owner: Any) -> None:
        """A key limited to some models may not reach others through a batch file."""
        try:
            file_id = loads(body).get("input_file_id")
        except (JSONDecodeError, ValueError, AttributeError):
            return  # the handler answers the malformed body
        if not isinstance(file_id, str):
            return
        assert req.caller is not None
        for model in await api.file_models(file_id, owner):
            try:
                target = self.router.targets(model)[0]
            except ModelportError:
                continue  # an unknown model fails its own lines
            self.keys.check_model(req.caller, model, target.name)

    # -- lifecycle -------------------------------------------------------------------------

    async def sync_keys(self, unless_since: float | None = None) -> None:
        """Save unsaved usage, then reload every key row (one worker-thread job, in order,
        so the reloaded totals already include what was just saved). One sync at a time:
        a flood of unknown keys queues here instead of on the database."""
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            if unless_since is not None and self._synced_at >= unless_since:
                return
            self._synced_at = time.perf_counter()
            usage = self.keys.take_usage()

            def save_and_read(store: KeyStore) -> list[Any]:
                try:
                    store.add_usage(usage)
                except StateUnavailableError:
                    raise  # reported once below, not with a traceback every second
                except Exception:
                    log.exception("could not save gateway key usage; keeping it for the next try")
                    raise
                return store.records()

            try:
                records = await self.keys.run(save_and_read)
            except Exception as exc:
                self._restore_usage(usage)
                if self._keys_error is None:
                    log.warning("cannot read the gateway keys (%s); serving the last ones read for up to %g s", exc,
                                self.settings.keys_max_stale)
                self._keys_error = exc
                return
            if self._keys_error is not None:
                log.warning("the gateway keys can be read again")
                self._keys_error = None
            self.keys.load(records)

    def _restore_usage(self, usage: dict[str, list[Any]]) -> None:
        for key_id, totals in usage.items():
            current = self.keys._unsaved.setdefault(key_id, [0, 0, 0, 0.0, 0.0])
            for i in range(4):
                current[i] += totals[i]
            current[4] = max(current[4], totals[4])

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(KEY_SYNC_SECONDS)
            await self.sync_keys()

    async def startup(self) -> None:
        if self.auth_required or self.keys.store.exists():
            await self.sync_keys()
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_forever())
        if self.auth_required and not len(self.keys):
            log.warning("authentication is on but no gateway key exists: create one with `modelport keys create NAME`")
        if not await self.counters.healthy():
            # Not fatal: keys without limits still work, and the store is tried again per request.
            log.warning("the counters store %s is not answering: requests under a key's limits get 503 until it does", self.counters.name)
        if self.worker is not None:
            from .workers import PeerMetrics

            self._peers = PeerMetrics(self.worker, self.metrics)
            self._peers.start()
        # Batches a stopped or dead gateway (this one before, a sibling worker, or another
        # instance sharing the records) left open carry on, now and whenever a lease runs out.
        await self.files_api().startup()

    async def shutdown(self) -> None:
        if self._peers is not None:
            await self._peers.stop()
        if self._sync_task is not None:
            self._sync_task.cancel()
            self._sync_task = None
            await self.sync_keys()
        if self._files_api is not None:
            await self._files_api.shutdown()
        await self.responses_door.aclose()
        await self.console.aclose()
        await self.client.aclose()
        await self.counters.close()
        loop = asyncio.get_running_loop()
        if self.cache is not None:
            await loop.run_in_executor(None, self.cache.close)
        if self.call_log is not None:
            await loop.run_in_executor(None, self.call_log.flush, 5.0)
        await self.keys.aclose()

    async def _lifespan(self, receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]]) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return



class _BatchClient:
    """The batch engine's client inside the gateway: every model routes exactly as a chat
    call does (aliases, the offered list, fallbacks, no local file paths), on the gateway's
    own backends, which never retry (the engine does)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.config = gateway.client.config

    def resolve(self, model: str | None) -> tuple[Any, str]:
        target = self.gateway.router.targets(model or DEFAULT_NAME)[0]
        return target.provider, target.model_id

    def request(self, model: str | None, prompt: Any = None, **params: Any) -> ChatRequest:
        return self.gateway.client.request(model, prompt, **params)

    async def send(self, request: ChatRequest) -> ChatResponse:
        targets = self.gateway.router.targets(request.model or DEFAULT_NAME)
        cap = self.gateway.settings.max_tokens
        if request.max_tokens is None or request.max_tokens <= 0 or request.max_tokens > cap:
            request = replace(request, max_tokens=cap)
        for i, target in enumerate(targets):
            try:
                response = await target.backend.achat(request, target.model_id)
            except ModelportError as exc:
                if i + 1 < len(targets) and may_fall_back(exc):
                    continue
                raise
            response.provider = target.provider.name
            return response
        raise AssertionError("unreachable: the last target returns or raises")

    async def aclose(self) -> None:
        """The gateway closes its client itself, after the batches have stopped."""


async def _replay(response: ChatResponse, target: Target) -> tuple[Any, StreamEvent | None, Target]:
    """A cached answer as ``_open_stream`` gives a live one: its events, the first taken."""
    from ..cache import replay

    async def events() -> Any:
        for event in replay(response):
            yield event

    stream = events()
    return stream, await stream.__anext__(), target


def _log_cache_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("could not keep an answer in the response cache: %s", future.exception())


def _not_allowed(req: Request, allowed: tuple[str, ...]) -> MethodNotAllowedError:
    return MethodNotAllowedError(f"{req.method} is not allowed on {req.path}; use {' or '.join(allowed)}", allow=allowed)


def _refuse_metered_batches(caller: Any) -> None:
    """Batch rows are not yet booked against a key's limits, so a key with an rpm, tpm or
    budget may not start batches: its limits would not hold."""
    limits = caller.record.limits
    if limits.rpm is not None or limits.tpm is not None or limits.budget is not None:
        raise PermissionDeniedError(
            f"the gateway key {caller.name!r} has rate or budget limits, which batches cannot be metered against yet",
            hint="start batches with a key made without --rpm, --tpm or --budget",
        )
