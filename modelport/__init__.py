"""modelport: one honest way to use large language models through their APIs.

    import modelport
    print(modelport.chat("local/smollm2", "What is a REST API?").text)

Everything here is imported on first use, so ``import modelport`` costs almost nothing.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Client": "modelport.client",
    "AsyncClient": "modelport.client",
    "ChatStream": "modelport.client",
    "AsyncChatStream": "modelport.client",
    "OpenAI": "modelport.compat",
    "AsyncOpenAI": "modelport.compat",
    "Timeouts": "modelport.transport",
    "batch": "modelport.batch",
    **{
        name: "modelport.types"
        for name in (
            "ChatRequest", "ChatResponse", "Message", "TextPart", "ImagePart", "ReasoningPart", "Tool",
            "ToolCall", "ToolChoice", "ResponseFormat", "Usage", "StreamEvent", "EmbeddingResponse",
        )
    },
    **{
        name: "modelport.errors"
        for name in (
            "ModelportError", "ConfigError", "BadRequestError", "ContextLengthError", "AuthenticationError",
            "PermissionDeniedError", "NotFoundError", "RateLimitError", "QuotaExceededError", "ServerError",
            "OverloadedError", "TimeoutError", "ConnectionError", "StreamError", "UpstreamProtocolError",
        )
    },
}

__all__ = ["chat", "stream", "achat", "astream", "embed", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from .types import ChatResponse


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelport' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


_default: dict[str, Any] = {}
_default_lock = threading.Lock()


def _client(kind: str) -> Any:
    client = _default.get(kind)
    if client is None:
        with _default_lock:
            client = _default.get(kind)
            if client is None:
                from . import client as client_module

                client = _default[kind] = getattr(client_module, kind)()
    return client


def chat(model: str | None = None, prompt: Any = None, *, system: str | None = None, **params: Any) -> ChatResponse:
    """Ask a model once and get its answer: ``chat("openai/gpt-4o-mini", "Hi").text``."""
    return _client("Client").chat(model, prompt, system=system, **params)


def stream(model: str | None = None, prompt: Any = None, *, system: str | None = None, **params: Any) -> Any:
    """Stream an answer: ``for ev in stream(...): print(ev.text, end="")``."""
    return _client("Client").stream(model, prompt, system=system, **params)


async def achat(model: str | None = None, prompt: Any = None, *, system: str | None = None, **params: Any) -> ChatResponse:
    return await _client("AsyncClient").chat(model, prompt, system=system, **params)


def astream(model: str | None = None, prompt: Any = None, *, system: str | None = None, **params: Any) -> Any:
    return _client("AsyncClient").stream(model, prompt, system=system, **params)


def embed(model: str, inputs: Any) -> Any:
    return _client("Client").embed(model, inputs)
