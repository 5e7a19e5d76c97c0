"""HttpBackend: any provider reached over HTTP, through its dialect.

The only provider-specific knowledge here comes from the provider row (URL, auth header,
fixed headers) and the dialect module; the retry loop is the sans-I/O ``RetryPolicy``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncGenerator, Iterator

from .. import __version__, dialects
from ..dialects.base import ClientDialect, EmbeddingsDialect
from ..errors import (BadRequestError, ConnectionError, MissingKeyError, ModelportError, StreamError, TimeoutError,
                      UpstreamProtocolError, redact)
from ..jsonio import JSONDecodeError, dumps, loads
from ..providers import Provider, base_url, gateway_in_the_way
from ..retry import RetryPolicy, is_retryable_status
from ..sse import SSEParser
from ..transport import AsyncTransport, RawResponse, SyncTransport, Timeouts
from ..types import ChatRequest, ChatResponse, EmbeddingResponse, ModelInfo, StreamEvent


# Response headers that carry the provider's rate-limit counters: OpenAI's and Groq's
# x-ratelimit-*, Anthropic's anthropic-ratelimit-*.
_RATE_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")


USER_AGENT = f"modelport/{__version__}"


class HttpBackend:
    def __init__(
        self,
        provider: Provider,
        *,
        api_key: str | None = None,
        url: str | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self.dialect: ClientDialect = dialects.get(provider.dialect)
        self.base_url = base_url(provider, url)
        self._key = api_key
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        # One User-Agent for sync and async calls, so providers and proxies see who is calling.
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **provider.auth_headers(api_key)}
        self._sync: SyncTransport | None = None
        self._async: AsyncTransport | None = None

    def __repr__(self) -> str:
        return f"HttpBackend({self.name!r}, {self.base_url!r})"

    @property
    def missing_key(self) -> bool:
        return self.provider.key_required and not self._key

    def require_key(self) -> None:
        """Fail before anything is sent, with the hint that names the fix."""
        if self.missing_key:
            raise MissingKeyError(f"no API key for {self.name}", provider=self.name, hint=self.provider.key_hint())

    # -- request preparation -------------------------------------------------------------

    def chat_dialect(self, model_id: str) -> ClientDialect:
        """The dialect chat calls to this model speak: the provider's, unless its table (or
        the config) names another for this model (e.g. models OpenAI serves only over Responses)."""
        name = self.provider.dialect_for(model_id)
        return self.dialect if name == self.provider.dialect else dialects.get(name)

    def _prepare(self, request: ChatRequest, model_id: str, stream: bool) -> tuple[str, bytes, dict[str, str]]:
        """The URL, body and headers of a chat call. The caller's headers of this dialect
        (``ChatRequest.dialect_headers``) go along; the provider's own win over them."""
        self.require_key()
        if request.stream != stream:
            request = _with_stream(request, stream)
        if self.provider.extra:
            request = _with_extra(request, dict(self.provider.extra))
        dialect = self.chat_dialect(model_id)
        if request.auto_cache or self.provider.auto_cache:
            from ..prompt_cache import for_upstream

            request = for_upstream(request, dialect, self.provider.auto_cache)
        body = dialect.encode_request(request, model_id)
        forwarded = request.dialect_headers.get(self.provider.dialect_for(model_id))
        headers = {**forwarded, **self._headers} if forwarded else self._headers
        return self.base_url + dialect.chat_path(model_id, stream), dumps(body), headers

    def _error(self, raw: RawResponse) -> ModelportError:
        try:
            body: Any = loads(raw.content) if raw.content else None
        except JSONDecodeError:
            body = _html_summary(raw) or raw.content.decode("utf-8", "replace")
        err = self.dialect.decode_error(raw.status, body, raw.headers, self.name)
        # Providers echo the key they received in 401 messages: scrub it from everything the
        # error shows, including args (repr, tracebacks of pickled errors) and the raw body.
        err.message = redact(err.message, [self._key])
        err.args = (err.message, *err.args[1:])
        err.body = _redact_value(err.body, [self._key])
        if err.kind == "authentication" and not err.hint:
            err.hint = self.provider.key_hint()
        elsewhere = gateway_in_the_way(self.provider, self.base_url, raw.headers)
        if elsewhere is not None:
            # The gateway's own message ("models on this gateway: ...") reads as LM Studio's.
            err.hint = elsewhere
        return err

    def _json_object(self, raw: RawResponse) -> dict[str, Any]:
        """The body of a successful answer; dialects read objects, so anything else (not
        JSON, a list, a string) is the upstream breaking its protocol."""
        try:
            body = loads(raw.content)
        except (JSONDecodeError, ValueError):
            body = None
        if not isinstance(body, dict):
            raise UpstreamProtocolError(f"{self.name} answered with invalid JSON", provider=self.name,
                                        hint="the server is not speaking the expected API; check its base URL")
        return body

    def _decode(self, raw: RawResponse, started: float, dialect: ClientDialect) -> ChatResponse:
        response = dialect.decode_response(self._json_object(raw), self.name)
        response.latency = time.perf_counter() - started
        response.rate_limits = {k: v for k, v in raw.headers.items() if k.startswith(_RATE_LIMIT_PREFIXES)} or None
        return response

    def _deadline(self) -> float | None:
        return time.monotonic() + self.timeouts.total if self.timeouts.total else None

    def _delay_or_raise(self, attempt: int, error: ModelportError, retryable: bool, deadline: float | None) -> float:
        """Seconds to wait before the next attempt; raises ``error`` when there is none."""
        delay = self.retry.delay(attempt, error.retry_after) if retryable else None
        if delay is None or (deadline is not None and time.monotonic() + delay > deadline):
            error.provider = error.provider or self.name
            raise self._without_url(error)
        return delay

    def _without_url(self, error: ModelportError) -> ModelportError:
        """Transport errors name the URL they failed on, which may be an internal address a
        gateway's callers must not see: the message names the provider instead, and the URL
        moves to ``detail`` (shown by str() and in logs, never encoded for a caller)."""
        if isinstance(error, (ConnectionError, TimeoutError)) and self.base_url in error.message:
            what = "timed out" if isinstance(error, TimeoutError) else "could not be reached"
            error.detail = error.message
            error.message = f"the upstream {self.name} {what}"
            error.args = (error.message, *error.args[1:])
        return error

    def _status_error(self, raw: RawResponse) -> tuple[ModelportError, bool]:
        err = self._error(raw)
        return err, is_retryable_status(raw.status, raw.headers) and err.kind != "quota"

    # -- sync ----------------------------------------------------------------------------

    def _sync_transport(self) -> SyncTransport:
        if self._sync is None:
            self._sync = SyncTransport(self.timeouts)
        return self._sync

    def _post(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> RawResponse:
        transport, deadline, attempt = self._sync_transport(), self._deadline(), 0
        while True:
            try:
                raw = transport.request("POST", url, headers or self._headers, body, _remaining(deadline))
                if raw.status < 400:
                    return raw
                err, retryable = self._status_error(raw)
            except ModelportError as exc:
                err, retryable = exc, True
            delay = self._delay_or_raise(attempt, err, retryable, deadline)
            time.sleep(delay)
            attempt += 1

    def chat(self, request: ChatRequest, model_id: str) -> ChatResponse:
        started = time.perf_counter()
        url, body, headers = self._prepare(request, model_id, False)
        return self._decode(self._post(url, body, headers), started, self.chat_dialect(model_id))

    def stream(self, request: ChatRequest, model_id: str) -> Iterator[StreamEvent]:
        url, body, headers = self._prepare(request, model_id, True)
        transport, deadline, attempt = self._sync_transport(), self._deadline(), 0
        while True:
            began = False
            try:
                with transport.stream("POST", url, headers, body, _remaining(deadline)) as (head, chunks):
                    if head.status < 400:
                        # From the first byte on, a failure is the caller's to see: no retry.
                        began = True
                        yield from self._events(chunks, self.chat_dialect(model_id))
                        return
                    err, retryable = self._status_error(head)
            except ModelportError as exc:
                if began:
                    raise
                err, retryable = exc, True
            delay = self._delay_or_raise(attempt, err, retryable, deadline)
            time.sleep(delay)
            attempt += 1

    def _events(self, chunks: Iterator[bytes], dialect: ClientDialect) -> Iterator[StreamEvent]:
        reader = _EventReader(dialect)
        try:
            for chunk in chunks:
                yield from reader.feed(chunk)
            yield from reader.close()
        except ModelportError as exc:
            raise _broken_stream(self._without_url(exc), self.name) from None

    # -- async ---------------------------------------------------------------------------

    def _async_transport(self) -> AsyncTransport:
        if self._async is None:
            self._async = AsyncTransport(self.timeouts)
        return self._async

    async def _apost(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> RawResponse:
        return await self._asend("POST", url, body, headers or self._headers)

    async def arequest(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json") -> RawResponse:
        """Any other call on the provider's API (the native batch APIs use it), with the same
        key, retries and error mapping as chat; ``path`` is relative to the base URL."""
        self.require_key()
        return await self._asend(method, self.base_url + path, body, {**self._headers, "Content-Type": content_type})

    async def _asend(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> RawResponse:
        transport, deadline, attempt = self._async_transport(), self._deadline(), 0
        while True:
            try:
                raw = await transport.request(method, url, headers, body, _remaining(deadline))
                if raw.status < 400:
                    return raw
                err, retryable = self._status_error(raw)
            except ModelportError as exc:
                err, retryable = exc, True
            delay = self._delay_or_raise(attempt, err, retryable, deadline)
            await asyncio.sleep(delay)
            attempt += 1

    async def achat(self, request: ChatRequest, model_id: str) -> ChatResponse:
        started = time.perf_counter()
        url, body, headers = self._prepare(request, model_id, False)
        return self._decode(await self._apost(url, body, headers), started, self.chat_dialect(model_id))

    async def astream(self, request: ChatRequest, model_id: str) -> AsyncGenerator[StreamEvent, None]:
        url, body, headers = self._prepare(request, model_id, True)
        transport, deadline, attempt = self._async_transport(), self._deadline(), 0
        while True:
            began = False
            try:
                async with transport.stream("POST", url, headers, body, _remaining(deadline)) as (head, chunks):
                    if head.status < 400:
                        began = True
                        reader = _EventReader(self.chat_dialect(model_id))
                        try:
                            async for chunk in chunks:
                                for ev in reader.feed(chunk):
                                    yield ev
                            for ev in reader.close():
                                yield ev
                        except ModelportError as exc:
                            raise _broken_stream(self._without_url(exc), self.name) from None
                        finally:
                            # Closed here, on the running loop: left to the garbage collector,
                            # a stream a decoder refused mid-way fails to close at loop shutdown.
                            await chunks.aclose()
                        return
                    err, retryable = self._status_error(head)
            except ModelportError as exc:
                if began:
                    raise
                err, retryable = exc, True
            delay = self._delay_or_raise(attempt, err, retryable, deadline)
            await asyncio.sleep(delay)
            attempt += 1

    # -- embeddings and models -----------------------------------------------------------

    def embed(self, inputs: list[str], model_id: str) -> EmbeddingResponse:
        dialect, url, body = self._embed_request(inputs, model_id)
        return dialect.decode_embeddings_response(self._json_object(self._post(url, body)), self.name)

    async def aembed(self, inputs: list[str], model_id: str) -> EmbeddingResponse:
        dialect, url, body = self._embed_request(inputs, model_id)
        return dialect.decode_embeddings_response(self._json_object(await self._apost(url, body)), self.name)

    def _embed_request(self, inputs: list[str], model_id: str) -> tuple[EmbeddingsDialect, str, bytes]:
        dialect = self.dialect
        if not isinstance(dialect, EmbeddingsDialect):
            # Anthropic's API has no embeddings endpoint: the caller's choice of model, a 400.
            raise BadRequestError(f"{self.name} has no embeddings API, so {model_id!r} cannot embed", param="model",
                                  hint="use an embedding model of a provider that offers one, e.g. openai/text-embedding-3-small")
        self.require_key()
        path, body = dialect.encode_embeddings_request(inputs, model_id)
        return dialect, self.base_url + path, dumps(body)

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(m, self.name, self.name) for m in self.provider.models]

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
        self.close()


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before the call's ``total`` deadline: the cap on every wait of an attempt."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.001)


def _redact_value(value: Any, secrets: list[str | None]) -> Any:
    """``value`` (a parsed JSON body) with every secret masked in every string."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v, secrets) for v in value]
    return value


def _with_stream(request: ChatRequest, stream: bool) -> ChatRequest:
    from dataclasses import replace

    return replace(request, stream=stream)


def _html_summary(raw: RawResponse) -> str | None:
    """A proxy's or server's HTML error page, as one line: its status and title. Printed
    whole it buries the one fact that matters under a page of markup."""
    import re

    head = raw.content[:4096].decode("utf-8", "replace")
    if not re.search(r"<(!doctype html|html|head|body)\b", head, re.I):
        return None
    title = re.search(r"<title[^>]*>(.*?)</title>", head, re.I | re.S)
    # No title: the page's first words, without its markup, scripts and styles.
    shown = title.group(1) if title else re.sub(r"<(script|style)\b.*?</\1>|<[^>]*>", " ", head, flags=re.I | re.S)
    text = " ".join(shown.split())[:200]
    return f"HTTP {raw.status}" + (f": {text}" if text else "") + " (an HTML page, not the API's JSON: is the base URL right?)"


def _with_extra(request: ChatRequest, defaults: dict[str, Any]) -> ChatRequest:
    """The provider's configured extra fields under the request's own."""
    from dataclasses import replace

    return replace(request, extra={**defaults, **request.extra})


class _EventReader:
    """Network chunks in, the dialect's stream events out (sans I/O, for both transports)."""

    __slots__ = ("_parser", "_decoder")

    def __init__(self, dialect: ClientDialect) -> None:
        # The framing is the dialect's: SSE unless it names another parser (Ollama: NDJSON).
        self._parser, self._decoder = getattr(dialect, "StreamParser", SSEParser)(), dialect.StreamDecoder()

    # Generators, not lists: the events before a provider's in-stream error must reach the
    # caller first, so the error is seen as breaking a stream that began.
    def feed(self, chunk: bytes) -> Iterator[StreamEvent]:
        for event, data in self._parser.feed(chunk):
            yield from self._decoder.feed(event, data)

    def close(self) -> Iterator[StreamEvent]:
        for event, data in self._parser.close():
            yield from self._decoder.feed(event, data)


def _broken_stream(exc: ModelportError, provider: str) -> ModelportError:
    if isinstance(exc, (StreamError, UpstreamProtocolError)):
        exc.provider = exc.provider or provider
        return exc
    if isinstance(exc, TimeoutError):
        # A stall is a timeout, whatever stage it happens at: callers catch TimeoutError.
        exc.provider = exc.provider or provider
        exc.hint = "the stream stalled after it started and was not retried, to avoid duplicated text; " \
                   "raise Timeouts(read=...) or call again"
        return exc
    return StreamError(
        f"the stream from {provider} broke after it started: {exc.message}",
        provider=provider,
        detail=exc.detail,
        hint="the partial answer was not retried, to avoid duplicated text; call again",
    )

