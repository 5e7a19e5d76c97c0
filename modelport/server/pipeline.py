"""The call pipeline: every model call the gateway makes, whatever door or job it comes from.

    hooks before → admit (route, the key's models, cap max_tokens, book the key's limits
    at the worst case) → cache → attempts over the targets (fallbacks, under the deadline
    and the caller's hang-up) → hooks after → settle (the booking becomes what was used)
    → call log → metrics

Chat, streams, embeddings and the rows of batches (Files/Batches API, console) all go
through here; there is no other fallback loop. A call is made for an ``Exchange``: an HTTP
request of a door, or a batch row made on its owner's behalf (``BatchRow``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, AsyncGenerator, Awaitable, Callable, Protocol, TypeVar

from ..backends import current_caller
from ..calllog import CallLog
from ..dialects.base import StreamEncoder
from ..errors import ModelportError, PermissionDeniedError
from ..hooks import CallInfo, Hooks
from ..prices import cost as price_cost
from ..prompt_cache import may_write_cache
from ..state.counters import Booking, Counters, too_many_tokens_error
from ..types import ChatRequest, ChatResponse, EmbeddingResponse, Message, StreamAccumulator, StreamEvent, Usage
from .auth import Caller, KeyRing
from .http import GATEWAY_HEADER, Interrupt, Receive, client_gone, timeout_error
from .limits import MESSAGE_OVERHEAD_BOUND, message_floor, prompt_token_bound, settlement, text_token_bound
from .metrics import Metrics
from .router import Router, Target, may_fall_back
from .settings import Settings

if TYPE_CHECKING:
    from ..cache import ResponseCache

log = logging.getLogger("modelport.server")
T = TypeVar("T")

_SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))


class Exchange(Protocol):
    """Who a call is made for and what it reports back: a door's Request, or a BatchRow."""

    id: str
    caller: Caller | None
    started: float
    model: str
    status: int
    error_kind: str | None
    usage: Usage | None
    cost: float
    disconnected: bool

    @property
    def key_name(self) -> str: ...

    async def off_loop(self, fn: Callable[..., T], *args: object) -> T: ...


class Streaming(Exchange, Protocol):
    """An exchange that can hear its caller hang up and be answered as a stream."""

    receive: Receive
    send: Callable[[dict[str, object]], Awaitable[None]]
    id_header: tuple[bytes, bytes]
    cors: tuple[tuple[bytes, bytes], ...]


@dataclass(slots=True)
class BatchRow:
    """A row of a batch job, run on behalf of the key that made the job (no HTTP exchange:
    nobody can hang up on it, and nothing is decoded)."""

    id: str
    caller: Caller | None
    started: float = field(default_factory=time.perf_counter)
    model: str = "-"
    status: int = 0
    error_kind: str | None = None
    usage: Usage | None = None
    cost: float = 0.0
    disconnected: bool = False

    @property
    def key_name(self) -> str:
        return self.caller.name if self.caller is not None else "-"

    async def off_loop(self, fn: Callable[..., T], *args: object) -> T:
        return fn(*args)


@dataclass(slots=True)
class _Call:
    """One call on its way through the stages."""

    exchange: Exchange
    request: ChatRequest
    source: str
    targets: tuple[Target, ...] = ()
    target: Target | None = None
    booking: Booking | None = None
    prompt_tokens: int = 0
    cached: bool = False  # answered from the response cache: the key is charged nothing
    cut_off: bool = False  # stopped while the upstream worked: what it used is unknown
    info: CallInfo | None = None

    def described(self) -> CallInfo:
        """What the hooks are told of this call, made once when a hook first needs it."""
        if self.info is None:
            caller = self.exchange.caller
            self.info = CallInfo(self.exchange.id, caller.name if caller else None, self.source)
        return self.info


