"""The seams of a dialect, as types: what its client half (modelport calling a provider) and
its server half (the gateway answering a caller) provide, and its stream encoder.

A dialect is a module; these Protocols are what the backends, the gateway and the type
checker hold it to. Each wire format's module may offer more (Ollama's ``encode_tags``), which
only its own door uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol, runtime_checkable

from ..errors import BadRequestError, ModelportError
from ..types import ChatRequest, ChatResponse, EmbeddingResponse, StreamEvent


def check_one_choice(count: int | None, param: str) -> None:
    """Refuse a request for other than one choice (OpenAI's ``n``, Gemini's
    ``candidateCount``). The canonical response holds one message, so forwarding a larger
    count would bill the caller for answers it never gets; a count below 1 is no request."""
    if count is None or count == 1:
        return
    if count < 1:
        raise BadRequestError(f"{param}: expected a whole number of at least 1, got {count}", param=param, code="invalid_value",
                              hint=f"leave {param} out for one answer")
    raise BadRequestError(f"{param}: {count} answers per request are not supported: this gateway returns one",
                          param=param, code="invalid_value",
                          hint=f"send {count} requests (with different seeds for different answers), or leave {param} out")


class EventDecoder(Protocol):
    """A stream's events in the provider's framing, one at a time, as canonical StreamEvents."""

    def feed(self, event: str | None, data: str) -> list[StreamEvent]: ...


class StreamEncoder(Protocol):
    """Canonical stream events to the caller's wire format, one event at a time."""

    @property
    def media_type(self) -> bytes | None:
        """The content type of the stream when it is not SSE (Ollama's NDJSON); None: SSE."""

    def encode(self, event: StreamEvent) -> bytes: ...

    def close(self) -> bytes: ...

    def error(self, exc: BaseException) -> bytes: ...

    async def flush(self) -> None:
        """Finish what the last event promises (a stored response) before it is sent."""


class StreamEncoderBase:
    """The defaults every stream encoder shares: SSE, and nothing to finish before the end."""

    media_type: ClassVar[bytes | None] = None

    async def flush(self) -> None:
        return None


class ClientDialect(Protocol):
    """What a backend needs to call a provider in this wire format. Optional: a
    ``StreamParser`` class (the stream's framing; SSE without one), and ``EmbeddingsDialect``'s
    functions where the provider has an embeddings API."""

    @property
    def StreamDecoder(self) -> Callable[[], EventDecoder]:  # noqa: N802 - the dialect's class of that name
        """One decoder per stream."""

    def chat_path(self, model_id: str, stream: bool) -> str: ...

    def encode_request(self, req: ChatRequest, model_id: str) -> dict[str, Any]: ...

    def decode_response(self, body: dict[str, Any], provider: str) -> ChatResponse: ...

    def decode_error(self, status: int, body: Any, headers: Mapping[str, str], provider: str) -> ModelportError: ...

    def retry_after(self, headers: Mapping[str, str], body: Any = None) -> float | None: ...


@runtime_checkable
class EmbeddingsDialect(Protocol):
    """The client half of a wire format with an embeddings API (Anthropic's has none)."""

    def encode_embeddings_request(self, inputs: list[str], model_id: str) -> tuple[str, dict[str, Any]]:
        """The path, relative to the provider's base URL, and the body."""

    def decode_embeddings_response(self, body: dict[str, Any], provider: str) -> EmbeddingResponse: ...


class ServerDialect(Protocol):
    """What the gateway needs to answer a caller in this wire format: every route's errors
    speak its door's dialect."""

    def encode_error(self, exc: BaseException) -> tuple[int, Any, dict[str, str]]: ...


if TYPE_CHECKING:  # the built-in dialects, held to these Protocols by the type checker
    from . import anthropic, gemini, ollama, openai, openai_responses

    _anthropic: tuple[ClientDialect, ServerDialect] = (anthropic, anthropic)
    _gemini: tuple[ClientDialect, ServerDialect, EmbeddingsDialect] = (gemini, gemini, gemini)
    _ollama: tuple[ClientDialect, ServerDialect, EmbeddingsDialect] = (ollama, ollama, ollama)
    _openai: tuple[ClientDialect, ServerDialect, EmbeddingsDialect] = (openai, openai, openai)
    _responses: tuple[ClientDialect, ServerDialect, EmbeddingsDialect] = (openai_responses, openai_responses, openai_responses)
