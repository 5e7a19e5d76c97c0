"""Gemini ``generateContent`` (Generative Language API), both directions.

Policies, decided once here:

* System messages are hoisted into ``systemInstruction`` (text parts only).
* Tool results become ``functionResponse`` parts of one user content per run of results. The
  function name, which Gemini requires, comes from the message or from the earlier call with
  the same id. A result text that is a JSON object is sent as that object; any other text as
  ``{"result": text}``; an error result as ``{"error": text}``. Decoding reverses this.
* Gemini may send function calls without ids. They get ``SYNTHETIC_ID_PREFIX`` ids, derived
  from the response id and the call's position so a stream and its non-streamed twin agree;
  such ids are omitted again on the way back to Gemini, which then pairs by name and order.
* ``thoughtSignature`` rides on ``ToolCall.signature`` for function calls. A signature on
  any other part becomes a ``ReasoningPart`` with empty text (a bare signature), written back
  as ``{"text": "", "thoughtSignature": ...}``.
* ``reasoning_effort`` becomes ``thinkingConfig.thinkingBudget`` from ``REASONING_BUDGETS``
  (understood by Gemini 2.5 and 3), with ``includeThoughts`` so reasoning is visible;
  "none" is budget 0.
* ``finish_reason`` "tool_calls" is decided from the content, never from finishReason.
* Not expressible: ``parallel_tool_calls``, metadata, ``cache_write_tokens``, image ``detail``,
  the response_format name and strict flag, tool ``strict``; URL images only as ``fileData``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import mimetypes
import uuid
from typing import Any, Mapping

from modelport.dialects.base import StreamEncoderBase, check_one_choice
from . import upstream_decoder
from ..errors import AuthenticationError, BadRequestError, ModelportError, QuotaExceededError, StreamError, error_for_status
from ..retry import parse_retry_after
from ..sse import format_event
from ..types import (
    MAX_JSON_DEPTH,
    REASONING_BUDGETS,
    ChatRequest,
    ChatResponse,
    FinishReason,
    Embedding,
    EmbeddingResponse,
    ImagePart,
    InvalidShape,
    Message,
    ModelInfo,
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
    json_depth,
)

SYNTHETIC_ID_PREFIX = "mpgm_"

_CONTENT_FILTER = ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "LANGUAGE")
_TOOL_FAILURES = ("MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MISSING_THOUGHT_SIGNATURE")
_FINISH_FROM_WIRE: dict[str, FinishReason] = {"STOP": "stop", "MAX_TOKENS": "length", **dict.fromkeys(_CONTENT_FILTER, "content_filter"), **dict.fromkeys(_TOOL_FAILURES, "error")}
_FINISH_TO_WIRE = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY", "error": "OTHER"}
_MODE_TO_WIRE = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def _resource(model_id: str) -> str:
    """The SDKs add ``models/`` unless the id already names a resource."""
    return model_id if "/" in model_id else f"models/{model_id}"


def chat_path(model_id: str, stream: bool = False) -> str:
    method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
    return f"/{_resource(model_id)}{method}"


def _count(value: Any) -> int:
    """Token counts: proto3 omits zeros and may spell int64 as a string."""
    return int(value) if value else 0


def _synth_id(response_id: str, n: int) -> str:
    digest = hashlib.sha256(response_id.encode()).hexdigest()[:12]
    return f"{SYNTHETIC_ID_PREFIX}{digest}_{n}"


def _new_id() -> str:
    return uuid.uuid4().hex[:24]


# -- parts, both directions ------------------------------------------------------------------------


def _image_part(part: ImagePart) -> dict[str, Any]:
    image = ImagePart.from_url(part.data_url)
    if image.url is None:
        return {"inlineData": {"mimeType": image.media_type, "data": image.data}}
    media_type = image.media_type or mimetypes.guess_type(image.url)[0]
    return {"fileData": {"mimeType": media_type, "fileUri": image.url} if media_type else {"fileUri": image.url}}


def _encode_parts(parts: list[Part]) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                wire.append({"text": part.text})
        elif isinstance(part, ImagePart):
            wire.append(_image_part(part))
        elif part.text:
            wire.append({"text": part.text, "thought": True, **({"thoughtSignature": part.signature} if part.signature else {})})
        elif part.signature:
            wire.append({"text": "", "thoughtSignature": part.signature})
    return wire


def _call_part(call: ToolCall) -> dict[str, Any]:
    function: dict[str, Any] = {"name": call.name, "args": call.args_object()}
    if call.id and not call.id.startswith(SYNTHETIC_ID_PREFIX):
        function = {"id": call.id, **function}
    part: dict[str, Any] = {"functionCall": function}
    if call.signature:
        part["thoughtSignature"] = call.signature
    return part


def _standard_base64(data: Any) -> Any:
    """proto3 JSON accepts bytes in either base64 alphabet, and google-genai sends the URL-safe
    one; the canonical ImagePart.data is standard base64, as data: URLs and the other
    providers want it."""
    if isinstance(data, str) and ("-" in data or "_" in data):
        return data.replace("-", "+").replace("_", "/")
    return data


def _typed(obj: Mapping[str, Any], camel: str, kind: type, where: str) -> Any:
    """An optional field of a part, which must have its proto type when present (strings
    stay strings: a list or a number in ``text`` is refused here, not deep in a later step)."""
    value = _field(obj, camel)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
        what = {str: "a string", dict: "an object", list: "a list", bool: "a boolean"}.get(kind, "another type")
        raise InvalidShape(f"{where}.{camel}", f"expected {what}")
    return value


def _decode_image(part: Mapping[str, Any], where: str = "part") -> ImagePart | None:
    if not isinstance(part, dict):
        raise InvalidShape(where, "expected an object")
    inline = _typed(part, "inlineData", dict, where)
    if inline is not None:
        here = f"{where}.inlineData"
        data = _typed(inline, "data", str, here)
        if data is None:
            raise InvalidShape(f"{here}.data", "field required")
        return ImagePart(data=_standard_base64(data), media_type=_typed(inline, "mimeType", str, here))
    file = _typed(part, "fileData", dict, where)
    if file is not None:
        here = f"{where}.fileData"
        uri = _typed(file, "fileUri", str, here)
        if uri is None:
            raise InvalidShape(f"{here}.fileUri", "field required")
        return ImagePart(url=uri, media_type=_typed(file, "mimeType", str, here))
    return None


def _decode_part(part: Mapping[str, Any], call_id: str, where: str = "part") -> list[Part | ToolCall]:
    """One wire part as canonical items; ``call_id`` is used when a functionCall has no id.
    Every field read is type-checked (InvalidShape names it, relative to ``where``)."""
    signature = _typed(part, "thoughtSignature", str, where)
    call = _typed(part, "functionCall", dict, where)
    if call is not None:
        here = f"{where}.functionCall"
        args = _typed(call, "args", dict, here)
        return [ToolCall(_typed(call, "id", str, here) or call_id, _typed(call, "name", str, here) or "", dump_json(args or {}), signature)]
    text = _typed(part, "text", str, where)
    if text is not None:
        if _typed(part, "thought", bool, where):
            return [ReasoningPart(text, signature)]
        items: list[Part | ToolCall] = [TextPart(text)] if text else []
        if signature:
            items.append(ReasoningPart("", signature))
        return items
    image = _decode_image(part, where)
    return [image] if image is not None else []


def _split(items: list[Part | ToolCall]) -> tuple[list[Part], list[ToolCall]]:
    parts = [i for i in items if not isinstance(i, ToolCall)]
    return parts, [i for i in items if isinstance(i, ToolCall)]


def _result_object(message: Message) -> dict[str, Any]:
    text = message.text
    if message.is_error:
        return {"error": text}
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        value = None
    # Nesting past MAX_JSON_DEPTH would break the JSON encoder on the way out: sent as text.
    return value if isinstance(value, dict) and json_depth(value) <= MAX_JSON_DEPTH else {"result": text}


def _result_text(response: Any) -> tuple[str, bool]:
    """(text, is_error) from a functionResponse.response object; the reverse of _result_object."""
    if isinstance(response, dict) and len(response) == 1:
        key, value = next(iter(response.items()))
        if key in ("result", "error"):
            return (value if isinstance(value, str) else dump_json(value)), key == "error"
    return dump_json(response), False


# -- client side: encode the request ---------------------------------------------------------------


def _encode_contents(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    contents: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    results: list[dict[str, Any]] | None = None
    for message in messages:
        role = message.role
        if role == "system":
            system.extend({"text": p.text} for p in message.content if isinstance(p, TextPart) and p.text)
            continue
        if role != "tool":
            results = None
        if role == "assistant":
            names.update((c.id, c.name) for c in message.tool_calls)
            parts = _encode_parts(message.content) + [_call_part(c) for c in message.tool_calls]
            contents.append({"role": "model", "parts": parts})
        elif role == "user":
            contents.append({"role": "user", "parts": _encode_parts(message.content)})
        else:
            if results is None:
                results = []
                contents.append({"role": "user", "parts": results})
            results.append(_response_part(message, names))
    return contents, system


def _response_part(message: Message, names: dict[str, str]) -> dict[str, Any]:
    call_id = message.tool_call_id or ""
    name = message.name or names.get(call_id)
    if not name:
        raise BadRequestError(
            f"the tool result for call {call_id!r} has no tool name, which Gemini requires",
            param="messages",
            hint="send the assistant message with that tool call earlier in the history, or set the tool message's name",
        )
    function: dict[str, Any] = {"name": name, "response": _result_object(message)}
    if call_id and not call_id.startswith(SYNTHETIC_ID_PREFIX):
        function = {"id": call_id, **function}
    images = [p for p in message.content if isinstance(p, ImagePart)]
    if images:
        inline = [_image_part(p) for p in images]
        if any("inlineData" not in p for p in inline):
            raise BadRequestError("Gemini takes only inline images in tool results; download URL images first", param="messages")
        function["parts"] = inline
    return {"functionResponse": function}


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, value in (
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("topK", request.top_k),
        ("maxOutputTokens", request.max_tokens),
        ("seed", request.seed),
        ("presencePenalty", request.presence_penalty),
        ("frequencyPenalty", request.frequency_penalty),
    ):
        if value is not None:
            config[key] = value
    if request.stop:
        config["stopSequences"] = list(request.stop)
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema is not None:
            config["responseJsonSchema"] = fmt.schema
    effort = request.reasoning_effort
    if effort == "none":
        config["thinkingConfig"] = {"thinkingBudget": 0}
    elif effort is not None:
        budget = REASONING_BUDGETS.get(effort)
        if budget is None:
            known = ", ".join(["none", *REASONING_BUDGETS])
            raise BadRequestError(f"reasoning_effort {effort!r} is not one of {known}", param="reasoning_effort")
        config["thinkingConfig"] = {"includeThoughts": True, "thinkingBudget": budget}
    return config


def _encode_tool(tool: Tool) -> dict[str, Any]:
    # The spec marks description required; parametersJsonSchema keeps the schema as given.
    return {"name": tool.name, "description": tool.description, "parametersJsonSchema": tool.parameters}


def encode_request(request: ChatRequest, model_id: str | None = None) -> dict[str, Any]:
    contents, system = _encode_contents(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_encode_tool(t) for t in request.tools]}]
    choice = request.tool_choice
    if choice is not None:
        calling: dict[str, Any] = {"mode": _MODE_TO_WIRE[choice.mode]}
        if choice.name:
            calling["allowedFunctionNames"] = [choice.name]
        body["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    body.update(request.extra)
    return body


# -- client side: decode the response ------------------------------------------------------------


def _usage_from_wire(wire: Mapping[str, Any]) -> Usage:
    """promptTokenCount includes cached tokens; candidatesTokenCount excludes thoughts."""
    thoughts = _count(wire.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=_count(wire.get("promptTokenCount")) + _count(wire.get("toolUsePromptTokenCount")),
        output_tokens=_count(wire.get("candidatesTokenCount")) + thoughts,
        cached_tokens=_count(wire.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def _usage_to_wire(usage: Usage) -> dict[str, Any]:
    wire = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens - usage.reasoning_tokens,
        "totalTokenCount": usage.total_tokens,
    }
    if usage.reasoning_tokens:
        wire["thoughtsTokenCount"] = usage.reasoning_tokens
    if usage.cached_tokens:
        wire["cachedContentTokenCount"] = usage.cached_tokens
    return wire


def _finish(candidate: Mapping[str, Any] | None, body: Mapping[str, Any], has_calls: bool) -> FinishReason:
    if has_calls:
        return "tool_calls"
    if candidate is None:
        # no candidates: the prompt itself was blocked
        return "content_filter" if (body.get("promptFeedback") or {}).get("blockReason") else "stop"
    return _FINISH_FROM_WIRE.get(candidate.get("finishReason") or "", "stop")


@upstream_decoder
def decode_response(body: Mapping[str, Any], provider: str = "gemini") -> ChatResponse:
    response_id = body.get("responseId") or ""
    candidates = body.get("candidates") or []
    candidate = candidates[0] if candidates else None
    items: list[Part | ToolCall] = []
    for part in ((candidate or {}).get("content") or {}).get("parts") or ():
        n = sum(isinstance(i, ToolCall) for i in items)
        items.extend(_decode_part(part, _synth_id(response_id, n)))
    content, calls = _split(items)
    return ChatResponse(
        id=response_id,
        model=body.get("modelVersion") or "",
        message=Message("assistant", content, calls),
        finish_reason=_finish(candidate, body, bool(calls)),
        usage=_usage_from_wire(body.get("usageMetadata") or {}),
        provider=provider,
        raw=body,
    )


class StreamDecoder:
    """Gemini chunks carry whole parts; function calls arrive complete. The finish reason and
    usage come with the last chunk(s): the finish event carries the usage seen so far, and a
    usage event follows for any later chunk that revises it."""

    __slots__ = ("provider", "_id", "_started", "_calls", "_finished", "_usage", "_raw")

    def __init__(self, provider: str | None = None) -> None:
        self.provider = provider
        self._id = ""
        self._started = False
        self._calls = 0
        self._finished = False
        self._usage: Usage | None = None
        self._raw: list[str] = []

    @upstream_decoder
    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        if event == "raw":
            # Lines outside SSE framing: an error object, possibly spread over several lines.
            self._raw.append(data)
            try:
                payload = json.loads("\n".join(self._raw))
            except json.JSONDecodeError:
                return []
            self._raw.clear()
        else:
            try:
                payload = json.loads(data)
            except json.JSONDecodeError:
                raise StreamError("invalid JSON in Gemini stream", provider=self.provider, body=data) from None
        events: list[StreamEvent] = []
        for chunk in payload if isinstance(payload, list) else (payload,):
            events.extend(self._chunk(chunk))
        return events

    def _chunk(self, chunk: Any) -> list[StreamEvent]:
        if not isinstance(chunk, dict):
            raise InvalidShape("chunk", "expected a GenerateContentResponse object")
        if "error" in chunk:
            raise _stream_error(chunk, self.provider)
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            self._id = chunk.get("responseId") or ""
            events.append(StreamEvent("start", id=self._id, model=chunk.get("modelVersion")))
        candidates = chunk.get("candidates") or []
        candidate = candidates[0] if candidates else None
        for part in ((candidate or {}).get("content") or {}).get("parts") or ():
            for item in _decode_part(part, _synth_id(self._id, self._calls)):
                if isinstance(item, ToolCall):
                    events.append(StreamEvent("tool_call", index=self._calls, id=item.id, name=item.name, arguments=item.arguments, signature=item.signature))
                    self._calls += 1
                elif isinstance(item, TextPart):
                    events.append(StreamEvent("text", text=item.text))
                elif isinstance(item, ReasoningPart):
                    events.append(StreamEvent("reasoning", text=item.text, signature=item.signature))
        if "usageMetadata" in chunk:
            self._usage = _usage_from_wire(chunk["usageMetadata"])
        blocked = candidate is None and (chunk.get("promptFeedback") or {}).get("blockReason")
        if (candidate is not None and candidate.get("finishReason")) or blocked:
            self._finished = True
            finish = _finish(candidate, chunk, self._calls > 0)
            events.append(StreamEvent("finish", finish_reason=finish, usage=self._usage))
        elif self._finished and "usageMetadata" in chunk:
            events.append(StreamEvent("usage", usage=self._usage))
        return events


def _error_object(body: Any) -> dict[str, Any] | None:
    if isinstance(body, list) and body:
        body = body[0]  # some error bodies come wrapped in a one-element array
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _stream_error(chunk: Any, provider: str | None) -> StreamError:
    error = _error_object(chunk) or {}
    return StreamError(error.get("message", "error in Gemini stream"), provider=provider, code=error.get("status"), body=chunk)


def _parse_duration(text: Any) -> float | None:
    """A protobuf Duration as JSON: "37s", "45.8s"."""
    if not isinstance(text, str) or not text.endswith("s"):
        return None
    try:
        return float(text[:-1])
    except ValueError:
        return None


def retry_after(headers: Mapping[str, str], body: Any = None) -> float | None:
    """Gemini puts the wait in ``details[RetryInfo].retryDelay``; a header is the fallback."""
    for detail in (_error_object(body) or {}).get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO:
            delay = _parse_duration(detail.get("retryDelay"))
            if delay is not None:
                return delay
    return parse_retry_after(headers)


def decode_error(status: int, body: Any, headers: Mapping[str, str], provider: str = "gemini") -> ModelportError:
    error = _error_object(body)
    details: list[Any]
    if error is None:
        message, code, details = (body if isinstance(body, str) and body else f"HTTP {status}"), None, []
    else:
        message, code, details = error.get("message") or f"HTTP {status}", error.get("status"), error.get("details") or []
    kwargs = {"provider": provider, "retry_after": retry_after(headers, body), "body": body}
    details = [d for d in details if isinstance(d, dict)]
    if any(d.get("reason") == "API_KEY_INVALID" for d in details):
        return AuthenticationError(message, status=status, code=code, **kwargs)
    per_day = any("PerDay" in str(v.get("quotaId", "")) for d in details for v in d.get("violations") or () if isinstance(v, dict))
    if status == 429 and per_day:
        return QuotaExceededError(message, status=status, code=code, **kwargs)
    return error_for_status(status, message, code=code, **kwargs)


# -- server side: decode the request -----------------------------------------------------------------


def _bad(message: str, param: str) -> BadRequestError:
    return BadRequestError(f"{param}: {message}", param=param)


@functools.lru_cache(maxsize=256)
def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def _field(obj: Mapping[str, Any], camel: str) -> Any:
    """lowerCamelCase as the SDKs send it; proto3-JSON parsers also accept snake_case."""
    value = obj.get(camel)
    if value is None:
        value = obj.get(_snake(camel))
    return value


def _opt_int(value: Any, param: str) -> int | None:
    """int64 fields may arrive as JSON strings (proto3-JSON)."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _bad("expected an integer", param) from None


