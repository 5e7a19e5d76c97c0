"""An OpenAI-SDK-shaped facade: code written for `openai` runs after changing one import.

    from modelport import OpenAI          # was: from openai import OpenAI
    client = OpenAI()
    client.chat.completions.create(model="local/smollm2", messages=[...]).choices[0].message.content

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

    def close(self) -> None:
        self._client.close()


class AsyncOpenAI:
    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, timeout: Any = None,
                 max_retries: int = 2, **client_options: Any) -> None:
        from .client import AsyncClient

        self._client = AsyncClient(**_client_kwargs(api_key, base_url, timeout, max_retries), **client_options)
        self.chat = _Namespace(completions=_AsyncCompletions(self._client, base_url))
        self.embeddings = _AsyncEmbeddings(self._client, base_url)

    async def close(self) -> None:
        await self._client.aclose()
