"""uvicorn's httptools protocol with the two bounds it lacks on a request's head.

httptools buffers a header until it is whole and uvicorn sets no limit, so one 64 MiB
header sent without a key was held in memory before the 401; and uvicorn's keep-alive
timeout starts only after a response, so a client that trickles its headers kept its
connection for ever. Here the head (request line and headers) may hold at most
``max_header_bytes`` (else 431) and must be whole within ``header_timeout`` seconds of
the connection opening or the request's first byte (else 408). Bodies are bounded by the
app's body reader (size and idle time).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import BadRequestError
from .settings import Settings

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")


def _response(status: int, reason: str, message: str, code: str) -> bytes:
    from .. import dialects

    # Before the head is whole there is no path to tell the caller's dialect by: OpenAI's.
    _, body, _ = dialects.get("openai").encode_error(BadRequestError(message, status=status, code=code))
    from ..jsonio import dumps

    payload = dumps(body)
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
            "connection: close\r\n\r\n").encode() + payload


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Set ``max_header_bytes`` and ``header_timeout`` on a subclass (``protocol_class``)."""

    max_header_bytes = 64 * 1024
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._head_tail = b""
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            if self._head_timer is None:
                self._arm_head_timer()
            room = self.max_header_bytes - self._head_bytes
            if len(data) > room:
                # Over the limit unless the head ends within it (the rest being body).
                end = _END_OF_HEAD.search(self._head_tail + data)
                if end is None or end.end() - len(self._head_tail) > room:
                    self._refuse(431, "Request Header Fields Too Large",
                                 f"the request's headers are over this gateway's limit of {self.max_header_bytes} bytes",
                                 "request_header_fields_too_large")
                    return
            self._head_bytes += len(data)
            self._head_tail = data[-3:]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # Whatever the app did (it may have answered before reading the body), the next
        # bytes start a new head; its timer starts with its first byte.
        self._head_open, self._head_bytes, self._head_tail = True, 0, b""
        super().on_message_complete()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_open and self._head_bytes:
            self._refuse(408, "Request Timeout", f"the request's headers did not arrive within {self.header_timeout:g} s",
                         "request_timeout")
        elif self._head_open and self.cycle is None:
            self.transport.close()  # a connection that never sent a request

    def _refuse(self, status: int, reason: str, message: str, code: str) -> None:
        self._disarm_head_timer()
        self._head_open = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            transport.write(_response(status, reason, message, code))
        transport.close()


def protocol_class(max_header_bytes: int, header_timeout: float) -> type[BoundedHttpToolsProtocol]:
    """The protocol for uvicorn's ``http=`` with these bounds."""
    return type("GatewayHttpProtocol", (BoundedHttpToolsProtocol,),
                {"max_header_bytes": max_header_bytes, "header_timeout": header_timeout})


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's settings for serving the gateway ``app`` as ``settings`` say."""
    import importlib.util

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # httptools (a base dependency) with the header size and time bounds uvicorn lacks.
        http=protocol_class(settings.max_header_bytes, settings.header_timeout),
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level="warning",
        timeout_keep_alive=30,
        # Annotated int, used as asyncio.timeout's seconds: a fraction works as well.
        timeout_graceful_shutdown=settings.graceful_timeout,  # type: ignore[arg-type]
    )
