"""The Gemini front door: ``/{v1,v1beta}/models/{model}:{method}`` and model listing.

Methods: generateContent, streamGenerateContent (SSE with ``alt=sse``, else one JSON
array), countTokens, embedContent and batchEmbedContents.
"""

from __future__ import annotations

import re
from typing import Awaitable, Callable, Iterable, Mapping

from ..dialects import gemini as dialect
from ..errors import NotFoundError
from ..types import ChatRequest
from .http import Request
from .limits import estimate_tokens
from .routes import Route
from .pipeline import listed
from .services import Services


def speaks_gemini(headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    """GET /v1/models and /v1/models/{id} are both OpenAI's and Gemini's (genai 3.x uses /v1)."""
    return "x-goog-api-key" in headers or "x-goog-api-client" in headers or "key" in query


class GeminiDoor:
    # A path under these that no route serves is answered in Gemini's error shape.
    error_prefixes = ("/v1beta", "/v1alpha")
    dialect = dialect

    def __init__(self, services: Services) -> None:
        self.services = services
        self._methods: dict[str, Callable[[Request, str, str], Awaitable[None]]] = {
            "generateContent": self.generate,
            "streamGenerateContent": self.stream,
            "countTokens": self.count_tokens,
            "embedContent": self.embed,
            "batchEmbedContents": self.embed,
        }

    def routes(self) -> Iterable[Route]:
        for version in ("/v1beta", "/v1alpha"):
            yield Route("GET", version + "/models", self.models, dialect, "gemini")
        yield Route("GET", "/v1/models", self.models, dialect, "gemini", claims=speaks_gemini)
        # The model may hold slashes and colons (qwen:latest), the method follows the last
        # colon. Bare /models/...: LiteLLM with the gateway's URL as its Gemini api_base.
        methods = "|".join(self._methods)
        yield Route("POST", re.compile(rf"^(?:/v1(?:beta|alpha)?/(?:models/)?|/models/)(.+):({methods})$"), self.method, dialect, "gemini",
                    runs_model=True)
        yield Route("GET", re.compile(r"^/v1(?:beta|alpha)/models/(.+)$"), self.model, dialect, "gemini")
        yield Route("GET", re.compile(r"^/v1/models/(.+)$"), self.model, dialect, "gemini", claims=speaks_gemini)

    async def method(self, req: Request, model: str, method: str) -> None:
        handler = self._methods.get(method)
        if handler is None:
            raise NotFoundError(f"unknown method {method!r}; this gateway serves {', '.join(self._methods)}", code="unknown_url")
        await handler(req, self._model_name(model), method)

    async def _chat_request(self, req: Request, model: str) -> ChatRequest:
        body = await req.json(self.services.settings.max_body_bytes)
        self.services.pipeline.refuse_unaffordable(req, listed(body, "contents"))
        return await req.decode(dialect.decode_request, body, model)

    async def generate(self, req: Request, model: str, _: str) -> None:
        request = await self._chat_request(req, model)
        response = await self.services.pipeline.chat(req, request)
        await req.respond(dialect.encode_response(response, model))

    async def stream(self, req: Request, model: str, _: str) -> None:
        request = await self._chat_request(req, model)
        if req.query.get("alt") == "sse":
            await self.services.pipeline.stream(req, request, dialect.StreamEncoder(model))
            return
        # Without alt=sse Gemini answers with a JSON array of responses; one whole one is a valid array.
        response = await self.services.pipeline.chat(req, request)
        await req.respond([dialect.encode_response(response, model)])

    async def count_tokens(self, req: Request, model: str, _: str) -> None:
        request = await req.decode(dialect.decode_count_tokens_request, await req.json(self.services.settings.max_body_bytes), model)
        await self.services.admit_model(req, model)
        await req.respond(dialect.encode_count_tokens_response(estimate_tokens(request)))

    async def embed(self, req: Request, model: str, method: str) -> None:
        inputs = await req.decode(dialect.decode_embeddings_request, await req.json(self.services.settings.max_body_bytes))
        response = await self.services.pipeline.embed(req, model, inputs)
        await req.respond(dialect.encode_embeddings_response(response, batch=method == "batchEmbedContents"))

    async def models(self, req: Request) -> None:
        await req.respond(dialect.encode_models(self.services.list_models(req)))

    async def model(self, req: Request, model: str) -> None:
        info = self.services.find_model(req, self._model_name(model))
        await req.respond(dialect.encode_model(info))

    def _model_name(self, path_model: str) -> str:
        # The genai SDK writes models/{name}; a bare name is accepted too, as Google's API does,
        # and a name without a provider finds the one model it names (smollm2: local/smollm2).
        name = path_model[7:] if path_model.startswith("models/") else path_model
        return self.services.router.bare(name)
