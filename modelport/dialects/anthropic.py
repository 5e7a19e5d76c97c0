"""Anthropic Messages API (``POST /v1/messages``), both directions.

Policies, decided once here:

* System messages are hoisted to the top-level ``system`` wherever they stood (Anthropic has
  no other slot); one text part is sent as a string, several as text blocks.
* ``max_tokens`` is required on the wire: ``DEFAULT_MAX_TOKENS`` when the caller gave none.
  With thinking on, the thinking budget is added on top so the answer keeps its room.
* ``temperature`` above 1.0 (OpenAI's range goes to 2) is clamped to 1.0.
* ``reasoning_effort`` becomes ``thinking.budget_tokens`` via ``REASONING_BUDGETS``, kept
  below ``max_tokens``; "none" disables thinking.
* ``json_object`` has no Anthropic form: it becomes ``JSON_OBJECT_INSTRUCTION`` in the system
  prompt. ``json_schema`` goes to ``output_config.format``.
* Reasoning without a signature cannot be replayed to Anthropic (it verifies them) and is
  dropped from requests. ``redacted_thinking`` blocks have no canonical form and are skipped.
* Tool-call ids that break Anthropic's ``^[a-zA-Z0-9_-]+$`` are rewritten deterministically,
  so a call and its result still pair up when the history comes back.
* Prompt-cache breakpoints (``cache_control``) travel both ways wherever the Messages API
  allows them: system and content blocks, tools, tool_use and tool_result blocks, and the
  top level. A block with a breakpoint is never shortened to a string.
* Not expressible: seed, presence/frequency penalties, ``n``, the response_format name and
  strict flag, image ``detail``; they are dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from typing import Any, Mapping

from modelport.dialects.base import StreamEncoderBase
from . import upstream_decoder
from ..errors import BadRequestError, ModelportError, OverloadedError, QuotaExceededError, StreamError, error_for_status
from ..retry import parse_retry_after
from ..sse import format_event
from ..types import (
    CACHE_TTLS,
    REASONING_BUDGETS,
    CacheMark,
    ChatRequest,
    ChatResponse,
    FinishReason,
    ImagePart,
    InvalidShape,
    ModelInfo,
    Message,
    Part,
    ReasoningPart,
    ResponseFormat,
    StreamEvent,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
    dump_json,
    effort_for_budget,
)

DEFAULT_MAX_TOKENS = 4096
# Request headers of a caller that turn on features of the API (betas such as 1h cache
# lifetimes or long context): meaningful to an Anthropic upstream only.
FORWARDED_HEADERS = ("anthropic-beta",)
# The most cache_control breakpoints one request may carry.
CACHE_BREAKPOINTS = 4
# Anthropic's floor for thinking.budget_tokens.
MIN_THINKING_BUDGET = 1024
JSON_OBJECT_INSTRUCTION = "Respond with a single JSON object and nothing else."

_STOP_FROM_WIRE: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_TO_WIRE = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal", "error": "end_turn"}
_EFFORT_FROM_OUTPUT_CONFIG = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def chat_path(model_id: str, stream: bool = False) -> str:
    return "/v1/messages"


# -- shared pieces ---------------------------------------------------------------------


def _tool_id(call_id: str) -> str:
    """Ids from other providers may hold characters Anthropic rejects; same input, same output."""
    if _TOOL_ID.match(call_id):
        return call_id
    return "toolu_" + hashlib.sha256(call_id.encode()).hexdigest()[:24]


def _marked(block: dict[str, Any], mark: CacheMark) -> dict[str, Any]:
    """``block`` with its cache_control when ``mark`` sets a breakpoint (True: the default
    lifetime, which the wire leaves unsaid; "5m"/"1h": that ``ttl``)."""
    if mark:
        block["cache_control"] = {"type": "ephemeral"} if mark is True else {"type": "ephemeral", "ttl": mark}
    return block


def _image_block(part: ImagePart) -> dict[str, Any]:
    image = ImagePart.from_url(part.data_url)
    if image.url is not None:
        return _marked({"type": "image", "source": {"type": "url", "url": image.url}}, part.cache)
    return _marked({"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.data}}, part.cache)


def _plain_text(blocks: list[dict[str, Any]]) -> bool:
    """One text block without a breakpoint: the wire's string shorthand says the same."""
    return len(blocks) == 1 and blocks[0]["type"] == "text" and "cache_control" not in blocks[0]


