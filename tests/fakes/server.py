"""A scriptable loopback HTTP server for fake upstreams.

It runs aiohttp on its own event loop in a background thread, so synchronous tests, async
tests and benchmarks can all call it like a real provider::

    def chat(request: Recorded) -> Reply:
        return Reply.json({"answer": request.body["question"]})

    with FakeServer() as server:
        server.route("POST", "/v1/chat", chat)
        server.inject(http_error(429, {"error": "slow down"}, {"retry-after": "1"}))
        ...  # the first call gets the 429, the next one the answer
        assert server.request_count == 2

Routes are regular expressions matched against the whole path; named groups arrive in
``Recorded.params``. Faults queued with ``inject`` replace or damage the next answers, one
fault per request, in order. The dialect fakes (``openai_upstream`` and friends) are thin
route tables on top of this.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from aiohttp import web

try:
    import orjson

    _loads = orjson.loads
    _dumps = orjson.dumps
except ImportError:  # pragma: no cover - orjson is present in the test environment
    _loads = json.loads

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()


@dataclass(slots=True)
class Recorded:
    """One request as the server saw it. Header names are lower-case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw: bytes
    params: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Reply:
    """What a route answers: a whole body, or ``chunks`` written and flushed one by one."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, _dumps(value), {"content-type": "application/json", **(headers or {})})

    @classmethod
    def text(cls, text: str, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, text.encode(), {"content-type": "text/plain", **(headers or {})})

    @classmethod
    def stream(cls, chunks: Iterable[bytes], content_type: str = "text/event-stream", headers: dict[str, str] | None = None) -> Reply:
        head = {"content-type": content_type, "cache-control": "no-cache", **(headers or {})}
        return cls(200, b"", head, list(chunks))


Handler = Callable[[Recorded], Reply]


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted misbehaviour; build one with the functions below."""

    kind: str
    reply: Reply | None = None
    after: int = 0


def http_error(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> Fault:
    """Answer with this status instead of running the route. Dicts and lists go out as JSON."""
    if isinstance(body, (dict, list)):
        return Fault("reply", Reply.json(body, status, headers))
    raw = body.encode() if isinstance(body, str) else body
    return Fault("reply", Reply(status, raw, {"content-type": "text/plain", **(headers or {})}))


def drop_connection() -> Fault:
    """Close the connection without sending a single byte of response."""
    return Fault("drop")


def malformed_json(status: int = 200) -> Fault:
    """A JSON content type over a body that is not JSON."""
    return Fault("reply", Reply(status, b'{"id": "truncated", "choices": [', {"content-type": "application/json"}))


def wrong_shape(value: Any) -> Fault:
    """A 200 whose body is valid JSON of the wrong shape (``{"choices": "nope"}``, a list...)."""
    return Fault("reply", Reply.json(value))


def bad_stream(*events: Any) -> Fault:
    """A 200 event stream of these ``data:`` payloads (JSON values, or raw strings sent as
    they are), e.g. one good chunk and then ``[1, 2]``."""
    body = b"".join(b"data: " + (e.encode() if isinstance(e, str) else _dumps(e)) + b"\n\n" for e in events)
    return Fault("reply", Reply(200, body, {"content-type": "text/event-stream"}))


def stall_stream(after: int) -> Fault:
    """Send the route's first ``after`` chunks, then go silent until the client gives up."""
    return Fault("stall", after=after)


def cut_stream(after: int) -> Fault:
    """Send the route's first ``after`` chunks, then drop the connection mid-response."""
    return Fault("cut", after=after)


class FakeServer:
    """The loopback server. ``url`` is valid between ``start()`` and ``stop()``.

    ``latency`` (seconds) delays every answer. ``history`` bounds how many requests are kept
    in ``requests`` so a benchmark can run for long; ``request_count`` counts them all.
    """

    def __init__(self, latency: float = 0.0, history: int = 10_000) -> None:
        self.latency = latency
        self.requests: deque[Recorded] = deque(maxlen=history)
        self.request_count = 0
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    # -- scripting -------------------------------------------------------------------------

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes.append((method.upper(), re.compile(path), handler))

    def inject(self, *faults: Fault, times: int = 1) -> None:
        """Queue faults for the next requests: each request consumes one, in order."""
        with self._lock:
            for _ in range(times):
                self._faults.extend(faults)

    def clear(self) -> None:
        """Forget recorded requests and pending faults."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.request_count = 0

    @property
    def last_request(self) -> Recorded:
        return self.requests[-1]

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(sock, ready, failure), name=f"fake-server-{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def _serve(self, sock: socket.socket, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open(sock))
        except BaseException as exc:  # surfaced to start() in the caller's thread
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    async def _open(self, sock: socket.socket) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        if self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = None

    async def _close(self) -> None:
        self._stopping.set()  # releases stalled streams
        await self._runner.cleanup()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        recorded = Recorded(request.method, request.path, dict(request.query), {k.lower(): v for k, v in request.headers.items()}, _parse(raw), raw)
        with self._lock:
            self.requests.append(recorded)
            self.request_count += 1
            fault = self._faults.popleft() if self._faults else None
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault is not None and fault.kind == "drop":
            return await self._drop(request)
        if fault is not None and fault.kind == "reply":
            return _response(fault.reply)
        reply = self._answer(recorded)
        if fault is None:
            return _response(reply) if reply.chunks is None else await self._stream(request, reply)
        return await self._damaged(request, reply, fault)

    def _answer(self, recorded: Recorded) -> Reply:
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(recorded.path)
            if match and method in (recorded.method, "*"):
                recorded.params = match.groupdict()
                return handler(recorded)
        return Reply.json({"error": f"no fake route for {recorded.method} {recorded.path}"}, 404)

    async def _stream(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        await response.prepare(request)
        for chunk in reply.chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _damaged(self, request: web.Request, reply: Reply, fault: Fault) -> web.StreamResponse:
        # Damage applies to whole bodies too: they count as one chunk.
        chunks = reply.chunks if reply.chunks is not None else [reply.body]
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        await response.prepare(request)
        for chunk in chunks[: fault.after]:
            await response.write(chunk)
        if fault.kind == "stall":
            await self._stopping.wait()
        return await self._drop(request, response)

    async def _drop(self, request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
        if request.transport is not None:  # None once the client has already hung up
            request.transport.abort()
        # aiohttp wants a response object back; nothing more reaches the closed socket.
        return response or web.Response()


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return _loads(raw)
    except ValueError:
        return None


def _response(reply: Reply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
