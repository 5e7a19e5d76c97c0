"""Backends: the only code that talks to models.

Every backend offers the same methods (``base.Backend``), so the client, the gateway and
the batch engine never care which one they hold:

    chat(request, model_id) -> ChatResponse
    stream(request, model_id) -> Iterator[StreamEvent]
    async achat(request, model_id) -> ChatResponse
    astream(request, model_id) -> AsyncIterator[StreamEvent]
    embed(inputs, model_id) -> EmbeddingResponse;  async aembed(inputs, model_id)
    list_models() -> list[ModelInfo]
    close();  async aclose()

``http.HttpBackend`` serves every remote or local-server provider through its dialect;
``local.LocalBackend`` runs GGUF models in process on llama.cpp.
"""

from contextvars import ContextVar

# Who is asking, as the gateway knows it (the key's name, "-" without one); None outside the
# gateway. Backends that share one resource between callers (the embedded engine's slots)
# read it to share fairly; the gateway sets it per request, so no method signature changes.
current_caller: ContextVar[str | None] = ContextVar("modelport_caller", default=None)
