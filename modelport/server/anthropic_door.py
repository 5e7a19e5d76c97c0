"""The Anthropic front door: Messages (streamed or not) and token counting."""

from __future__ import annotations

from typing import Any

from .app import Gateway, Request
from .limits import estimate_tokens


class AnthropicDoor:
    def __init__(self, gateway: Gateway, dialect: Any) -> None:
        self.gateway = gateway
        self.dialect = dialect

    async def messages(self, req: Request, _: str) -> None:
        gateway, dialect = self.gateway, self.dialect
        request = await gateway.decode(req, dialect.decode_request, await req.json(gateway.settings.max_body_bytes))
        if request.stream:
            await gateway.stream(req, request, dialect.StreamEncoder(request.model))
            return
        response = await gateway.chat(req, request)
        await gateway.respond(req, dialect.encode_response(response, request.model))

    async def models(self, req: Request, _: str) -> None:
        await self.gateway.respond(req, self.dialect.encode_models(self.gateway.list_models(req)))

    async def count_tokens(self, req: Request, _: str) -> None:
        # An estimate: backends offer no tokenizer call, and the count only has to be
        # good enough to budget a context window.
        gateway, dialect = self.gateway, self.dialect
        request = await gateway.decode(req, dialect.decode_count_tokens_request, await req.json(gateway.settings.max_body_bytes))
        await gateway.admit_model(req, request.model)
        await gateway.respond(req, dialect.encode_count_tokens_response(estimate_tokens(request)))
