"""HTTP transports: pooled connections, one sync and one async, with the same small API.

Chosen by measurement: httpx's sync client is fast sequentially, while its
async pool collapses under concurrency (256 calls/s at 50 in flight); aiohttp sustains
about 8,000. So sync calls go through httpx and async calls through aiohttp. Both are
imported only when a transport is first built.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, AsyncGenerator, AsyncIterator, Iterator

from .errors import ConnectionError, TimeoutError


# Headers added to every async request made in this context: the gateway puts its hop count
# here for the upstream calls of one incoming request, so a routing loop is seen and stopped.
UPSTREAM_HEADERS: ContextVar[dict[str, str] | None] = ContextVar("modelport_upstream_headers", default=None)


def _with_context_headers(headers: dict[str, str]) -> dict[str, str]:
    extra = UPSTREAM_HEADERS.get()
    return {**headers, **extra} if extra else headers


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``read`` bounds the wait between bytes; ``total`` bounds a whole call,
    retries included (None: no bound)."""

    connect: float = 5.0
    read: float = 600.0
    total: float | None = None

    @classmethod
    def of(cls, value: Timeouts | float | None) -> Timeouts:
        if isinstance(value, Timeouts):
            return value
        if value is None:
            return cls()
        return cls(connect=min(5.0, float(value)), read=float(value), total=float(value))


@dataclass(slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    content: bytes


class SyncTransport:
    def __init__(self, timeouts: Timeouts, max_connections: int = 100) -> None:
        import httpx

        self._httpx = httpx
        self._timeouts = timeouts
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None, cap: float | None = None) -> RawResponse:
        """``cap`` (seconds) shortens every wait of this request, so a deadline holds."""
        with self._errors(url):
            r = self._client.request(method, url, headers=headers, content=body, timeout=self._timeout(cap))
            return RawResponse(r.status_code, _lower(r.headers), r.content)

    @contextmanager
    def stream(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
               cap: float | None = None) -> Iterator[tuple[RawResponse, Iterator[bytes]]]:
        with self._errors(url), self._client.stream(method, url, headers=headers, content=body, timeout=self._timeout(cap)) as r:
            head = RawResponse(r.status_code, _lower(r.headers), b"")
            if r.status_code >= 400:
                head.content = r.read()
            yield head, self._chunks(r, url)

    def _chunks(self, response: Any, url: str) -> Iterator[bytes]:
        with self._errors(url):
            yield from response.iter_raw()

    def _timeout(self, cap: float | None) -> Any:
        if cap is None:
            return self._httpx.USE_CLIENT_DEFAULT
        t = self._timeouts
        return self._httpx.Timeout(min(t.read, cap), connect=min(t.connect, cap))

    @contextmanager
    def _errors(self, url: str) -> Iterator[None]:
        httpx = self._httpx
        try:
            yield
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"timed out talking to {url}: {type(exc).__name__}", hint="raise the timeout or try again") from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise _connection_error(url, exc) from None

    def close(self) -> None:
        self._client.close()


class AsyncTransport:
    """aiohttp session, created inside the running loop and rebuilt if the loop changes
    (``asyncio.run`` twice in a notebook must just work)."""

    def __init__(self, timeouts: Timeouts, max_connections: int = 256) -> None:
        self._timeouts = timeouts
        self._max_connections = max_connections
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_session(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            import aiohttp

            self._aiohttp = aiohttp
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, connect=self._timeouts.connect, sock_read=self._timeouts.read),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
            self._loop = loop
        return self._session

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None, cap: float | None = None) -> RawResponse:
        """``cap`` (seconds) shortens every wait of this request, so a deadline holds."""
        session = self._get_session()
        headers = _with_context_headers(headers)
        async with self._errors(url):
            async with session.request(method, url, headers=headers, data=body, **self._timeout(cap)) as r:
                content = await r.read()
                return RawResponse(r.status, _lower(r.headers), content)

    @asynccontextmanager
    async def stream(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
                     cap: float | None = None) -> AsyncIterator[tuple[RawResponse, AsyncGenerator[bytes, None]]]:
        session = self._get_session()
        headers = _with_context_headers(headers)
        async with self._errors(url):
            async with session.request(method, url, headers=headers, data=body, **self._timeout(cap)) as r:
                head = RawResponse(r.status, _lower(r.headers), b"")
                if r.status >= 400:
                    head.content = await r.read()
                yield head, self._chunks(r, url)

    def _timeout(self, cap: float | None) -> dict[str, Any]:
        if cap is None:
            return {}
        t = self._timeouts
        return {"timeout": self._aiohttp.ClientTimeout(total=None, connect=min(t.connect, cap), sock_read=min(t.read, cap))}

    async def _chunks(self, response: Any, url: str) -> AsyncGenerator[bytes, None]:
        async with self._errors(url):
            async for chunk in response.content.iter_any():
                yield chunk

    @asynccontextmanager
    async def _errors(self, url: str) -> AsyncIterator[None]:
        import aiohttp

        try:
            yield
        except asyncio.TimeoutError:
            raise TimeoutError(f"timed out talking to {url}", hint="raise the timeout or try again") from None
        except aiohttp.ClientError as exc:
            raise _connection_error(url, exc) from None

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def _connection_error(url: str, exc: BaseException) -> ConnectionError:
    """The error for a connection that failed, with a hint for its cause: the OS's and the
    TLS library's words are in the message (the URL too, kept from a gateway's callers)."""
    return ConnectionError(f"connection to {url} failed: {exc or type(exc).__name__}", hint=_connection_hint(exc))


def _connection_hint(exc: BaseException) -> str:
    text = f"{type(exc).__name__} {exc}".lower()
    if "proxy" in text:
        return "the proxy failed or refused: check HTTPS_PROXY, HTTP_PROXY and NO_PROXY"
    if any(m in text for m in ("name or service not known", "nodename nor servname", "temporary failure in name resolution",
                                "getaddrinfo", "no address associated", "dns")):
        return "the host name in the base URL does not resolve: check its spelling, your network and DNS"
    if any(m in text for m in ("ssl", "certificate", "tls")):
        return "the TLS handshake failed: check http:// against https:// in the base URL, and the server's " \
               "certificate (SSL_CERT_FILE names a private CA)"
    if any(m in text for m in ("refused", "connect call failed")):
        return "nothing is listening there: is the server running, and is the base URL's port right?"
    return "check the base URL and your network"


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}
