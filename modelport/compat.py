"""An OpenAI-SDK-shaped facade: code written for `openai` runs after changing one import.

    from modelport import OpenAI          # was: from openai import OpenAI
    client = OpenAI()
    client.chat.completions.create(model="local/smollm2", messages=[...]).choices[0].message.content
    client.responses.create(model="local/smollm2", input="Hi").output_text

A model named ``provider/model-id`` goes to that provider; a bare name goes to OpenAI (or to
``base_url`` when one is given, as with the official SDK), so ``OpenAI(base_url=
"http://localhost:1234/v1", api_key="lm-studio")`` talks to LM Studio unchanged. Requests
and answers pass through the openai dialect, so they mean exactly what they mean on the wire.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

from .dialects import openai as dialect
from .jsonio import loads
from .sse import SSEParser
from .types import ChatRequest, StreamEvent


class Record:
    """A JSON object with attribute access (``.choices[0].message.content``), like the SDK's models."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self._data[name])
        except KeyError:
            if name in ("content", "refusal", "tool_calls", "usage", "reasoning_content"):
                return None
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return _wrap(self._data[name])

    def model_dump(self) -> dict[str, Any]:
        return self._data

    def to_dict(self) -> dict[str, Any]:
        return self._data

    def __repr__(self) -> str:
        return f"Record({self._data!r})"


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return Record(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _request(model: str, messages: list[Any], params: dict[str, Any]) -> tuple[ChatRequest, bool]:
    body = {"model": model, "messages": messages, **params}
    include_usage = dialect.stream_include_usage(body)
    request = dialect.decode_request(body)
    return request, include_usage


def _chunks(encoded: bytes, parser: SSEParser) -> list[Record]:
    return [Record(loads(data)) for _, data in parser.feed(encoded) if data != "[DONE]"]


class _Core:
    def __init__(self, client: Any, base_url: str | None) -> None:
        self._client = client
        self._routed_to_base = base_url is not None

    def _qualified(self, model: str) -> str:
        provider, sep, _ = model.partition("/")
        if sep and provider in self._client.providers and not self._routed_to_base:
            return model
        return f"openai/{model}"


class _Completions(_Core):
    def create(self, *, model: str, messages: list[Any], stream: bool = False, **params: Any) -> Any:
        request, include_usage = _request(model, messages, params)
        request.model = self._qualified(model)
        if stream:
            return self._stream(request, model, include_usage)
        return Record(dialect.encode_response(self._client.send(request), model))

    def _stream(self, request: ChatRequest, model: str, include_usage: bool) -> Iterator[Record]:
        encoder, parser = dialect.StreamEncoder(model, include_usage), SSEParser()
        for event in self._client.send_stream(request):
            yield from _chunks(encoder.encode(event), parser)
        yield from _chunks(encoder.close(), parser)


class _AsyncCompletions(_Core):
    async def create(self, *, model: str, messages: list[Any], stream: bool = False, **params: Any) -> Any:
        request, include_usage = _request(model, messages, params)
        request.model = self._qualified(model)
        if stream:
            return self._stream(request, model, include_usage)
        return Record(dialect.encode_response(await self._client.send(request), model))

    async def _stream(self, request: ChatRequest, model: str, include_usage: bool) -> AsyncIterator[Record]:
        encoder, parser = dialect.StreamEncoder(model, include_usage), SSEParser()
        event: StreamEvent
        async for event in self._client.send_stream(request):
            for chunk in _chunks(encoder.encode(event), parser):
                yield chunk
        for chunk in _chunks(encoder.close(), parser):
            yield chunk


class _Embeddings(_Core):
    def create(self, *, model: str, input: str | list[str], encoding_format: str = "float", **_: Any) -> Record:
        response = self._client.embed(self._qualified(model), input)
        return Record(dialect.encode_embeddings_response(response, encoding_format))


class _AsyncEmbeddings(_Core):
    async def create(self, *, model: str, input: str | list[str], encoding_format: str = "float", **_: Any) -> Record:
        response = await self._client.embed(self._qualified(model), input)
        return Record(dialect.encode_embeddings_response(response, encoding_format))


class ResponseRecord(Record):
    """A Responses API ``Response``, with the SDK's computed ``output_text`` (and
    ``output_parsed`` after ``parse``)."""

    __slots__ = ("output_parsed",)

    def __init__(self, data: dict[str, Any], output_parsed: Any = None) -> None:
        super().__init__(data)
        self.output_parsed = output_parsed

    @property
    def output_text(self) -> str:
        return "".join(part.get("text", "") for item in self._data.get("output") or () if item.get("type") == "message"
                       for part in item.get("content") or () if part.get("type") == "output_text")


def _responses_request(model: str, input: Any, params: dict[str, Any], text_format: Any = None) -> tuple[ChatRequest, dict[str, Any], Any]:
    """(request, echo, validator) for a responses.create/stream/parse call: the keyword
    arguments mean what they mean on the wire. There is no store, so previous_response_id
    and item references are refused with a clear error."""
    from .dialects import openai_responses as responses_dialect

    body = {"model": model, "input": input, **params}
    validator = None
    if text_format is not None:
        from .structured import to_response_format

        fmt, validator = to_response_format(text_format)
        assert fmt is not None
        text = dict(body.get("text") or {})
        text["format"] = {"type": "json_schema", "name": fmt.name or "response", "schema": fmt.schema or {}, "strict": bool(fmt.strict)}
        body["text"] = text
    return responses_dialect.decode_request(body), responses_dialect.echo_fields(body), validator


def _response_record(response: Any, model: str, echo: dict[str, Any], validator: Any) -> ResponseRecord:
    from .dialects import openai_responses as responses_dialect

    record = ResponseRecord(responses_dialect.encode_response(response, model, echo))
    if validator is not None and record.output_text:
        record.output_parsed = validator(record.output_text)
    return record


class _ResponseEvents:
    """Stream events as records (``.type``, ``.delta``...), shared by the sync and async streams."""

    def __init__(self, model: str, echo: dict[str, Any], validator: Any) -> None:
        from .dialects import openai_responses as responses_dialect

        self._encoder = responses_dialect.StreamEncoder(model, True, echo)
        self._parser = SSEParser()
        self._validator = validator
        self.final: ResponseRecord | None = None

    def feed(self, event: StreamEvent | None) -> list[Record]:
        raw = self._encoder.encode(event) if event is not None else self._encoder.close()
        records = [Record(loads(data)) for _, data in self._parser.feed(raw)]
        if event is None:
            response = self._encoder.response
            assert response is not None, "close() leaves the final response object"
            record = self.final = ResponseRecord(response)
            if self._validator is not None and record.output_text:
                record.output_parsed = self._validator(record.output_text)
        return records

    def final_response(self) -> ResponseRecord:
        if self.final is None:
            raise RuntimeError("the stream has not finished: iterate it (or call until_done()) first")
        return self.final


class ResponseStream:
    """``responses.stream(...)``: iterate for events, then ``get_final_response()``."""

    def __init__(self, events: Iterator[StreamEvent], model: str, echo: dict[str, Any], validator: Any) -> None:
        self._events, self._state = events, _ResponseEvents(model, echo, validator)
        self._iter: Iterator[Record] | None = None

    def __enter__(self) -> ResponseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def __iter__(self) -> Iterator[Record]:
        if self._iter is None:
            self._iter = self._run()
        return self._iter

    def _run(self) -> Iterator[Record]:
        for event in self._events:
            yield from self._state.feed(event)
        yield from self._state.feed(None)

    def until_done(self) -> ResponseStream:
        for _ in self:
            pass
        return self

    def get_final_response(self) -> ResponseRecord:
        self.until_done()
        return self._state.final_response()


class AsyncResponseStream:
    """``async with responses.stream(...)``: ``async for`` events, then ``await get_final_response()``."""

    def __init__(self, events: AsyncIterator[StreamEvent], model: str, echo: dict[str, Any], validator: Any) -> None:
        self._events, self._state = events, _ResponseEvents(model, echo, validator)
        self._iter: AsyncIterator[Record] | None = None

    async def __aenter__(self) -> AsyncResponseStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        close = getattr(self._events, "aclose", None)
        if close is not None:
            await close()

    def __aiter__(self) -> AsyncIterator[Record]:
        if self._iter is None:
            self._iter = self._run()
        return self._iter

    async def _run(self) -> AsyncIterator[Record]:
        async for event in self._events:
            for record in self._state.feed(event):
                yield record
        for record in self._state.feed(None):
            yield record

    async def until_done(self) -> AsyncResponseStream:
        async for _ in self:
            pass
        return self

    async def get_final_response(self) -> ResponseRecord:
        await self.until_done()
        return self._state.final_response()


class _Responses(_Core):
    def create(self, *, model: str, input: Any, stream: bool = False, **params: Any) -> Any:
        request, echo, _ = _responses_request(model, input, params)
        request.model = self._qualified(model)
        if stream:
            return iter(ResponseStream(iter(self._client.send_stream(request)), model, echo, None))
        return _response_record(self._client.send(request), model, echo, None)

    def stream(self, *, model: str, input: Any, text_format: Any = None, **params: Any) -> ResponseStream:
        request, echo, validator = _responses_request(model, input, params, text_format)
        request.model = self._qualified(model)
        return ResponseStream(iter(self._client.send_stream(request)), model, echo, validator)

    def parse(self, *, model: str, input: Any, text_format: Any, **params: Any) -> ResponseRecord:
        request, echo, validator = _responses_request(model, input, params, text_format)
        request.model = self._qualified(model)
        return _response_record(self._client.send(request), model, echo, validator)


class _AsyncResponses(_Core):
    async def create(self, *, model: str, input: Any, stream: bool = False, **params: Any) -> Any:
        request, echo, _ = _responses_request(model, input, params)
        request.model = self._qualified(model)
        if stream:
            return AsyncResponseStream(aiter(self._client.send_stream(request)), model, echo, None).__aiter__()
        return _response_record(await self._client.send(request), model, echo, None)

    def stream(self, *, model: str, input: Any, text_format: Any = None, **params: Any) -> AsyncResponseStream:
        request, echo, validator = _responses_request(model, input, params, text_format)
        request.model = self._qualified(model)
        return AsyncResponseStream(aiter(self._client.send_stream(request)), model, echo, validator)

    async def parse(self, *, model: str, input: Any, text_format: Any, **params: Any) -> ResponseRecord:
        request, echo, validator = _responses_request(model, input, params, text_format)
        request.model = self._qualified(model)
        return _response_record(await self._client.send(request), model, echo, validator)


class _Namespace:
    def __init__(self, **members: Any) -> None:
        self.__dict__.update(members)


def _client_kwargs(api_key: str | None, base_url: str | None, timeout: Any, max_retries: int) -> dict[str, Any]:
    return {
        "api_keys": {"openai": api_key} if api_key else None,
        "base_urls": {"openai": base_url} if base_url else None,
        "timeout": timeout,
        "max_retries": max_retries,
    }


class OpenAI:
    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, timeout: Any = None,
                 max_retries: int = 2, **client_options: Any) -> None:
        from .client import Client

        self._client = Client(**_client_kwargs(api_key, base_url, timeout, max_retries), **client_options)
        self.chat = _Namespace(completions=_Completions(self._client, base_url))
        self.embeddings = _Embeddings(self._client, base_url)
        self.responses = _Responses(self._client, base_url)

    def close(self) -> None:
        self._client.close()


class AsyncOpenAI:
    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, timeout: Any = None,
                 max_retries: int = 2, **client_options: Any) -> None:
        from .client import AsyncClient

        self._client = AsyncClient(**_client_kwargs(api_key, base_url, timeout, max_retries), **client_options)
        self.chat = _Namespace(completions=_AsyncCompletions(self._client, base_url))
        self.embeddings = _AsyncEmbeddings(self._client, base_url)
        self.responses = _AsyncResponses(self._client, base_url)

    async def close(self) -> None:
        await self._client.aclose()
