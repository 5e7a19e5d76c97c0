"""The OpenAI front door (also Groq's ``/openai/v1`` and LM Studio's base URL): chat
completions, legacy completions, embeddings and models, glued to the gateway's services.

The legacy ``/v1/completions`` form has no canonical counterpart, so its small translation
(prompt in, ``text_completion`` out) lives here rather than in the dialect.
"""

from __future__ import annotations

import os
import time
import re
from typing import Any, Iterable

from ..dialects import openai as dialect
from ..dialects.base import StreamEncoderBase
from ..errors import BadRequestError
from ..jsonio import dumps
from ..types import StreamEvent, Usage
from .http import Request
from .routes import Route
from .pipeline import listed
from .services import Services

# What OpenAI's legacy completions endpoint defaults max_tokens to: far below chat's.
LEGACY_DEFAULT_MAX_TOKENS = 16


class OpenAIDoor:
    """Under /v1 (its SDK), bare (a base URL without /v1) and /openai/v1 (Groq's SDK)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.pipeline = services.pipeline

    def routes(self) -> Iterable[Route]:
        for prefix in ("/v1", "", "/openai/v1"):
            yield Route("POST", prefix + "/chat/completions", self.chat_completions, dialect, "openai", runs_model=True)
            yield Route("POST", prefix + "/completions", self.completions, dialect, "openai", runs_model=True)
            yield Route("POST", prefix + "/embeddings", self.embeddings, dialect, "openai", runs_model=True)
            yield Route("GET", prefix + "/models", self.models, dialect, "openai")
        yield Route("GET", re.compile(r"^(?:/openai)?/v1/models/(.+)$"), self.model, dialect, "openai")
        yield Route("GET", re.compile(r"^/models/(.+)$"), self.model, dialect, "openai")

    async def chat_completions(self, req: Request) -> None:
        body = await req.json(self.services.settings.max_body_bytes)
        self.pipeline.refuse_unaffordable(req, listed(body, "messages"))
        request = await req.decode(dialect.decode_request, body)
        if request.stream:
            encoder = dialect.StreamEncoder(request.model, dialect.stream_include_usage(body))
            await self.pipeline.stream(req, request, encoder)
            return
        response = await self.pipeline.chat(req, request)
        await req.respond(dialect.encode_response(response, request.model))

    async def completions(self, req: Request) -> None:
        body = await req.json(self.services.settings.max_body_bytes)
        if not isinstance(body, dict):
            raise BadRequestError("body: expected a JSON object", param="body")
        prompt = _prompt(body.get("prompt"))
        chat_body = {k: v for k, v in body.items() if k not in ("prompt", "suffix", "echo", "best_of", "logprobs")}
        chat_body["messages"] = [{"role": "user", "content": prompt}]
        if chat_body.get("max_tokens") is None:
            chat_body["max_tokens"] = LEGACY_DEFAULT_MAX_TOKENS
        request = await req.decode(dialect.decode_request, chat_body)
        if request.stream:
            await self.pipeline.stream(req, request, CompletionStreamEncoder(request.model, dialect.stream_include_usage(body)))
            return
        response = await self.pipeline.chat(req, request)
        choice = {"index": 0, "text": response.text, "logprobs": None, "finish_reason": _finish(response.finish_reason)}
        await req.respond({
            "id": _new_id(), "object": "text_completion", "created": int(time.time()), "model": request.model,
            "choices": [choice], "usage": _usage(response.usage),
        })

    async def embeddings(self, req: Request) -> None:
        body = await req.json(self.services.settings.max_body_bytes)
        model, inputs, encoding_format = await req.decode(dialect.decode_embeddings_request, body)
        response = await self.pipeline.embed(req, model, inputs)
        response.model = model
        await req.respond(dialect.encode_embeddings_response(response, encoding_format))

    async def models(self, req: Request) -> None:
        await req.respond(dialect.encode_models(self.services.list_models(req)))

    async def model(self, req: Request, model: str) -> None:
        info = self.services.find_model(req, model)
        await req.respond(dialect.encode_models([info])["data"][0])


def _prompt(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
        return raw[0]
    if raw is None:
        raise BadRequestError("prompt: required", param="prompt", code="missing_required_parameter")
    raise BadRequestError("prompt: expected a string (one prompt per request; token arrays are not supported)", param="prompt", code="invalid_type")


def _new_id() -> str:
    return "cmpl-" + os.urandom(12).hex()


def _finish(reason: str | None) -> str:
    # text_completion knows stop, length and content_filter only.
    return reason if reason in ("length", "content_filter") else "stop"


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens, "total_tokens": usage.total_tokens}


class CompletionStreamEncoder(StreamEncoderBase):
    """Canonical stream events to ``text_completion`` chunks, ending with ``[DONE]``."""

    __slots__ = ("model", "include_usage", "_head", "_usage", "_finish")

    def __init__(self, model: str, include_usage: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self._head = {"id": _new_id(), "object": "text_completion", "created": int(time.time()), "model": model}
        self._usage = Usage()
        self._finish: str | None = None

    def _chunk(self, text: str, finish: str | None) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return b"data: " + dumps({**self._head, "choices": [choice]}) + b"\n\n"

    def encode(self, event: StreamEvent) -> bytes:
        if event.kind == "text" and event.text:
            return self._chunk(event.text, None)
        if event.kind in ("usage", "finish"):
            self._usage = event.usage or self._usage
            self._finish = event.finish_reason or self._finish
        return b""

    def close(self) -> bytes:
        out = self._chunk("", _finish(self._finish))
        if self.include_usage:
            out += b"data: " + dumps({**self._head, "choices": [], "usage": _usage(self._usage)}) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def error(self, exc: BaseException) -> bytes:
        _, body, _ = dialect.encode_error(exc)
        return b"data: " + dumps(body) + b"\n\n"
