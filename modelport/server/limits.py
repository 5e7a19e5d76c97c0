"""What a request may use and what it is charged, for per-key limits.

A request books the most it could use (a bound on its prompt's tokens plus ``max_tokens``,
priced at the model's rates) before it runs, and settles what it really used afterwards,
so settled usage never exceeds what was booked. The booking itself (rpm and tpm windows,
budget) is ``modelport.state.counters``'s job.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any, Iterable

from ..types import ChatRequest, ImagePart, Message, Usage

# Roughly four characters per token for English text with BPE tokenizers: a best guess, for
# answering token-count requests. Never used to book limits (CJK text is ~1 token per character).
CHARS_PER_TOKEN = 4
# Role markers and separators every chat template adds around a message.
TOKENS_PER_MESSAGE = 4
# What an image costs in the providers' accounting, order of magnitude.
TOKENS_PER_IMAGE = 800

# Bounds for booking limits. Every tokenizer of the models served (byte-level BPE: OpenAI,
# Llama, Qwen, SmolLM2; SentencePiece with byte fallback: Gemini, Mistral) spends at most one
# token per UTF-8 byte of text, so bytes bound tokens from above in every language.
# Chat templates add at most this many tokens around each message and each tool call ...
MESSAGE_OVERHEAD_BOUND = 8
# ... and this many to the request (the reply's priming, tool-definition framing).
REQUEST_OVERHEAD_BOUND = 16
# Anthropic adds a tool-use system prompt of up to ~350 tokens when tools are given.
TOOLS_OVERHEAD_BOUND = 512
# An image's tokens depend on the model, not on its bytes: 1,600 covers Anthropic (at most
# ~1,600 for 1.15 MP), Gemini (258 per tile) and gpt-4o (85 + 170 per tile, at most 8 tiles).
# gpt-4o-mini counts images at 33 times gpt-4o's tokens (and prices them to cost the same),
# so images are the one part of a prompt booked at an estimate rather than a bound.
IMAGE_TOKEN_BOUND = 1600


def _prompt_parts(request: ChatRequest) -> tuple[list[str], int, int]:
    """The prompt's texts (tool calls, tools and schemas included), its image count and its
    tool-call count."""
    texts: list[str] = []
    images = calls = 0
    for message in request.messages:
        for part in message.content:
            if isinstance(part, ImagePart):
                images += 1
            else:
                texts.append(getattr(part, "text", ""))
        for call in message.tool_calls:
            texts += (call.name, call.arguments)
        calls += len(message.tool_calls)
    for tool in request.tools:
        texts += (tool.name, tool.description, _schema_text(tool.parameters))
    if request.response_format is not None and request.response_format.schema:
        texts.append(_schema_text(request.response_format.schema))
    return texts, images, calls


def _schema_text(schema: Any) -> str:
    # The longest rendering a provider plausibly shows its model: indented, non-ASCII escaped.
    return json.dumps(schema, indent=2, default=str)


def estimate_tokens(request: ChatRequest) -> int:
    """Prompt tokens, estimated from characters: a best guess, not a bound."""
    texts, images, _ = _prompt_parts(request)
    chars = sum(map(len, texts))
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(request.messages) + TOKENS_PER_IMAGE * images


def prompt_token_bound(request: ChatRequest) -> int:
    """Prompt tokens no model's count exceeds (images aside, see IMAGE_TOKEN_BOUND)."""
    texts, images, calls = _prompt_parts(request)
    return (
        text_token_bound(texts)
        + MESSAGE_OVERHEAD_BOUND * (len(request.messages) + calls)
        + REQUEST_OVERHEAD_BOUND
        + (TOOLS_OVERHEAD_BOUND if request.tools else 0)
        + IMAGE_TOKEN_BOUND * images
    )


def message_floor(messages: int) -> int:
    """The least ``prompt_token_bound`` of any request with this many messages: what each
    message's framing alone books. Known as soon as the body is parsed, before it is decoded."""
    return MESSAGE_OVERHEAD_BOUND * messages + REQUEST_OVERHEAD_BOUND


def text_token_bound(texts: Iterable[str]) -> int:
    """Tokens no tokenizer exceeds for these texts: their UTF-8 bytes."""
    return sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)


def output_token_bound(message: Message, max_tokens: int | None) -> int:
    """Tokens a delivered answer used at most: its bytes, and no more than ``max_tokens``
    (the provider was told that cap, so it cannot have generated more)."""
    texts = [getattr(part, "text", "") for part in message.content]
    for call in message.tool_calls:
        texts += (call.name, call.arguments)
    if not any(texts):
        return 0
    bound = text_token_bound(texts) + MESSAGE_OVERHEAD_BOUND * len(message.tool_calls)
    return bound if max_tokens is None else min(bound, max_tokens)


def charged_usage(reported: Usage | None, prompt_bound: int, output_bound: int, *, complete: bool) -> Usage:
    """The usage a request is charged for.

    The provider's counts where it gave them. Where it did not (an upstream that sends no
    usage, a stream that ended before its usage chunk), the bounds: ``prompt_bound`` for the
    input, ``output_bound`` (what was delivered) for the output. An output count reported
    before the stream ended (Anthropic's message_start says 1) is not final, so an
    incomplete answer is charged at least what was delivered.
    """
    usage = reported or Usage()
    reported_output = usage.output_tokens
    output_tokens = reported_output if complete and reported_output else max(reported_output, output_bound)
    if not usage.input_tokens:
        return Usage(prompt_bound, output_tokens)
    return usage if output_tokens == reported_output else replace(usage, output_tokens=output_tokens)


def settlement(answer: Message | None, reported: Usage | None, prompt_bound: int, max_tokens: int, *, complete: bool, cut_off: bool) -> Usage | None:
    """What a finished call is charged: ``charged_usage`` once an answer (even part of one)
    came back; else the worst case if the gateway cut the call off while the upstream worked
    (what it used is unknown), else nothing (an upstream error, which providers do not bill)."""
    if answer is not None:
        return charged_usage(reported, prompt_bound, output_token_bound(answer, max_tokens), complete=complete)
    return Usage(prompt_bound, max_tokens) if cut_off else None