class CallPipeline:
    def __init__(self, *, settings: Settings, router: Router, keys: KeyRing, counters: Counters, metrics: Metrics,
                 call_log: CallLog | None, cache: ResponseCache | None, hooks: Hooks, prices: dict[str, Any] | None) -> None:
        self.settings = settings
        self.router = router
        self.keys = keys
        self.counters = counters
        self.metrics = metrics
        self.call_log = call_log
        self.cache = cache
        self.hooks = hooks
        self._prices = prices

    # -- the stages ------------------------------------------------------------------------

    async def _open(self, exchange: Exchange, request: ChatRequest, source: str) -> _Call:
        """Hooks before, then admission: route, check the key's models, cap max_tokens and
        book the key's limits at the worst case (a bound on the prompt plus max_tokens)."""
        call = _Call(exchange, request, source)
        if self.hooks.before:
            request = await self.hooks.before_request(call.described(), request)
        targets = call.targets = self.router.targets(request.model)
        call.target = targets[0]
        exchange.model = request.model
        cap = self.settings.max_tokens
        if request.max_tokens is None or request.max_tokens <= 0 or request.max_tokens > cap:
            request = replace(request, max_tokens=cap)
        call.request = request
        call.prompt_tokens = await exchange.off_loop(prompt_token_bound, request)
        # Backends that share one engine between callers (the embedded model) share it fairly.
        current_caller.set(exchange.key_name)
        # A prompt the provider may write to its cache costs more than the input rate (the
        # cache-write rate): the worst case books every prompt token at it.
        writes = call.prompt_tokens if may_write_cache(request, any(t.provider.auto_cache for t in targets)) else 0
        call.booking = await self._book(exchange, targets, request.model, call.prompt_tokens + (request.max_tokens or 0),
                                        Usage(call.prompt_tokens, request.max_tokens or 0, cache_write_tokens=writes))
        return call

    def refuse_unaffordable(self, exchange: Exchange, messages: int) -> None:
        """Refuse, before its body is decoded, a request whose messages alone book more tokens
        than the key may use in a minute: decoding tens of thousands of messages costs a
        second of CPU that the booking would throw away."""
        caller = exchange.caller
        tpm = caller.record.limits.tpm if caller is not None else None
        if tpm is not None and message_floor(messages) > tpm:
            raise too_many_tokens_error(message_floor(messages), tpm)

    async def _book(self, exchange: Exchange, targets: tuple[Target, ...], model: str, tokens: int, worst: Usage) -> Booking | None:
        caller = exchange.caller
        if caller is None:
            return None
        self.keys.check_model(caller, model, targets[0].name)
        limits = caller.record.limits
        cost = _worst_cost(targets, worst) if limits.budget is not None else 0.0
        return await self.counters.reserve(caller.record.id, limits, tokens, cost)

    async def _attempts(self, call: _Call, attempt: Callable[[Target], Awaitable[T]], targets: tuple[Target, ...]) -> T:
        """The first target's answer that does not fail with an error a fallback may cure."""
        for i, target in enumerate(targets):
            call.target = target
            try:
                return await attempt(target)
            except ModelportError as exc:
                if i + 1 < len(targets) and may_fall_back(exc):
                    log.info("%s %s failed (%s); falling back to %s", call.exchange.id, target.name, exc.kind, targets[i + 1].name)
                    continue
                raise
        raise AssertionError("unreachable: the last target returns or raises")

    async def _settle(self, call: _Call, usage: Usage | None) -> None:
        exchange = call.exchange
        usage = usage or Usage()
        exchange.usage = usage
        spent = 0.0
        target = call.target
        if target is not None and (usage.input_tokens or usage.output_tokens):
            spent = price_cost(usage, target.price) or 0.0
        exchange.cost = spent
        self.metrics.usage(exchange.model, exchange.key_name, usage.input_tokens, usage.output_tokens, spent)
        caller = exchange.caller
        if caller is not None:
            await self.counters.settle(call.booking, usage.input_tokens + usage.output_tokens, spent)
            self.keys.record_usage(caller, usage.input_tokens, usage.output_tokens, spent)

    def _log(self, call: _Call, response: ChatResponse | None, error: BaseException | None) -> None:
        if self.call_log is None or call.target is None:
            return
        request = call.request
        if self.hooks.log_views:
            request, response = self.hooks.log_view(request, response)
        exchange, target = call.exchange, call.target
        caller = exchange.caller
        # The key's id as well as its name: a name may later be given to another key.
        self.call_log.record(
            request, response, error, provider=target.provider.name, model=target.model_id, source=call.source,
            latency=time.perf_counter() - exchange.started, key_name=caller.name if caller else None,
            key_id=caller.record.id if caller else None, cached=call.cached, prices=self._prices,
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

    def _deadline(self) -> tuple[Interrupt, asyncio.TimerHandle]:
        """The deadline, armed: it cancels the running task with its own reason."""
        interrupt = Interrupt()
        timer = asyncio.get_running_loop().call_later(self.settings.request_timeout, interrupt.fire, "timeout")
        return interrupt, timer

    def _interrupted(self, interrupt: Interrupt) -> ModelportError | None:
        """After a CancelledError: the error it stands for, or None for a shutdown's cancel."""
        reason = interrupt.absorb()
        if reason is None:
            return None
        return client_gone() if reason == "disconnect" else timeout_error(self.settings.request_timeout)

    async def _after(self, call: _Call, response: ChatResponse) -> ChatResponse:
        if not self.hooks.after:
            return response
        return await self.hooks.after_response(call.described(), call.request, response)

    async def _failed(self, call: _Call, error: BaseException) -> None:
        if self.hooks.errors:
            await self.hooks.on_error(call.described(), call.request, error)

    # -- the calls -------------------------------------------------------------------------

    async def chat(self, exchange: Exchange, request: ChatRequest, source: str = "gateway") -> ChatResponse:
        """A whole answer, from the first target that does not fail with a fallback error."""
        call = await self._open(exchange, request, source)
        interrupt, timer = self._deadline()
        receive = getattr(exchange, "receive", None)
        # The body is read: the next message is the caller hanging up, and then the backend
        # call is cancelled (a remote one is not billed for, a local one frees its slot).
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(exchange, receive, interrupt)) if receive else None
        response: ChatResponse | None = None
        error: BaseException | None = None
        try:
            response = await self._from_cache(call.request)
            if response is not None:
                call.cached = True
                response.provider = call.targets[0].provider.name
            else:
                response = await self._attempts(call, lambda t: t.backend.achat(call.request, t.model_id), call.targets)
                response.provider = call.target.provider.name if call.target else ""
                self._to_cache(call.request, response)
            response = await self._after(call, response)
            return response
        except asyncio.CancelledError:
            call.cut_off = True
            interrupted = self._interrupted(interrupt)
            if interrupted is None:
                raise
            error = interrupted
            raise interrupted from None
        except Exception as exc:
            error = exc
            raise
        finally:
            timer.cancel()
            interrupt.disarm()
            if watcher is not None:
                watcher.cancel()
            if error is not None:
                await self._failed(call, error)
            answered = response if error is None else None
            usage = Usage() if call.cached else settlement(answered.message if answered is not None else None,
                                                            answered.usage if answered is not None else None, call.prompt_tokens,
                                                            call.request.max_tokens or 0, complete=True, cut_off=call.cut_off)
            await self._settle(call, usage)
            self._log(call, answered, error)

    async def stream(self, exchange: Streaming, request: ChatRequest, encoder: StreamEncoder, source: str = "gateway") -> None:
        """Stream the answer through the dialect's encoder.

        Nothing is sent until the first event arrives, so failures before it (unknown model,
        upstream 429) still get a proper status, and fallbacks still apply. After that, a
        failure ends the stream with the dialect's error event.
        """
        call = await self._open(exchange, request, source)
        interrupt, timer = self._deadline()
        loop = asyncio.get_running_loop()
        watcher: asyncio.Task[None] | None = None
        events: AsyncGenerator[StreamEvent, None] | None = None
        acc = StreamAccumulator(call.request.model, call.targets[0].provider.name)
        error: ModelportError | None = None
        send = exchange.send
        hooks = self.hooks
        info = call.described() if hooks.events else None
        complete = False
        try:
            try:
                hit = await self._from_cache(call.request)
                call.cached = hit is not None
                if hit is not None:
                    opened = await _replay(hit)
                else:
                    opened = await self._attempts(call, lambda t: _open_stream(call.request, t), call.targets)
                events, first = opened
                acc.provider = call.target.provider.name if call.target else ""
                self.metrics.time_to_first_token(exchange.model, time.perf_counter() - exchange.started)
                exchange.status = 200
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*_stream_headers(encoder), exchange.id_header, GATEWAY_HEADER, *exchange.cors]})
                watcher = loop.create_task(_watch_disconnect(exchange, exchange.receive, interrupt))

                async def emit(event: StreamEvent) -> None:
                    if info is not None:
                        event = hooks.on_stream_event(info, event)
                    acc.add(event)
                    chunk = encoder.encode(event)
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})

                if first is not None:
                    await emit(first)
                    async for event in events:
                        await emit(event)
                tail = encoder.close()
                complete = True
            except asyncio.CancelledError:
                call.cut_off = events is None
                interrupted = self._interrupted(interrupt)
                if interrupted is None:
                    raise
                if interrupted.status == 499:
                    exchange.status = 499
                    exchange.error_kind = "disconnected"
                    return
                error = interrupted
                if exchange.status == 0:
                    raise interrupted from None
                tail = encoder.error(interrupted)
            except ModelportError as exc:
                error = exc
                if exchange.status == 0:
                    raise
                # Mid-stream: the status is sent, so the error travels as the dialect's event.
                log.warning("%s stream from %s broke: %s", exchange.id, call.target.name if call.target else "-", exc)
                exchange.error_kind = exc.kind
                tail = encoder.error(exc)
            timer.cancel()
            await encoder.flush()  # what the last event promises (a stored response) is done first
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            timer.cancel()
            interrupt.disarm()
            if watcher is not None:
                watcher.cancel()
            if events is not None:
                await events.aclose()
            if error is not None:
                await self._failed(call, error)
            answer = acc.response(time.perf_counter() - exchange.started)
            usage = Usage() if call.cached else settlement(answer.message if events is not None else None, acc.usage, call.prompt_tokens,
                                                            call.request.max_tokens or 0, complete=complete, cut_off=call.cut_off)
            await self._settle(call, usage)
            self._log(call, answer if error is None else None, error)
            if complete and error is None and not call.cached:
                self._to_cache(call.request, answer)

    async def embed(self, exchange: Exchange, model: str, inputs: list[str]) -> EmbeddingResponse:
        targets = self.router.targets(model)
        exchange.model = model
        call = _Call(exchange, ChatRequest(model, []), "gateway", targets, targets[0])
        # A bound, as for chat: bytes, plus the BOS/EOS-style markers around each input.
        call.prompt_tokens = text_token_bound(inputs) + MESSAGE_OVERHEAD_BOUND * len(inputs)
        # Embeddings run on the model asked for only: a chat model is no fallback for them.
        primary = targets[:1]
        call.booking = await self._book(exchange, primary, model, call.prompt_tokens, Usage(call.prompt_tokens))
        interrupt, timer = self._deadline()
        response: EmbeddingResponse | None = None
        try:
            response = await self._attempts(call, lambda t: t.backend.aembed(inputs, t.model_id), primary)
            return response
        except asyncio.CancelledError:
            call.cut_off = True
            interrupted = self._interrupted(interrupt)
            if interrupted is None:
                raise
            raise interrupted from None
        finally:
            timer.cancel()
            interrupt.disarm()
            answer = Message("assistant") if response is not None else None  # embeddings answer no tokens
            usage = settlement(answer, response.usage if response is not None else None, call.prompt_tokens, 0, complete=True,
                               cut_off=call.cut_off)
            await self._settle(call, usage)


