"""The Gemini front door: ``/{v1,v1beta}/models/{model}:{method}`` and model listing.

Methods: generateContent, streamGenerateContent (SSE with ``alt=sse``, else one JSON
array), countTokens, embedContent and batchEmbedContents.
"""

from __future__ import annotations

from typing import Any

from ..errors import NotFoundError
from .app import Gateway, Request
from .limits import estimate_tokens


class GeminiDoor:
    def __init__(self, gateway: Gateway, dialect: Any) -> None:
        self.gateway = gateway
        self.dialect = dialect
        self._methods = {
            "generateContent": self.generate,
            "streamGenerateContent": self.stream,
            "countTokens": self.count_tokens,
            "embedContent": self.embed,
            "batchEmbedContents": self.embed,
        }

    @property
    def method_names(self) -> tuple[str, ...]:
        return tuple(self._methods)

    async def method(self, req: Request, arg: str) -> None:
        model, _, method = arg.partition("\0")
        handler = self._methods.get(method)
        if handler is None:
            raise NotFoundError(f"unknown method {method!r}; this gateway serves {', '.join(self._methods)}", code="unknown_url")
        await handler(req, self._model_name(model), method)

    async def generate(self, req: Request, model: str, _: str) -> None:
        gateway, dialect = self.gateway, self.dialect
        request = await gateway.decode(req, dialect.decode_request, await req.json(gateway.settings.max_body_bytes), model)
        response = await gateway.chat(req, request)
        await gateway.respond(req, dialect.encode_response(response, model))

    async def stream(self, req: Request, model: str, _: str) -> None:
        gateway, dialect = self.gateway, self.dialect
        request = await gateway.decode(req, dialect.decode_request, await req.json(gateway.settings.max_body_bytes), model)
        if req.query.get("alt") == "sse":
            await gateway.stream(req, request, dialect.StreamEncoder(model))
            return
        # Without alt=sse Gemini answers with a JSON array of responses; one whole one is a valid array.
        response = await gateway.chat(req, request)
        await gateway.respond(req, [dialect.encode_response(response, model)])

    async def count_tokens(self, req: Request, model: str, _: str) -> None:
        gateway, dialect = self.gateway, self.dialect
        request = await gateway.decode(req, dialect.decode_count_tokens_request, await req.json(gateway.settings.max_body_bytes), model)
        await gateway.admit_model(req, model)
        await gateway.respond(req, dialect.encode_count_tokens_response(estimate_tokens(request)))

    async def embed(self, req: Request, model: str, method: str) -> None:
        gateway, dialect = self.gateway, self.dialect
        inputs = await gateway.decode(req, dialect.decode_embeddings_request, await req.json(gateway.settings.max_body_bytes))
        response = await gateway.embed(req, model, inputs)
        await gateway.respond(req, dialect.encode_embeddings_response(response, batch=method == "batchEmbedContents"))

    async def models(self, req: Request, _: str) -> None:
        await self.gateway.respond(req, self.dialect.encode_models(self.gateway.list_models(req)))

    async def model(self, req: Request, model: str) -> None:
        model = self._model_name(model)
        info = self.gateway.find_model(req, model)
        await self.gateway.respond(req, self.dialect.encode_model(info))

    def _model_name(self, path_model: str) -> str:
        # The genai SDK writes models/{name}; a bare name is accepted too (protocols §9.14),
        # and a name without a provider finds the one model it names (smollm2: local/smollm2).
        name = path_model[7:] if path_model.startswith("models/") else path_model
        return self.gateway.router.bare(name)