def _content_blocks(parts: list[Part], *, unsigned_reasoning: bool = False) -> list[dict[str, Any]]:
    """Blocks for parts; reasoning without a signature only where nobody will verify it
    (responses to callers), never in requests to Anthropic, which would reject it."""
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append(_marked({"type": "text", "text": part.text}, part.cache))
        elif isinstance(part, ImagePart):
            blocks.append(_image_block(part))
        elif part.signature or unsigned_reasoning:
            blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature or ""})
    return blocks


def _tool_use_block(call: ToolCall) -> dict[str, Any]:
    return _marked({"type": "tool_use", "id": _tool_id(call.id), "name": call.name, "input": call.args_object()}, call.cache)


def _usage_to_wire(usage: Usage) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "input_tokens": max(0, usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }
    if usage.reasoning_tokens:
        wire["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return wire


def _usage_from_wire(wire: Mapping[str, Any]) -> Usage:
    """Anthropic's input_tokens exclude cache reads and writes; canonical input includes them."""
    read = wire.get("cache_read_input_tokens") or 0
    write = wire.get("cache_creation_input_tokens") or 0
    details = wire.get("output_tokens_details") or {}
    return Usage(
        input_tokens=(wire.get("input_tokens") or 0) + read + write,
        output_tokens=wire.get("output_tokens") or 0,
        cached_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=details.get("thinking_tokens") or 0,
    )


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# -- client side: encode the request -------------------------------------------------------


def _thinking(request: ChatRequest) -> tuple[int, dict[str, Any] | None]:
    """max_tokens and the thinking object; the budget always stays below max_tokens."""
    effort, max_tokens = request.reasoning_effort, request.max_tokens
    if effort is None:
        return (DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens), None
    if effort == "none":
        return (DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens), {"type": "disabled"}
    budget = REASONING_BUDGETS.get(effort)
    if budget is None:
        known = ", ".join(["none", *REASONING_BUDGETS])
        raise BadRequestError(f"reasoning_effort {effort!r} is not one of {known}", param="reasoning_effort")
    if max_tokens is None:
        return budget + DEFAULT_MAX_TOKENS, {"type": "enabled", "budget_tokens": budget}
    budget = min(budget, max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        raise BadRequestError(
            f"max_tokens {max_tokens} leaves no room for Anthropic's minimum thinking budget of {MIN_THINKING_BUDGET}",
            param="max_tokens",
            hint=f"raise max_tokens above {MIN_THINKING_BUDGET} or drop reasoning_effort",
        )
    return max_tokens, {"type": "enabled", "budget_tokens": budget}


def _tool_choice(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    wire: dict[str, Any] | None
    if choice is None:
        wire = {"type": "auto"} if parallel is False else None
    elif choice.mode == "none":
        return {"type": "none"}
    elif choice.name:
        wire = {"type": "tool", "name": choice.name}
    else:
        wire = {"type": "any" if choice.mode == "required" else "auto"}
    if wire is not None and parallel is False:
        wire["disable_parallel_tool_use"] = True
    return wire


def _encode_messages(messages: list[Message]) -> tuple[list[dict[str, Any]], list[TextPart]]:
    """Wire messages and the hoisted system text. Tool results open (or join) a user turn,
    first in it as Anthropic requires; a user message right after them joins that turn."""
    wire: list[dict[str, Any]] = []
    system: list[TextPart] = []
    results_turn: list[dict[str, Any]] | None = None
    for message in messages:
        role = message.role
        if role == "system":
            system.extend(p for p in message.content if isinstance(p, TextPart) and p.text)
            continue
        if role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(message.tool_call_id or "")}
            content = _content_blocks(message.content)
            if _plain_text(content):
                block["content"] = content[0]["text"]
            elif content:
                block["content"] = content
            if message.is_error:
                block["is_error"] = True
            _marked(block, message.cache)
            if results_turn is None:
                results_turn = []
                wire.append({"role": "user", "content": results_turn})
            results_turn.append(block)
            continue
        if role == "user" and results_turn is not None:
            results_turn.extend(_content_blocks(message.content))
            results_turn = None
            continue
        results_turn = None
        if role == "assistant":
            blocks = _content_blocks(message.content) + [_tool_use_block(c) for c in message.tool_calls]
            wire.append({"role": "assistant", "content": blocks})
        else:
            blocks = _content_blocks(message.content)
            wire.append({"role": "user", "content": blocks[0]["text"] if _plain_text(blocks) else blocks})
    return wire, system


def encode_request(request: ChatRequest, model_id: str) -> dict[str, Any]:
    messages, system = _encode_messages(request.messages)
    max_tokens, thinking = _thinking(request)
    body: dict[str, Any] = {"model": model_id, "max_tokens": max_tokens, "messages": messages}
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.schema is not None:
        body["output_config"] = {"format": {"type": "json_schema", "schema": fmt.schema}}
    elif fmt is not None and fmt.type != "text":
        system.append(TextPart(JSON_OBJECT_INSTRUCTION))
    if system:
        blocks = [_marked({"type": "text", "text": p.text}, p.cache) for p in system]
        body["system"] = blocks[0]["text"] if _plain_text(blocks) else blocks
    if thinking is not None:
        body["thinking"] = thinking
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        body["tools"] = [_encode_tool(t) for t in request.tools]
    choice = _tool_choice(request.tool_choice, request.parallel_tool_calls)
    if choice is not None:
        body["tool_choice"] = choice
    if request.metadata and "user_id" in request.metadata:
        body["metadata"] = {"user_id": request.metadata["user_id"]}
    if request.stream:
        body["stream"] = True
    _marked(body, request.cache)
    body.update(request.extra)
    return body


def _encode_tool(tool: Tool) -> dict[str, Any]:
    wire: dict[str, Any] = {"name": tool.name}
    if tool.description:
        wire["description"] = tool.description
    wire["input_schema"] = tool.parameters or {"type": "object", "properties": {}}
    if tool.strict is not None:
        wire["strict"] = tool.strict
    return _marked(wire, tool.cache)


# -- client side: decode the response --------------------------------------------------------


@upstream_decoder
def decode_response(body: Mapping[str, Any], provider: str = "anthropic") -> ChatResponse:
    content: list[Part] = []
    calls: list[ToolCall] = []
    for block in body.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            content.append(TextPart(block.get("text", "")))
        elif kind == "thinking":
            content.append(ReasoningPart(block.get("thinking", ""), block.get("signature") or None))
        elif kind == "tool_use":
            calls.append(ToolCall(block["id"], block["name"], dump_json(block.get("input") or {})))
    stop = body.get("stop_reason")
    finish = "tool_calls" if calls else _STOP_FROM_WIRE.get(stop or "", "stop")
    return ChatResponse(
        id=body.get("id", ""),
        model=body.get("model", ""),
        message=Message("assistant", content, calls),
        finish_reason=finish,
        usage=_usage_from_wire(body.get("usage") or {}),
        provider=provider,
        raw=body,
    )


class StreamDecoder:
    """Anthropic's event state machine to canonical events.

    Block indexes become tool-call indexes counted over tool_use blocks only; usage is split
    on the wire (input in message_start, cumulative output in message_delta) and is emitted
    whole with the finish event at message_stop.
    """

    __slots__ = ("provider", "_tools", "_next_tool", "_usage", "_stop")

    def __init__(self, provider: str | None = None) -> None:
        self.provider = provider
        self._tools: dict[int, int] = {}
        self._next_tool = 0
        self._usage: dict[str, Any] = {}
        self._stop: str | None = None

    @upstream_decoder
    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        try:
            payload = json.loads(data)
        except json.JSONDecodeError:
            raise StreamError(f"invalid JSON in Anthropic stream event {event!r}", provider=self.provider, body=data) from None
        if not isinstance(payload, dict):
            raise InvalidShape(f"event {event!r}", "expected an object")
        kind = payload.get("type")
        if kind == "content_block_delta":
            return self._delta(payload["index"], payload.get("delta") or {})
        if kind == "content_block_start":
            return self._block_start(payload["index"], payload.get("content_block") or {})
        if kind == "message_start":
            message = payload.get("message") or {}
            self._usage.update(message.get("usage") or {})
            return [StreamEvent("start", id=message.get("id"), model=message.get("model"))]
        if kind == "message_delta":
            self._stop = (payload.get("delta") or {}).get("stop_reason") or self._stop
            self._usage.update(payload.get("usage") or {})
            return []
        if kind == "message_stop":
            finish = "tool_calls" if self._tools else _STOP_FROM_WIRE.get(self._stop or "", "stop")
            return [StreamEvent("finish", finish_reason=finish, usage=_usage_from_wire(self._usage))]
        if kind == "error":
            raise _stream_error(payload, self.provider)
        return []  # ping, content_block_stop and event types added later

    def _block_start(self, index: int, block: Mapping[str, Any]) -> list[StreamEvent]:
        kind = block.get("type")
        if kind == "text":
            return [StreamEvent("text", text=block["text"])] if block.get("text") else []
        if kind == "thinking":
            return [StreamEvent("reasoning", text=block["thinking"])] if block.get("thinking") else []
        if kind == "tool_use":
            tool = self._tools[index] = self._next_tool
            self._next_tool += 1
            return [StreamEvent("tool_call", index=tool, id=block.get("id"), name=block.get("name"))]
        return []

    def _delta(self, index: int, delta: Mapping[str, Any]) -> list[StreamEvent]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [StreamEvent("text", text=delta.get("text", ""))]
        if kind == "input_json_delta":
            fragment = delta.get("partial_json", "")
            tool = self._tools.get(index)
            return [StreamEvent("tool_call", index=tool, arguments=fragment)] if fragment and tool is not None else []
        if kind == "thinking_delta":
            return [StreamEvent("reasoning", text=delta.get("thinking", ""))]
        if kind == "signature_delta":
            return [StreamEvent("reasoning", signature=delta.get("signature"))]
        return []


def _stream_error(payload: Mapping[str, Any], provider: str | None) -> StreamError:
    error = payload.get("error") or {}
    return StreamError(error.get("message", "error in Anthropic stream"), provider=provider, code=error.get("type"), body=payload)


def retry_after(headers: Mapping[str, str], body: Any = None) -> float | None:
    return parse_retry_after(headers)


def decode_error(status: int, body: Any, headers: Mapping[str, str], provider: str = "anthropic") -> ModelportError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message, code = error.get("message") or f"HTTP {status}", error.get("type")
    else:
        message, code = (body if isinstance(body, str) and body else f"HTTP {status}"), None
    kwargs = {"provider": provider, "retry_after": retry_after(headers, body), "body": body}
    if code == "overloaded_error":
        return OverloadedError(message, status=status, code=code, **kwargs)
    if code == "billing_error":
        return QuotaExceededError(message, status=status, code=code, **kwargs)
    return error_for_status(status, message, code=code, **kwargs)


# -- server side: decode the request -----------------------------------------------------------


def _bad(message: str, param: str) -> BadRequestError:
    return BadRequestError(f"{param}: {message}", param=param)


def _need(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = body.get(key)
    if value is None:
        raise _bad("field required", f"{where}{key}")
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _bad(f"expected {getattr(kind, '__name__', 'another type')}", f"{where}{key}")
    return value


def _maybe(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """An optional field: absent or null is None, a present one must have the right type."""
    return None if body.get(key) is None else _need(body, key, kind, "")


def _message_id(upstream_id: str | None) -> str:
    # Ids of other dialects (chatcmpl-..., Gemini's) are not leaked to Anthropic callers.
    return upstream_id if upstream_id and upstream_id.startswith("msg_") else _new_id("msg_")


def _decode_cache(block: Mapping[str, Any], where: str) -> CacheMark:
    """A block's cache_control as a breakpoint (False when it has none)."""
    wire = block.get("cache_control")
    if wire is None:
        return False
    here = f"{where}.cache_control" if where else "cache_control"
    if not isinstance(wire, dict) or wire.get("type") != "ephemeral":
        raise _bad("expected {\"type\": \"ephemeral\"} with an optional ttl", here)
    ttl = wire.get("ttl")
    if ttl is None:
        return True
    if ttl not in CACHE_TTLS:
        raise _bad(f"ttl {ttl!r} is not one of {', '.join(CACHE_TTLS)}", f"{here}.ttl")
    return ttl


def _decode_image(block: Mapping[str, Any], where: str) -> ImagePart:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad("field required", f"{where}.source")
    cache = _decode_cache(block, where)
    if source.get("type") == "base64":
        return ImagePart(data=_need(source, "data", str, f"{where}.source."), media_type=source.get("media_type"), cache=cache)
    if source.get("type") == "url":
        return ImagePart(url=_need(source, "url", str, f"{where}.source."), cache=cache)
    raise _bad(f"image source type {source.get('type')!r} is not supported", f"{where}.source.type")


def _decode_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _bad("expected a string or a list of content blocks", where)
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _bad("expected a content block with a type", f"{where}[{i}]")
    return content


def _decode_parts(blocks: list[dict[str, Any]], where: str, calls: list[ToolCall] | None = None) -> list[Part]:
    parts: list[Part] = []
    for i, block in enumerate(blocks):
        kind, here = block["type"], f"{where}[{i}]"
        if kind == "text":
            if block.get("text"):
                parts.append(TextPart(_need(block, "text", str, here + "."), cache=_decode_cache(block, here)))
        elif kind == "image":
            parts.append(_decode_image(block, here))
        elif kind == "thinking":
            parts.append(ReasoningPart(block.get("thinking") or "", block.get("signature") or None))
        elif kind == "tool_use" and calls is not None:
            calls.append(ToolCall(_need(block, "id", str, here + "."), _need(block, "name", str, here + "."), dump_json(block.get("input") or {}),
                                  cache=_decode_cache(block, here)))
        elif kind != "redacted_thinking":
            raise _bad(f"content block type {kind!r} is not supported here", f"{here}.type")
    return parts


def _decode_message(wire: Any, i: int, names: dict[str, str]) -> list[Message]:
    where = f"messages[{i}]"
    if not isinstance(wire, dict):
        raise _bad("expected an object", where)
    role = wire.get("role")
    if role not in ("user", "assistant", "system"):
        raise _bad(f"role {role!r} is not user, assistant or system", f"{where}.role")
    if "content" not in wire:
        raise _bad("field required", f"{where}.content")
    blocks = _decode_blocks(wire["content"], f"{where}.content")
    if role == "assistant":
        calls: list[ToolCall] = []
        parts = _decode_parts(blocks, f"{where}.content", calls)
        names.update((c.id, c.name) for c in calls)
        return [Message("assistant", parts, calls)]
    if role == "system":
        return [Message("system", _decode_parts(blocks, f"{where}.content"))]
    messages: list[Message] = []
    rest: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        if block["type"] != "tool_result":
            rest.append(block)
            continue
        here = f"{where}.content[{j}]"
        call_id = _need(block, "tool_use_id", str, here + ".")
        result = block.get("content")
        parts = _decode_parts(_decode_blocks(result, f"{here}.content"), f"{here}.content") if result is not None else []
        messages.append(Message("tool", parts, tool_call_id=call_id, name=names.get(call_id), is_error=bool(block.get("is_error")),
                                cache=_decode_cache(block, here)))
    if rest or not messages:
        messages.append(Message("user", _decode_parts(rest, f"{where}.content")))
    return messages


def _decode_tool(wire: Any, i: int) -> Tool:
    where = f"tools[{i}]."
    if not isinstance(wire, dict):
        raise _bad("expected an object", where[:-1])
    if wire.get("type") not in (None, "custom"):
        raise _bad(f"server tool {wire['type']!r} cannot be routed to other providers", where + "type")
    return Tool(
        _need(wire, "name", str, where),
        wire.get("description") or "",
        _need(wire, "input_schema", dict, where),
        wire.get("strict"),
        _decode_cache(wire, where[:-1]),
    )


def _decode_tool_choice(wire: Any) -> tuple[ToolChoice | None, bool | None]:
    if wire is None:
        return None, None
    if not isinstance(wire, dict):
        raise _bad("expected an object", "tool_choice")
    parallel = False if wire.get("disable_parallel_tool_use") else None
    kind = wire.get("type")
    if kind == "auto":
        return ToolChoice("auto"), parallel
    if kind == "any":
        return ToolChoice("required"), parallel
    if kind == "none":
        return ToolChoice("none"), parallel
    if kind == "tool":
        return ToolChoice("required", _need(wire, "name", str, "tool_choice.")), parallel
    raise _bad(f"type {kind!r} is not auto, any, tool or none", "tool_choice.type")


def _decode_effort(body: Mapping[str, Any]) -> str | None:
    thinking = body.get("thinking")
    output_effort = (body.get("output_config") or {}).get("effort")
    if isinstance(thinking, dict):
        kind = thinking.get("type")
        if kind == "enabled":
            return effort_for_budget(_need(thinking, "budget_tokens", int, "thinking."))
        if kind == "disabled":
            return "none"
        if kind == "adaptive":
            return _EFFORT_FROM_OUTPUT_CONFIG.get(output_effort or "", "medium")
    return _EFFORT_FROM_OUTPUT_CONFIG.get(output_effort) if output_effort else None


def _decode_format(body: Mapping[str, Any]) -> ResponseFormat | None:
    # output_config.format is GA in SDK 2.x; output_format is the older beta spelling.
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format")
    if not fmt:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _bad("only type json_schema is supported", "output_config.format")
    return ResponseFormat("json_schema", _need(fmt, "schema", dict, "output_config.format."))


def decode_request(body: Any, model: str | None = None) -> ChatRequest:
    """A Messages request from a caller; unknown fields are ignored, bad ones named in a 400."""
    if not isinstance(body, dict):
        raise _bad("expected a JSON object", "body")
    wire_messages = _need(body, "messages", list, "")
    max_tokens = _need(body, "max_tokens", int, "")
    messages: list[Message] = []
    system = body.get("system")
    if system:
        messages.append(Message("system", _decode_parts(_decode_blocks(system, "system"), "system")))
    names: dict[str, str] = {}
    for i, wire in enumerate(wire_messages):
        messages.extend(_decode_message(wire, i, names))
    tools = [_decode_tool(t, i) for i, t in enumerate(body.get("tools") or ())]
    tool_choice, parallel = _decode_tool_choice(body.get("tool_choice"))
    stop = _maybe(body, "stop_sequences", list)
    if stop and not all(isinstance(s, str) for s in stop):
        raise _bad("expected a list of strings", "stop_sequences")
    metadata = _maybe(body, "metadata", dict) or {}
    temperature = _maybe(body, "temperature", (int, float))
    if temperature is not None and not 0 <= temperature <= 1:
        # Anthropic's own range; the canonical one (to 2) is checked after decoding.
        raise _bad(f"{temperature} is out of range: expected a number from 0 to 1", "temperature")
    return ChatRequest(
        model=model or _need(body, "model", str, ""),
        messages=messages,
        temperature=temperature,
        top_p=_maybe(body, "top_p", (int, float)),
        top_k=_maybe(body, "top_k", int),
        max_tokens=max_tokens,
        stop=list(stop) if stop else None,
        response_format=_decode_format(body),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        reasoning_effort=_decode_effort(body),
        metadata={"user_id": metadata["user_id"]} if metadata.get("user_id") else None,
        stream=bool(_maybe(body, "stream", bool)),
        cache=_decode_cache(body, ""),
    )


def decode_count_tokens_request(body: Any, model: str | None = None) -> ChatRequest:
    """count_tokens takes a Messages body without max_tokens."""
    if isinstance(body, dict) and "max_tokens" not in body:
        body = {**body, "max_tokens": DEFAULT_MAX_TOKENS}
    return decode_request(body, model)


def encode_models(models: list[ModelInfo]) -> dict[str, Any]:
    """GET /v1/models as Anthropic lists them (RFC 3339 times; one page)."""
    data = [{"type": "model", "id": m.id, "display_name": m.id, "created_at": "1970-01-01T00:00:00Z"} for m in models]
    return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def encode_count_tokens_response(n: int) -> dict[str, Any]:
    return {"input_tokens": n}


# -- server side: encode the response -------------------------------------------------------------


def encode_response(response: ChatResponse, model: str) -> dict[str, Any]:
    message = response.message
    content = _content_blocks(message.content, unsigned_reasoning=True) + [_tool_use_block(c) for c in message.tool_calls]
    # Text blocks carry no "citations" key: the real API leaves it out when there are none
    # (its spec says required-nullable), and strict clients reject a null there.
    usage = {**_usage_to_wire(response.usage), "cache_creation": None, "server_tool_use": None, "service_tier": None}
    return {
        "id": _message_id(response.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_TO_WIRE[response.finish_reason],
        "stop_sequence": None,
        "usage": usage,
    }


class StreamEncoder(StreamEncoderBase):
    """Canonical events to Anthropic's SSE events, each with its ``event:`` line (SDK 2.x
    drops events without one). Usage is always part of this protocol, so ``include_usage``
    changes nothing; the finish and usage events may come in either order and are written
    at ``close()``. Tool calls are expected one after another, as every upstream sends them.
    """

    __slots__ = ("model", "include_usage", "_id", "_started", "_block", "_open", "_finish", "_usage")

    def __init__(self, model: str, include_usage: bool = True) -> None:
        self.model = model
        self.include_usage = include_usage
        self._id: str | None = None
        self._started = False
        self._block = -1
        # what the open block holds: ("text",), ("thinking",), ("tool", call index), or None
        self._open: tuple[Any, ...] | None = None
        self._finish: str | None = None
        self._usage = Usage()

    def _event(self, payload: dict[str, Any]) -> bytes:
        return format_event(dump_json(payload), payload["type"])

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(self._id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return self._event({"type": "message_start", "message": message})

    def _switch(self, want: tuple[Any, ...], block: dict[str, Any]) -> bytes:
        if self._open == want:
            return b""
        out = self._close_block()
        self._block += 1
        self._open = want
        return out + self._event({"type": "content_block_start", "index": self._block, "content_block": block})

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return self._event({"type": "content_block_stop", "index": self._block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._event({"type": "content_block_delta", "index": self._block, "delta": delta})

    def encode(self, event: StreamEvent) -> bytes:
        kind = event.kind
        if kind == "start":
            self._id = self._id or event.id
            return self._start()
        if kind == "usage":
            self._usage = event.usage or self._usage
            return b""
        if kind == "finish":
            self._finish = event.finish_reason
            self._usage = event.usage or self._usage
            return b""
        out = self._start()
        if kind == "text" and event.text:
            out += self._switch(("text",), {"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": event.text})
        elif kind == "reasoning":
            out += self._switch(("thinking",), {"type": "thinking", "thinking": "", "signature": ""})
            if event.text:
                out += self._delta({"type": "thinking_delta", "thinking": event.text})
            if event.signature:
                out += self._delta({"type": "signature_delta", "signature": event.signature})
        elif kind == "tool_call":
            block = {"type": "tool_use", "id": _tool_id(event.id or ""), "name": event.name or "", "input": {}}
            out += self._switch(("tool", event.index), block)
            if event.arguments:
                out += self._delta({"type": "input_json_delta", "partial_json": event.arguments})
        return out

    def close(self) -> bytes:
        out = self._start() + self._close_block()
        delta = {"stop_reason": _STOP_TO_WIRE[self._finish or "stop"], "stop_sequence": None}
        out += self._event({"type": "message_delta", "delta": delta, "usage": _usage_to_wire(self._usage)})
        return out + self._event({"type": "message_stop"})

    def error(self, exc: BaseException) -> bytes:
        _, body, _ = encode_error(exc)
        del body["request_id"]
        return self._event(body)


_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "context_length": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "quota": "rate_limit_error",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
}


def encode_error(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) in Anthropic's form; overloaded is 529, as Anthropic sends it."""
    if not isinstance(exc, ModelportError):
        exc = ModelportError(str(exc) or type(exc).__name__)
    kind = exc.kind
    status = 529 if kind == "overloaded" else exc.status
    body = {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(kind, "api_error"), "message": exc.message},
        "request_id": _new_id("req_"),
    }
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(0, math.ceil(exc.retry_after)))
        headers["retry-after-ms"] = str(int(exc.retry_after * 1000))
    if kind == "quota":
        # a 429 that waiting will not fix: stop the Stainless SDKs from retrying it
        headers["x-should-retry"] = "false"
    return status, body, headers
