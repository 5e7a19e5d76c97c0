"""Canonical types to plain JSON-able dicts and back, losslessly.

One JSON shape for the call log, the response cache and the batch journal. Written by hand
(no reflection, no pydantic) because it runs on every logged or cached call.

Fields equal to their default are left out. That keeps stored rows small and, more
importantly, keeps cache keys stable: adding a new optional field to a canonical type does
not change the key of any request that does not use it.

Not serialized: ``ChatResponse.raw`` (the provider's own body, not canonical) and
``ChatResponse.parsed`` (an object the client re-derives from the text when it validates a
``response_format``). Both are excluded from dataclass equality too.
"""

from __future__ import annotations

from typing import Any

from modelport.types import (
    CacheMark,
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)

# Sampling parameters are floats on every wire format; coercing 1 and 1.0 to one value makes
# two requests that mean the same thing serialize (and therefore cache) identically.
_FLOAT_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INT_PARAMS = ("top_k", "max_tokens", "seed")
# The request's prompt-cache settings that are None unless given; ``dialect_headers`` is not
# kept: it belongs to one call from a caller, not to the request's meaning.
_CACHE_FIELDS = ("cache_key", "cache_retention", "auto_cache")


def part_to_dict(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return _with_cache({"type": "text", "text": part.text}, part.cache)
    if isinstance(part, ReasoningPart):
        out: dict[str, Any] = {"type": "reasoning", "text": part.text}
        if part.signature is not None:
            out["signature"] = part.signature
        return out
    if isinstance(part, ImagePart):
        out = {"type": "image"}
        for name in ("url", "data", "media_type", "detail"):
            value = getattr(part, name)
            if value is not None:
                out[name] = value
        return _with_cache(out, part.cache)
    raise TypeError(f"cannot serialize message part of type {type(part).__name__}")


def _with_cache(out: dict[str, Any], mark: CacheMark) -> dict[str, Any]:
    if mark:
        out["cache"] = mark
    return out


def part_from_dict(data: dict[str, Any]) -> Part:
    kind = data.get("type")
    if kind == "text":
        return TextPart(data["text"], cache=data.get("cache", False))
    if kind == "reasoning":
        return ReasoningPart(data["text"], data.get("signature"))
    if kind == "image":
        return ImagePart(data.get("url"), data.get("data"), data.get("media_type"), data.get("detail"), cache=data.get("cache", False))
    raise ValueError(f"unknown message part type {kind!r}")


def tool_call_to_dict(call: ToolCall) -> dict[str, Any]:
    out: dict[str, Any] = {"id": call.id, "name": call.name, "arguments": call.arguments}
    if call.signature is not None:
        out["signature"] = call.signature
    return _with_cache(out, call.cache)


def tool_call_from_dict(data: dict[str, Any]) -> ToolCall:
    return ToolCall(data["id"], data["name"], data.get("arguments", "{}"), data.get("signature"), cache=data.get("cache", False))


def message_to_dict(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": [part_to_dict(p) for p in message.content]}
    if message.tool_calls:
        out["tool_calls"] = [tool_call_to_dict(c) for c in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    if message.is_error:
        out["is_error"] = True
    return _with_cache(out, message.cache)


def message_from_dict(data: dict[str, Any]) -> Message:
    return Message(
        data["role"],
        [part_from_dict(p) for p in data.get("content", ())],
        [tool_call_from_dict(c) for c in data.get("tool_calls", ())],
        data.get("tool_call_id"),
        data.get("name"),
        bool(data.get("is_error", False)),
        data.get("cache", False),
    )


def tool_to_dict(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
    if tool.strict is not None:
        out["strict"] = tool.strict
    return _with_cache(out, tool.cache)


def tool_from_dict(data: dict[str, Any]) -> Tool:
    return Tool(data["name"], data.get("description", ""), data["parameters"], data.get("strict"), data.get("cache", False))


def usage_to_dict(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def usage_from_dict(data: dict[str, Any]) -> Usage:
    return Usage(
        data.get("input_tokens", 0),
        data.get("output_tokens", 0),
        data.get("cached_tokens", 0),
        data.get("cache_write_tokens", 0),
        data.get("reasoning_tokens", 0),
    )


def request_to_dict(request: ChatRequest, *, include_stream: bool = True) -> dict[str, Any]:
    """The request as plain data; ``include_stream=False`` gives the shape cache keys hash."""
    out: dict[str, Any] = {"model": request.model, "messages": [message_to_dict(m) for m in request.messages]}
    for name in _FLOAT_PARAMS:
        value = getattr(request, name)
        if value is not None:
            out[name] = float(value)
    for name in _INT_PARAMS:
        value = getattr(request, name)
        if value is not None:
            out[name] = value
    if request.stop is not None:
        out["stop"] = list(request.stop)
    if request.response_format is not None:
        fmt = request.response_format
        out["response_format"] = {"type": fmt.type, "schema": fmt.schema, "name": fmt.name, "strict": fmt.strict}
    if request.tools:
        out["tools"] = [tool_to_dict(t) for t in request.tools]
    if request.tool_choice is not None:
        out["tool_choice"] = {"mode": request.tool_choice.mode, "name": request.tool_choice.name}
    if request.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = request.parallel_tool_calls
    if request.reasoning_effort is not None:
        out["reasoning_effort"] = request.reasoning_effort
    if request.metadata is not None:
        out["metadata"] = dict(request.metadata)
    if include_stream and request.stream:
        out["stream"] = True
    if request.extra:
        out["extra"] = dict(request.extra)
    _with_cache(out, request.cache)
    for name in _CACHE_FIELDS:
        value = getattr(request, name)
        if value is not None:
            out[name] = value
    return out


def request_from_dict(data: dict[str, Any]) -> ChatRequest:
    fmt = data.get("response_format")
    choice = data.get("tool_choice")
    return ChatRequest(
        model=data["model"],
        messages=[message_from_dict(m) for m in data.get("messages", ())],
        temperature=data.get("temperature"),
        top_p=data.get("top_p"),
        top_k=data.get("top_k"),
        max_tokens=data.get("max_tokens"),
        stop=list(data["stop"]) if data.get("stop") is not None else None,
        seed=data.get("seed"),
        presence_penalty=data.get("presence_penalty"),
        frequency_penalty=data.get("frequency_penalty"),
        response_format=ResponseFormat(fmt["type"], fmt.get("schema"), fmt.get("name"), fmt.get("strict")) if fmt else None,
        tools=[tool_from_dict(t) for t in data.get("tools", ())],
        tool_choice=ToolChoice(choice["mode"], choice.get("name")) if choice else None,
        parallel_tool_calls=data.get("parallel_tool_calls"),
        reasoning_effort=data.get("reasoning_effort"),
        metadata=dict(data["metadata"]) if data.get("metadata") is not None else None,
        stream=bool(data.get("stream", False)),
        extra=dict(data.get("extra", {})),
        cache=data.get("cache", False),
        cache_key=data.get("cache_key"),
        cache_retention=data.get("cache_retention"),
        auto_cache=data.get("auto_cache"),
    )


def response_to_dict(response: ChatResponse) -> dict[str, Any]:
    return {
        "id": response.id,
        "model": response.model,
        "message": message_to_dict(response.message),
        "finish_reason": response.finish_reason,
        "usage": usage_to_dict(response.usage),
        "provider": response.provider,
        "created": response.created,
        "latency": response.latency,
    }


def response_from_dict(data: dict[str, Any]) -> ChatResponse:
    return ChatResponse(
        id=data["id"],
        model=data["model"],
        message=message_from_dict(data["message"]),
        finish_reason=data.get("finish_reason", "stop"),
        usage=usage_from_dict(data.get("usage", {})),
        provider=data.get("provider", ""),
        created=data.get("created", 0),
        latency=data.get("latency", 0.0),
    )