def listed(body: object, field: str) -> int:
    """How many items ``body[field]`` lists (0 when it is not a list): a request's messages,
    counted before decoding for ``refuse_unaffordable``."""
    value = body.get(field) if isinstance(body, dict) else None
    return len(value) if isinstance(value, list) else 0


async def _watch_disconnect(exchange: Exchange, receive: Receive | None, interrupt: Interrupt) -> None:
    """Stop generating (and free the model's slot) as soon as the caller hangs up."""
    if receive is None:
        return
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            exchange.disconnected = True
            interrupt.fire("disconnect")
            return


async def _open_stream(request: ChatRequest, target: Target) -> tuple[AsyncGenerator[StreamEvent, None], StreamEvent | None]:
    """A live stream with its first event taken, so a failure before it can still fall back."""
    events = target.backend.astream(request, target.model_id)
    try:
        return events, await events.__anext__()
    except StopAsyncIteration:
        return events, None
    except BaseException:
        await events.aclose()
        raise


async def _replay(response: ChatResponse) -> tuple[AsyncGenerator[StreamEvent, None], StreamEvent | None]:
    """A cached answer as ``_open_stream`` gives a live one: its events, the first taken."""
    from ..cache import replay

    async def events() -> AsyncGenerator[StreamEvent, None]:
        for event in replay(response):
            yield event

    stream = events()
    return stream, await stream.__anext__()


def _stream_headers(encoder: StreamEncoder) -> tuple[tuple[bytes, bytes], ...]:
    """SSE unless the encoder names its own media type (Ollama's NDJSON)."""
    media_type = encoder.media_type
    return _SSE_HEADERS if media_type is None else ((b"content-type", media_type), *_SSE_HEADERS[1:])


def _worst_cost(targets: tuple[Target, ...], usage: Usage) -> float:
    worst = 0.0
    for target in targets:
        value = price_cost(usage, target.price)
        if value is None:
            raise PermissionDeniedError(
                f"model {target.name!r} has no known price, and this gateway key has a budget",
                hint="use a priced model, or add its price under [prices] in the config",
            )
        worst = max(worst, value)
    return worst


def _log_cache_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("could not keep an answer in the response cache: %s", future.exception())
