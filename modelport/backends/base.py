"""The seam of a backend, as types: what the client, the gateway's pipeline and the batch
engine call on whichever backend a provider's ``backend`` column names (``http``, ``local``,
or one a plugin registers in the ``modelport.backends`` entry-point group).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AsyncGenerator, Iterator, Protocol

if TYPE_CHECKING:
    from ..providers import Provider
    from ..retry import RetryPolicy
    from ..transport import Timeouts
    from ..types import ChatRequest, ChatResponse, EmbeddingResponse, ModelInfo, StreamEvent


class Backend(Protocol):
    """Chat, streams and embeddings for one provider, sync and async. A backend may also have
    a ``missing_key`` property: while it is true the client builds the backend again, so a
    key set after the first call is picked up."""

    def chat(self, request: ChatRequest, model_id: str) -> ChatResponse: ...

    def stream(self, request: ChatRequest, model_id: str) -> Iterator[StreamEvent]: ...

    async def achat(self, request: ChatRequest, model_id: str) -> ChatResponse: ...

    def astream(self, request: ChatRequest, model_id: str) -> AsyncGenerator[StreamEvent, None]:
        """An async generator, so that ``aclose`` ends the call early (the caller hung up)."""
        ...

    def embed(self, inputs: list[str], model_id: str) -> EmbeddingResponse: ...

    async def aembed(self, inputs: list[str], model_id: str) -> EmbeddingResponse: ...

    def list_models(self) -> list[ModelInfo]: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


class BackendClass(Protocol):
    """How the client makes a backend for a provider: every backend takes these arguments,
    whether or not it has a use for them (an in-process engine has no key or address)."""

    def __call__(self, provider: Provider, *, api_key: str | None, url: str | None, timeouts: Timeouts,
                 retry: RetryPolicy) -> Backend: ...
