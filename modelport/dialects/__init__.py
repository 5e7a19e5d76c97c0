"""Dialects: pure translations between one wire format and the canonical types.

Each dialect module (``openai``, ``anthropic``, ``gemini``, ``ollama``) is used in both directions and
does no I/O. It provides:

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

Server side (the gateway answering a caller)
    decode_request(body, model=None) -> ChatRequest   raises BadRequestError naming the field
    encode_response(response, model) -> dict
    StreamEncoder(model, include_usage).encode(event) -> bytes; .close() -> bytes;
        .error(exc) -> bytes; an optional ``media_type`` (bytes) when the stream is not SSE
    encode_error(exc) -> (status, body, headers)
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

DIALECTS = ("openai", "anthropic", "gemini", "ollama")


def get(name: str) -> ModuleType:
    """Import a dialect module on first use so unused ones cost nothing."""
    if name not in DIALECTS:
        raise KeyError(f"unknown dialect {name!r}; known: {', '.join(DIALECTS)}")
    return importlib.import_module(f"modelport.dialects.{name}")


def decode_sse(dialect: ModuleType, raw: bytes, *args: Any) -> list[Any]:
    """Every StreamEvent in a complete SSE body, read by one dialect's StreamDecoder
    (``args`` go to the decoder, e.g. the provider name)."""
    from ..sse import SSEParser

    parser, decoder = SSEParser(), dialect.StreamDecoder(*args)
    events: list[Any] = []
    for name, data in parser.feed(raw) + parser.close():
        events.extend(decoder.feed(name, data))
    return events
