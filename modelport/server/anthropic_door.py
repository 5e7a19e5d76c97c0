"""The Anthropic front door: Messages (streamed or not), token counting, and the model list
for callers that say they speak Anthropic (``anthropic-version``)."""

from __future__ import annotations

from typing import Iterable, Mapping

from ..dialects import anthropic as dialect
from .http import Request
from .limits import estimate_tokens
from .routes import Route
from .pipeline import listed
from .services import Services


def speaks_anthropic(headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    return "anthropic-version" in headers


class AnthropicDoor:
    def __init__(self, services: Services) -> None:
        self.services = services

    def routes(self) -> Iterable[Route]:
        yield Route("POST", "/v1/messages", self.messages, dialect, "anthropic", runs_model=True)
        yield Route("POST", "/v1/messages/count_tokens", self.count_tokens, dialect, "anthropic")
        yield Route("GET", "/v1/models", self.models, dialect, "anthropic", claims=speaks_anthropic)

    async def messages(self, req: Request) -> None:
        pipeline = self.services.pipeline
        body = await req.json(self.services.settings.max_body_bytes)
        pipeline.refuse_unaffordable(req, listed(body, "messages"))
        request = await req.decode(dialect.decode_request, body)
        forwarded = {name: req.headers[name] for name in dialect.FORWARDED_HEADERS if name in req.headers}
        if forwarded:
            request.dialect_headers = {"anthropic": forwarded}
        if request.stream:
            await pipeline.stream(req, request, dialect.StreamEncoder(request.model))
            return
        response = await pipeline.chat(req, request)
        await req.respond(dialect.encode_response(response, request.model))

    async def models(self, req: Request) -> None:
        await req.respond(dialect.encode_models(self.services.list_models(req)))

    async def count_tokens(self, req: Request) -> None:
        # An estimate: backends offer no tokenizer call, and the count only has to be
        # good enough to budget a context window.
        request = await req.decode(dialect.decode_count_tokens_request, await req.json(self.services.settings.max_body_bytes))
        await self.services.admit_model(req, request.model)
        await req.respond(dialect.encode_count_tokens_response(estimate_tokens(request)))
