"""Client and AsyncClient: "provider/model" -> backend, one canonical request, one answer.

    client = Client()
    client.chat("groq/llama-3.1-8b-instant", "Why is the sky blue?").text
    for event in client.stream("local/smollm2", "Count to five"):
        print(event.text, end="")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Generator, Iterator, Sequence

from . import plugins
from .config import default_model, load_config
from .errors import BadRequestError, ModelportError
from .hooks import Hooks, configured_hooks
from .keys import resolve_key
from .providers import Provider, provider_table, resolve
from .retry import RetryPolicy
from .transport import Timeouts
from .types import ChatRequest, ChatResponse, EmbeddingResponse, Message, StreamAccumulator, StreamEvent, TextPart, validate_request

if TYPE_CHECKING:
    from .backends.base import Backend, BackendClass

# Keyword arguments that map one to one onto ChatRequest fields.
_PLAIN_PARAMS = frozenset(
    {
        "temperature", "top_p", "top_k", "max_tokens", "seed", "presence_penalty", "frequency_penalty",
        "parallel_tool_calls", "reasoning_effort", "metadata", "extra", "cache_key", "cache_retention",
    }
)

# Every keyword argument a request takes (the rest is refused, or goes in ``extra``).
REQUEST_PARAMS = _PLAIN_PARAMS | {"stop", "tools", "tool_choice", "response_format", "cache_prompt"}

Prompt = str | Message | Sequence[Message | dict[str, Any]] | None


class _ClientCore:
    """What sync and async clients share: configuration, routing and request building."""

    def __init__(
        self,
        *,
        api_keys: dict[str, str] | None = None,
        base_urls: dict[str, str] | None = None,
        timeout: Timeouts | float | None = None,
        max_retries: int = 2,
        config: dict[str, Any] | str | Path | None = None,
        log: bool | None = None,
        cache: bool | float | None = None,
        source: str = "sdk",
    ) -> None:
        self.config = config if isinstance(config, dict) else load_config(config)
        self.providers = provider_table(self.config)
        self.aliases: dict[str, str] = dict(self.config.get("aliases", {}))
        self._api_keys = dict(api_keys or {})
        self._base_urls = dict(base_urls or {})
        self.timeouts = Timeouts.of(timeout)
        self.retry = RetryPolicy(max_retries=max_retries)
        self._backends: dict[str, Backend] = {}
        self._source = source
        # None defers to MODELPORT_LOG / MODELPORT_CACHE and the config file.
        from .cache import cache_for
        from .calllog import log_for
        from .prices import config_prices

        # Everything reads this one config: logging, caching and the log's prices too.
        self._log = log_for(source, log, self.config)
        self._log_views: Hooks | None = None  # made with the first logged call: plugins are read then
        self._cache = cache_for(cache, self.config)
        self.prices = config_prices(self.config)  # the config's [prices] table

    def __repr__(self) -> str:
        return f"{type(self).__name__}(providers={len(self.providers)}, backends={sorted(self._backends)})"

    # -- routing -------------------------------------------------------------------------

    def resolve(self, model: str | None) -> tuple[Provider, str]:
        return resolve(model or default_model(self.config), self.providers, self.aliases)

    def backend(self, provider: Provider) -> Backend:
        backend = self._backends.get(provider.name)
        # A backend built before its key existed is built again, so a key set later (in a
        # notebook, `os.environ[...] = ...` after the first error) is picked up.
        if backend is None or getattr(backend, "missing_key", False):
            # The row's ``backend`` column names an entry of the modelport.backends group.
            cls: BackendClass = plugins.load(plugins.BACKENDS, provider.backend)
            backend = self._backends[provider.name] = cls(
                provider,
                api_key=resolve_key(provider, self._api_keys.get(provider.name)),
                url=self._base_urls.get(provider.name),
                timeouts=self.timeouts,
                retry=self.retry,
            )
        return backend

    # -- request building ----------------------------------------------------------------

    def request(self, model: str | None, prompt: Prompt = None, *, system: str | None = None, **params: Any) -> ChatRequest:
        """The canonical request these arguments describe (no call is made)."""
        return self._build(model, prompt, system, params)[0]

    def _build(self, model: str | None, prompt: Prompt, system: str | None, params: dict[str, Any]) -> tuple[ChatRequest, Callable[[str], Any] | None, dict[str, Callable[..., Any]]]:
        """The request, the validator for structured output, and the executable tools."""
        messages = _messages(prompt, params.pop("messages", None))
        if system is not None:
            messages = [m for m in messages if m.role != "system"]
            messages.insert(0, Message.system(system))
        if not messages:
            raise BadRequestError("no prompt given", hint='pass a prompt string or messages=[...], e.g. chat("local/smollm2", "Hello")')
        fields: dict[str, Any] = {}
        for name in list(params):
            if name in _PLAIN_PARAMS:
                fields[name] = params.pop(name)
        # cache_prompt=True: prompt-cache breakpoints on the stable prefix (tools, system, the
        # turns before the newest) where the provider takes them; False: none, whatever the
        # provider's auto_cache says.
        cache_prompt = params.pop("cache_prompt", None)
        if cache_prompt is not None:
            fields["auto_cache"] = cache_prompt
        stop = params.pop("stop", None)
        if stop is not None:
            fields["stop"] = [stop] if isinstance(stop, str) else list(stop)
        tools = params.pop("tools", None)
        functions: dict[str, Callable[..., Any]] = {}
        if tools:
            from .tools import to_tools

            fields["tools"], functions = to_tools(tools)
        choice = params.pop("tool_choice", None)
        if choice is not None:
            from .tools import to_tool_choice

            fields["tool_choice"] = to_tool_choice(choice, fields.get("tools"))
        validator = None
        response_format = params.pop("response_format", None)
        if response_format is not None:
            from .structured import to_response_format

            fields["response_format"], validator = to_response_format(response_format)
        if params:
            names = ", ".join(sorted(params))
            raise BadRequestError(
                f"unknown parameter(s): {names}",
                param=next(iter(params)),
                code="unknown_parameter",
                hint="pass provider-specific fields explicitly with extra={...}; "
                "common ones are temperature, top_p, max_tokens, stop, seed, tools, response_format",
            )
        request = ChatRequest(model=model or default_model(self.config), messages=messages, **fields)
        validate_request(request)
        return request, validator, functions

    def _finish(self, response: ChatResponse, validator: Callable[[str], Any] | None) -> ChatResponse:
        # An answer that only calls tools has no structured output yet: the caller runs the
        # tools (or run_tools=True does) and the final answer is parsed.
        if validator is not None and not (response.tool_calls and not response.text):
            from .structured import parse

            parse(response, validator)
        return response

    def _from_cache(self, request: ChatRequest, provider: str, model_id: str, started: float) -> ChatResponse | None:
        cached = self._cache.get(request) if self._cache is not None else None
        if cached is not None:
            self._record(request, provider, model_id, started, cached, cached=True)
        return cached

    def _completed(self, request: ChatRequest, provider: str, model_id: str, started: float, response: ChatResponse,
                   cached: bool = False) -> ChatResponse:
        response.provider = provider
        response.model = response.model or model_id
        if self._cache is not None and not cached:
            self._cache.put(request, response)
        self._record(request, provider, model_id, started, response, cached=cached)
        return response

    def _record(self, request: ChatRequest, provider: str, model_id: str, started: float, response: ChatResponse | None = None,
                error: BaseException | None = None, cached: bool = False) -> None:
        if self._log is not None:
            if self._log_views is None:
                # The gateway's log stage, the same hooks: [log] redact masks the SDK's and CLI's log too.
                self._log_views = Hooks(h for h in configured_hooks(self.config) if hasattr(h, "log_view"))
            if self._log_views.log_views:
                request, response = self._log_views.log_view(request, response)
            self._log.record(request, response, error, provider=provider, model=model_id, source=self._source,
                             latency=time.perf_counter() - started, cached=cached, prices=self.prices)


class Client(_ClientCore):
    """Synchronous client: a real sync transport, safe in notebooks and threads."""

    def chat(self, model: str | None = None, prompt: Prompt = None, *, system: str | None = None,
             run_tools: bool = False, max_turns: int = 8, **params: Any) -> ChatResponse:
        request, validator, functions = self._build(model, prompt, system, params)
        if run_tools and functions:
            from .tools import run_tool_loop

            return self._finish(run_tool_loop(self.send, request, functions, max_turns=max_turns), validator)
        return self._finish(self.send(request), validator)

    def send(self, request: ChatRequest) -> ChatResponse:
        """Send a canonical request as it is."""
        provider, model_id = self.resolve(request.model)
        started = time.perf_counter()
        cached = self._from_cache(request, provider.name, model_id, started)
        if cached is not None:
            return cached
        try:
            response = self.backend(provider).chat(request, model_id)
        except ModelportError as exc:
            self._record(request, provider.name, model_id, started, error=exc)
            raise
        return self._completed(request, provider.name, model_id, started, response)

    def stream(self, model: str | None = None, prompt: Prompt = None, *, system: str | None = None, **params: Any) -> ChatStream:
        request, validator, _ = self._build(model, prompt, system, params)
        return self.send_stream(request, validator)

    def send_stream(self, request: ChatRequest, validator: Callable[[str], Any] | None = None) -> ChatStream:
        provider, model_id = self.resolve(request.model)
        return ChatStream(self, request, provider, model_id, validator)

    def embed(self, model: str, inputs: str | Sequence[str]) -> EmbeddingResponse:
        provider, model_id = self.resolve(model)
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        return self.backend(provider).embed(items, model_id)

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StreamState:
    """What a sync and an async stream share: the cache, the accumulator and the record."""

    def __init__(self, client: _ClientCore, request: ChatRequest, provider: Provider, model_id: str,
                 validator: Callable[[str], Any] | None) -> None:
        self._client, self._request, self._provider, self._model_id = client, request, provider, model_id
        self._validator = validator
        self._acc = StreamAccumulator(model_id, provider.name)
        self._started = 0.0
        self._cached: ChatResponse | None = None
        self.response: ChatResponse | None = None

    def _replay(self) -> list[StreamEvent] | None:
        """The cached answer as events, or None when the provider must be asked."""
        self._started = time.perf_counter()
        cache = self._client._cache
        self._cached = cache.get(self._request) if cache is not None else None
        if self._cached is None:
            return None
        from .cache import replay

        return replay(self._cached)

    def _failed(self, exc: ModelportError) -> None:
        self._client._record(self._request, self._provider.name, self._model_id, self._started, error=exc)

    def _done(self) -> None:
        response = self._acc.response(time.perf_counter() - self._started)
        response = self._client._finish(response, self._validator)
        self.response = self._client._completed(self._request, self._provider.name, self._model_id, self._started,
                                                response, cached=self._cached is not None)


class ChatStream(_StreamState):
    """Iterate for StreamEvents; ``.response`` is the assembled ChatResponse afterwards.

    ``text_stream()`` yields only the text, for ``print(..., end="")`` loops.
    """

    _events: Generator[StreamEvent, None, None] | None = None

    def __iter__(self) -> Iterator[StreamEvent]:
        # One request per stream: iterating again (text_stream() then until_done()) goes on
        # where the last loop stopped instead of sending the request a second time.
        if self._events is None:
            self._events = self._run()
        return self._events

    def _run(self) -> Generator[StreamEvent, None, None]:
        events = self._replay()
        try:
            for event in events if events is not None else self._client.backend(self._provider).stream(self._request, self._model_id):
                self._acc.add(event)
                yield event
        except ModelportError as exc:
            self._failed(exc)
            raise
        self._done()

    def text_stream(self) -> Iterator[str]:
        for event in self:
            if event.kind == "text" and event.text:
                yield event.text

    def until_done(self) -> ChatResponse:
        for _ in self:
            pass
        assert self.response is not None
        return self.response

    def stop(self) -> ChatResponse:
        """End the stream early (the connection or the local decoding stops) and return what
        arrived so far, e.g. after Ctrl-C, so the part that was shown can be kept."""
        if self._events is not None:
            self._events.close()
        return self.response or self._acc.response(time.perf_counter() - self._started)


class AsyncClient(_ClientCore):
    """Asynchronous client on aiohttp: thousands of calls in flight on one event loop."""

    async def chat(self, model: str | None = None, prompt: Prompt = None, *, system: str | None = None,
                   run_tools: bool = False, max_turns: int = 8, **params: Any) -> ChatResponse:
        request, validator, functions = self._build(model, prompt, system, params)
        if run_tools and functions:
            from .tools import arun_tool_loop

            return self._finish(await arun_tool_loop(self.send, request, functions, max_turns=max_turns), validator)
        return self._finish(await self.send(request), validator)

    async def send(self, request: ChatRequest) -> ChatResponse:
        provider, model_id = self.resolve(request.model)
        started = time.perf_counter()
        cached = self._from_cache(request, provider.name, model_id, started)
        if cached is not None:
            return cached
        try:
            response = await self.backend(provider).achat(request, model_id)
        except ModelportError as exc:
            self._record(request, provider.name, model_id, started, error=exc)
            raise
        return self._completed(request, provider.name, model_id, started, response)

    def stream(self, model: str | None = None, prompt: Prompt = None, *, system: str | None = None, **params: Any) -> AsyncChatStream:
        request, validator, _ = self._build(model, prompt, system, params)
        return self.send_stream(request, validator)

    def send_stream(self, request: ChatRequest, validator: Callable[[str], Any] | None = None) -> AsyncChatStream:
        provider, model_id = self.resolve(request.model)
        return AsyncChatStream(self, request, provider, model_id, validator)

    async def embed(self, model: str, inputs: str | Sequence[str]) -> EmbeddingResponse:
        provider, model_id = self.resolve(model)
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        return await self.backend(provider).aembed(items, model_id)

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncChatStream(_StreamState):
    """``async for`` StreamEvents; ``.response`` is the assembled ChatResponse afterwards."""

    _events: AsyncIterator[StreamEvent] | None = None

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        # One request per stream, as in ChatStream.__iter__.
        if self._events is None:
            self._events = self._run()
        return self._events

    async def _run(self) -> AsyncIterator[StreamEvent]:
        replayed = self._replay()
        try:
            if replayed is not None:
                for event in replayed:
                    self._acc.add(event)
                    yield event
            else:
                async for event in self._client.backend(self._provider).astream(self._request, self._model_id):
                    self._acc.add(event)
                    yield event
        except ModelportError as exc:
            self._failed(exc)
            raise
        self._done()

    async def text_stream(self) -> AsyncIterator[str]:
        async for event in self:
            if event.kind == "text" and event.text:
                yield event.text

    async def until_done(self) -> ChatResponse:
        async for _ in self:
            pass
        assert self.response is not None
        return self.response


def _messages(prompt: Prompt, messages: Any) -> list[Message]:
    if messages is None:
        if prompt is None:
            return []
        if isinstance(prompt, str):
            return [Message("user", [TextPart(prompt)])]
        messages = [prompt] if isinstance(prompt, Message) else prompt
    items = list(messages)
    if all(isinstance(m, Message) for m in items):
        return items
    # OpenAI-shaped dicts are the lingua franca of chat histories: read them with that dialect.
    from .dialects import openai

    out: list[Message] = []
    for item in items:
        out.extend([item] if isinstance(item, Message) else openai.decode_request({"model": "-", "messages": [item]}).messages)
    return out

