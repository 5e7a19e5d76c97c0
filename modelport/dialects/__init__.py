"""Dialects: pure translations between one wire format and the canonical types.

Each dialect module (``openai``, ``anthropic``, ``gemini``, ``openai-responses``, ``ollama``, and any a
plugin registers in the ``modelport.dialects`` entry-point group) is used in both directions and
does no I/O. It provides (``base.py`` types each half as a Protocol):

Client side (modelport calling a provider)
    chat_path(model_id, stream) -> str            path relative to the provider base URL
    encode_request(request, model_id) -> dict     JSON body for the provider
    decode_response(body, provider) -> ChatResponse
    StreamDecoder().feed(event, data) -> list[StreamEvent]   one SSE event at a time
    StreamParser (optional)                       the stream framing: a parser class like
                                                  sse.SSEParser (the default), e.g. NDJSON
    decode_error(status, body, headers, provider) -> ModelportError
    retry_after(headers, body) -> float | None    the provider's own retry hint, seconds
    encode_embeddings_request(inputs, model_id) -> (path, body);  decode_embeddings_response
                                                  (optional: only with an embeddings API)

Server side (the gateway answering a caller)
    decode_request(body, model=None) -> ChatRequest   raises BadRequestError naming the field
    encode_response(response, model) -> dict
    StreamEncoder(model, include_usage).encode(event) -> bytes; .close() -> bytes;
        .error(exc) -> bytes; await .flush(); ``media_type`` (bytes) when the stream is not
        SSE (``base.StreamEncoderBase`` gives the defaults)
    encode_error(exc) -> (status, body, headers)

Client-side decoders are wrapped in ``upstream_decoder``: JSON of the wrong shape from a
provider becomes an ``UpstreamProtocolError`` (a 502), never a raw AttributeError.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Callable, TypeVar

from .. import plugins
from ..errors import ModelportError, UpstreamProtocolError
from ..types import ChatResponse, EmbeddingResponse, InvalidShape, StreamEvent, check_embeddings, check_event, check_response


def get(name: str) -> ModuleType:
    """The dialect registered as ``name``, imported on first use so unused ones cost nothing.
    KeyError names the installed ones when no distribution registers ``name``."""
    return plugins.load(plugins.DIALECTS, name)


def names() -> list[str]:
    """The installed dialects' names."""
    return plugins.names(plugins.DIALECTS)


def decode_sse(dialect: ModuleType, raw: bytes, *args: Any) -> list[Any]:
    """Every StreamEvent in a complete SSE body, read by one dialect's StreamDecoder
    (``args`` go to the decoder, e.g. the provider name)."""
    from ..sse import SSEParser

    parser, decoder = SSEParser(), dialect.StreamDecoder(*args)
    events: list[Any] = []
    for name, data in parser.feed(raw) + parser.close():
        events.extend(decoder.feed(name, data))
    return events


F = TypeVar("F", bound=Callable[..., Any])

# What reading a dict as if it were the API's shape raises when it is not: .get on a list,
# [0] of an empty string, int("x"), a schema nested past the recursion limit.
_SHAPE_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError)


def upstream_decoder(decode: F) -> F:
    """Wrap a decoder of provider output (a response, a stream chunk, embeddings): its
    result is checked against the canonical types, and any sign that the JSON was not
    shaped as the API defines becomes an UpstreamProtocolError naming the provider.

    The provider is the decoder's ``provider`` argument or its object's attribute."""

    @functools.wraps(decode)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            result = decode(*args, **kwargs)
            if type(result) is list:
                for item in result:
                    check_event(item)
            elif isinstance(result, ChatResponse):
                check_response(result)
            elif isinstance(result, EmbeddingResponse):
                check_embeddings(result)
            return result
        except ModelportError:
            raise
        except _SHAPE_ERRORS as exc:
            raise _wrong_shape(_provider(decode, args, kwargs), exc) from None

    return guarded  # type: ignore[return-value]


def _provider(decode: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The decoder's ``provider`` argument (its default too), else its object's attribute."""
    import inspect

    bound = inspect.signature(decode).bind_partial(*args, **kwargs)
    bound.apply_defaults()
    provider = bound.arguments.get("provider")
    if provider is None and args:
        provider = getattr(args[0], "provider", None)
    return str(provider or "the upstream")


def _wrong_shape(provider: str, exc: BaseException) -> UpstreamProtocolError:
    detail = str(exc) if isinstance(exc, InvalidShape) else f"{type(exc).__name__}: {str(exc)[:200]}"
    return UpstreamProtocolError(
        f"{provider} answered with JSON that does not match its API ({detail})",
        provider=provider if provider != "the upstream" else None,
        hint="the upstream is not speaking the expected API, or changed it; check the provider's base URL and version",
    )