def _opt_float(value: Any, param: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad("expected a number", param)
    return value


def _json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-subset Schema (upper-case types, ``nullable``) as JSON Schema."""
    if isinstance(schema, list):
        return [_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _json_schema(s) for name, s in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = _json_schema(value)
        elif key not in ("nullable", "propertyOrdering"):
            out[key] = value
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _decode_content(content: Any, i: int, pending: list[ToolCall]) -> list[Message]:
    """One wire content as canonical messages. ``pending`` holds the last model turn's calls
    not yet answered, so results without ids pair up by name and order."""
    where = f"contents[{i}]"
    if not isinstance(content, dict):
        raise _bad("expected an object", where)
    parts = content.get("parts")
    if not isinstance(parts, list):
        raise _bad("field required", f"{where}.parts")
    role = content.get("role") or "user"
    if role == "model":
        items: list[Part | ToolCall] = []
        for j, part in enumerate(parts):
            here = f"{where}.parts[{j}]"
            items.extend(_decode_part(_part_dict(part, here), f"{SYNTHETIC_ID_PREFIX}{i}_{j}", here))
        body, calls = _split(items)
        pending[:] = calls
        return [Message("assistant", body, calls)]
    if role not in ("user", "function"):
        raise _bad(f"role {role!r} is not user or model", f"{where}.role")
    messages: list[Message] = []
    rest: list[Part] = []
    for j, part in enumerate(parts):
        part = _part_dict(part, f"{where}.parts[{j}]")
        response = _field(part, "functionResponse")
        if response is None:
            rest.extend(p for p in _decode_part(part, "", f"{where}.parts[{j}]") if not isinstance(p, ToolCall))
            continue
        name = response.get("name")
        if not isinstance(name, str):
            raise _bad("field required", f"{where}.parts[{j}].functionResponse.name")
        here = f"{where}.parts[{j}].functionResponse"
        call_id = _typed(response, "id", str, here) or _answer(pending, name)
        if call_id is None:
            raise _bad(f"no earlier functionCall named {name!r} to answer", here)
        text, is_error = _result_text(response.get("response") or {})
        images = [_decode_image(p, f"{here}.parts[{k}]") for k, p in enumerate(_typed(response, "parts", list, here) or ())]
        result: list[Part] = [TextPart(text), *(image for image in images if image is not None)]
        messages.append(Message("tool", result, tool_call_id=call_id, name=name, is_error=is_error))
    if rest or not messages:
        messages.append(Message("user", rest))
    return messages


def _answer(pending: list[ToolCall], name: str) -> str | None:
    for k, call in enumerate(pending):
        if call.name == name:
            del pending[k]
            return call.id
    return None


def _part_dict(part: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(part, dict):
        raise _bad("expected an object", where)
    return part


def _decode_tools(wire: Any) -> list[Tool]:
    if wire is None:
        return []
    if not isinstance(wire, list):
        raise _bad("expected a list", "tools")
    tools: list[Tool] = []
    for i, entry in enumerate(wire):
        if not isinstance(entry, dict):
            raise _bad("expected an object", f"tools[{i}]")
        hosted = [k for k in entry if k not in ("functionDeclarations", "function_declarations")]
        if hosted:
            raise _bad(f"provider-hosted tool {hosted[0]!r} cannot be routed to other providers", f"tools[{i}].{hosted[0]}")
        for j, decl in enumerate(_field(entry, "functionDeclarations") or ()):
            where = f"tools[{i}].functionDeclarations[{j}]"
            if not isinstance(decl, dict) or not isinstance(decl.get("name"), str):
                raise _bad("name required", where)
            schema = _field(decl, "parametersJsonSchema")
            if schema is None and decl.get("parameters") is not None:
                schema = _json_schema(decl["parameters"])
            tools.append(Tool(decl["name"], decl.get("description") or "", schema or {"type": "object", "properties": {}}))
    return tools


def _decode_tool_choice(wire: Any) -> ToolChoice | None:
    calling = _field(wire or {}, "functionCallingConfig")
    if not calling:
        return None
    mode = calling.get("mode")
    names = _field(calling, "allowedFunctionNames") or []
    if mode == "ANY":
        return ToolChoice("required", names[0] if len(names) == 1 else None)
    if mode == "NONE":
        return ToolChoice("none")
    if mode in ("AUTO", "VALIDATED"):
        return ToolChoice("auto")
    if mode in (None, "MODE_UNSPECIFIED"):
        return None
    raise _bad(f"mode {mode!r} is not AUTO, ANY, NONE or VALIDATED", "toolConfig.functionCallingConfig.mode")


def _decode_effort(thinking: Any) -> str | None:
    if not isinstance(thinking, dict):
        return None
    level = _field(thinking, "thinkingLevel")
    if isinstance(level, str) and level.lower() in REASONING_BUDGETS:
        return level.lower()
    budget = _opt_int(_field(thinking, "thinkingBudget"), "generationConfig.thinkingConfig.thinkingBudget")
    if budget is None or budget < 0:
        return None  # -1: dynamic thinking, the provider's default
    return "none" if budget == 0 else effort_for_budget(budget)


def _decode_format(config: Mapping[str, Any]) -> ResponseFormat | None:
    if _field(config, "responseMimeType") != "application/json":
        return None
    schema = _field(config, "responseJsonSchema")
    if schema is None and _field(config, "responseSchema") is not None:
        schema = _json_schema(_field(config, "responseSchema"))
    return ResponseFormat("json_schema", schema) if schema is not None else ResponseFormat("json_object")


def decode_request(body: Any, model: str | None = None) -> ChatRequest:
    """A generateContent body from a caller; the model comes from the URL path."""
    if not isinstance(body, dict):
        raise _bad("expected a JSON object", "body")
    wire_contents = body.get("contents")
    if not isinstance(wire_contents, list):
        raise _bad("field required", "contents")
    messages: list[Message] = []
    system = _field(body, "systemInstruction")
    if system:
        parts = system.get("parts") if isinstance(system, dict) else None
        if not isinstance(parts, list):
            raise _bad("expected a Content with parts", "systemInstruction")
        texts = (_typed(_part_dict(p, f"systemInstruction.parts[{k}]"), "text", str, f"systemInstruction.parts[{k}]") for k, p in enumerate(parts))
        messages.append(Message("system", [TextPart(text) for text in texts if text]))
    pending: list[ToolCall] = []
    for i, content in enumerate(wire_contents):
        messages.extend(_decode_content(content, i, pending))
    config = _field(body, "generationConfig") or {}
    if not isinstance(config, dict):
        raise _bad("expected an object", "generationConfig")
    where = "generationConfig."
    candidates = _opt_int(_field(config, "candidateCount"), where + "candidateCount")
    if candidates != 0:  # 0 is protobuf's "unset" in Gemini's JSON: one candidate
        check_one_choice(candidates, where + "candidateCount")
    stop = _field(config, "stopSequences")
    return ChatRequest(
        model=(model or str(body.get("model") or "")).removeprefix("models/"),
        messages=messages,
        temperature=_opt_float(config.get("temperature"), where + "temperature"),
        top_p=_opt_float(_field(config, "topP"), where + "topP"),
        top_k=_opt_int(_field(config, "topK"), where + "topK"),
        max_tokens=_opt_int(_field(config, "maxOutputTokens"), where + "maxOutputTokens"),
        stop=list(stop) if stop else None,
        seed=_opt_int(config.get("seed"), where + "seed"),
        presence_penalty=_opt_float(_field(config, "presencePenalty"), where + "presencePenalty"),
        frequency_penalty=_opt_float(_field(config, "frequencyPenalty"), where + "frequencyPenalty"),
        response_format=_decode_format(config),
        tools=_decode_tools(body.get("tools")),
        tool_choice=_decode_tool_choice(_field(body, "toolConfig")),
        reasoning_effort=_decode_effort(_field(config, "thinkingConfig")),
    )


# -- server side: encode the response -----------------------------------------------------------------


def _candidate(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}} if parts else {}
    if finish is not None:
        candidate["finishReason"] = _FINISH_TO_WIRE[finish]
    candidate["index"] = 0
    return candidate


def encode_response(response: ChatResponse, model: str) -> dict[str, Any]:
    message = response.message
    parts = _encode_parts(message.content) + [_call_part(c) for c in message.tool_calls]
    candidate = _candidate(parts, response.finish_reason)
    candidate.setdefault("content", {"role": "model", "parts": []})
    return {
        "candidates": [candidate],
        "usageMetadata": _usage_to_wire(response.usage),
        "modelVersion": model,
        "responseId": response.id or _new_id(),
    }


class StreamEncoder(StreamEncoderBase):
    """One GenerateContentResponse per text or reasoning delta; tool calls are buffered and
    sent whole (Gemini never streams arguments); the last event carries finishReason and
    usageMetadata. No end marker: the caller closes the connection. Usage is always sent,
    so ``include_usage`` changes nothing."""

    __slots__ = ("model", "include_usage", "_id", "_calls", "_finish", "_usage")

    def __init__(self, model: str, include_usage: bool = True) -> None:
        self.model = model
        self.include_usage = include_usage
        self._id: str | None = None
        self._calls: dict[int, ToolCall] = {}
        self._finish: str | None = None
        self._usage = Usage()

    def _chunk(self, candidate: dict[str, Any], usage: Usage | None = None) -> bytes:
        self._id = self._id or _new_id()
        payload: dict[str, Any] = {"candidates": [candidate]}
        if usage is not None:
            payload["usageMetadata"] = _usage_to_wire(usage)
        payload["modelVersion"] = self.model
        payload["responseId"] = self._id
        return format_event(dump_json(payload))

    def _flush_calls(self) -> list[dict[str, Any]]:
        parts = [_call_part(self._calls[i]) for i in sorted(self._calls)]
        self._calls.clear()
        return parts

    def encode(self, event: StreamEvent) -> bytes:
        kind = event.kind
        if kind == "start":
            self._id = self._id or event.id
            return b""
        if kind == "tool_call":
            call = self._calls.get(event.index)
            if call is None:
                call = self._calls[event.index] = ToolCall(event.id or "", event.name or "", "")
            call.id, call.name = call.id or event.id or "", call.name or event.name or ""
            call.arguments += event.arguments
            call.signature = event.signature or call.signature
            return b""
        if kind == "usage":
            self._usage = event.usage or self._usage
            return b""
        if kind == "finish":
            self._finish = event.finish_reason
            self._usage = event.usage or self._usage
            return b""
        part = _encode_parts([TextPart(event.text) if kind == "text" else ReasoningPart(event.text, event.signature)])
        if not part:
            return b""
        return self._chunk(_candidate(self._flush_calls() + part))

    def close(self) -> bytes:
        finish = self._finish or ("tool_calls" if self._calls else "stop")
        return self._chunk(_candidate(self._flush_calls(), finish), self._usage)

    def error(self, exc: BaseException) -> bytes:
        _, body, _ = encode_error(exc)
        return format_event(dump_json(body))


def _duration(seconds: float) -> str:
    return ("%.3f" % seconds).rstrip("0").rstrip(".") + "s"


def encode_error(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) in Google's error envelope; the wait goes in RetryInfo."""
    if not isinstance(exc, ModelportError):
        exc = ModelportError(str(exc) or type(exc).__name__)
    # Gemini answers an oversized request with 400, and has no 402/422.
    status = {413: 400, 422: 400, 402: 429}.get(exc.status, exc.status)
    error: dict[str, Any] = {"code": status, "message": exc.message, "status": _STATUS_NAMES.get(status, "UNKNOWN" if status < 500 else "INTERNAL")}
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        error["details"] = [{"@type": _RETRY_INFO, "retryDelay": _duration(exc.retry_after)}]
        headers["retry-after"] = str(max(0, math.ceil(exc.retry_after)))
    return status, {"error": error}, headers


# -- gateway helpers: models, token counting, embeddings --------------------------------------------------


def encode_model(info: ModelInfo) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "name": f"models/{info.id}",
        "baseModelId": info.id,
        "version": "1",
        "displayName": info.id,
        "supportedGenerationMethods": ["generateContent", "countTokens", "embedContent"],
    }
    if info.context_length:
        wire["inputTokenLimit"] = info.context_length
    return wire


def encode_models(models: list[ModelInfo]) -> dict[str, Any]:
    return {"models": [encode_model(m) for m in models]}


def decode_count_tokens_request(body: Any, model: str | None = None) -> ChatRequest:
    """countTokens takes ``{contents}`` or a whole ``{generateContentRequest}``."""
    if isinstance(body, dict) and isinstance(body.get("generateContentRequest"), dict):
        body = body["generateContentRequest"]
    return decode_request(body, model)


def encode_count_tokens_response(n: int) -> dict[str, Any]:
    return {"totalTokens": n}


def encode_embeddings_request(inputs: list[str], model_id: str) -> tuple[str, dict[str, Any]]:
    resource = _resource(model_id)
    requests = [{"model": resource, "content": {"parts": [{"text": text}]}} for text in inputs]
    return f"/{resource}:batchEmbedContents", {"requests": requests}


@upstream_decoder
def decode_embeddings_response(body: Mapping[str, Any], provider: str = "gemini") -> EmbeddingResponse:
    vectors = body.get("embeddings") or ([body["embedding"]] if "embedding" in body else [])
    return EmbeddingResponse("", [Embedding(i, list(v.get("values") or ())) for i, v in enumerate(vectors)], provider=provider)


def _embed_text(request: Any, where: str) -> str:
    content = request.get("content") if isinstance(request, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        raise _bad("field required", f"{where}content.parts")
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


def decode_embeddings_request(body: Any) -> list[str]:
    """The texts of an embedContent (one) or batchEmbedContents (many) body."""
    if isinstance(body, dict) and isinstance(body.get("requests"), list):
        return [_embed_text(r, f"requests[{i}].") for i, r in enumerate(body["requests"])]
    return [_embed_text(body, "")]


def encode_embeddings_response(response: EmbeddingResponse, batch: bool = True) -> dict[str, Any]:
    vectors = [{"values": e.vector} for e in sorted(response.data, key=lambda e: e.index)]
    if batch:
        return {"embeddings": vectors}
    return {"embedding": vectors[0] if vectors else {"values": []}}
