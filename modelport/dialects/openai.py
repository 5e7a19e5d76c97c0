"""The OpenAI chat-completions dialect, both directions, no I/O.

It also speaks for every OpenAI-compatible server (Groq, LM Studio, Ollama ``/v1``, vLLM,
DeepSeek...), so the decoders are tolerant of their additions (``reasoning_content`` /
``reasoning`` text, errors without the ``error`` wrapper) while the encoders emit only what
the OpenAI spec defines, plus ``reasoning_content`` when there is reasoning to carry.

Choices made once, here:

* Output cap: ``ChatRequest.max_tokens`` goes out as ``max_tokens``, the field every
  compatible server reads. For OpenAI reasoning models, which want
  ``max_completion_tokens``, pass ``extra={"max_completion_tokens": n}`` instead. Incoming
  requests accept both, ``max_completion_tokens`` winning.
* Roles: ``developer`` messages become canonical ``system`` ones; ``system`` is what goes out.
* Content: one text part travels as a plain string, anything else as a part array. Empty
  text carries no meaning and is dropped.
* Reasoning parts in history are dropped on the way out: chat completions has no slot for them.
* The canonical finish reason ``error`` has no OpenAI spelling and goes out as ``stop``.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from modelport.dialects import upstream_decoder
from modelport.dialects.base import StreamEncoderBase, check_one_choice
from modelport.dialects.openai_family import bad, code_text, decode_metadata, decode_tools, encode_tool, new_id, optional
from modelport.dialects.openai_family import (  # noqa: F401  (re-exported: the dialect interface)
    decode_embeddings_request,
    decode_embeddings_response,
    decode_error,
    decode_models,
    encode_embeddings_request,
    encode_embeddings_response,
    encode_error,
    encode_models,
    retry_after,
)
from modelport.errors import StreamError
from modelport.jsonio import dumps, loads
from modelport.sse import format_event
from modelport.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    ImagePart,
    InvalidShape,
    Message,
    Part,
    ReasoningPart,
    ResponseFormat,
    StreamEvent,
    TOOL_CHOICE_MODES,
    TextPart,
    ToolCall,
    ToolChoice,
    Usage,
)


def _dumps(value: Any) -> str:
    return dumps(value).decode()


_FINISH_IN: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}
_FINISH_OUT = {"error": "stop"}
_MESSAGE_ROLES = ("system", "user", "assistant", "tool", "developer")


# ---------------------------------------------------------------------------------------
# Client side: modelport calling an OpenAI-compatible provider
# ---------------------------------------------------------------------------------------


def chat_path(model_id: str, stream: bool) -> str:
    return "/chat/completions"


def encode_request(req: ChatRequest, model_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model_id, "messages": _encode_messages(req.messages)}
    for key in ("temperature", "top_p", "top_k", "max_tokens", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop"] = list(req.stop)
    if req.response_format is not None:
        body["response_format"] = _encode_response_format(req.response_format)
    if req.tools:
        body["tools"] = [encode_tool(t) for t in req.tools]
    if req.tool_choice is not None:
        body["tool_choice"] = _encode_tool_choice(req.tool_choice)
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.reasoning_effort is not None:
        body["reasoning_effort"] = req.reasoning_effort
    if req.metadata:
        body["metadata"] = dict(req.metadata)
    encode_cache_fields(req, body)
    if req.stream:
        body["stream"] = True
        # Without this an OpenAI stream carries no usage at all.
        body["stream_options"] = {"include_usage": True}
    if req.extra:
        body.update(req.extra)
    return body


def _encode_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Tool messages take text only (OpenAI rejects image parts in a tool message): images a
    tool returned go in one user message right after the run of tool messages, which must
    stay together (every call of an assistant turn answered before the next message)."""
    wire: list[dict[str, Any]] = []
    images: list[ImagePart] = []
    for msg in messages:
        if msg.role == "tool":
            images.extend(p for p in msg.content if isinstance(p, ImagePart))
        elif images:
            wire.append({"role": "user", "content": [_encode_part(p) for p in images]})
            images = []
        wire.append(_encode_message(msg))
    if images:
        wire.append({"role": "user", "content": [_encode_part(p) for p in images]})
    return wire


def _encode_message(msg: Message) -> dict[str, Any]:
    role = msg.role
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": _encode_content(msg.content)}
        if msg.tool_calls:
            if out["content"] == "":
                out["content"] = None
            out["tool_calls"] = [_encode_tool_call(c) for c in msg.tool_calls]
        return out
    if role == "tool":
        text = [p for p in msg.content if not isinstance(p, ImagePart)]
        return {"role": "tool", "tool_call_id": msg.tool_call_id or "", "content": _encode_content(text)}
    return {"role": role, "content": _encode_content(msg.content)}


def _encode_content(parts: Sequence[Part]) -> str | list[dict[str, Any]]:
    kept = [p for p in parts if not isinstance(p, ReasoningPart) and not (isinstance(p, TextPart) and not p.text)]
    if not kept:
        return ""
    if len(kept) == 1 and isinstance(kept[0], TextPart):
        return kept[0].text
    return [_encode_part(p) for p in kept]


def _encode_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.data_url}
    if part.detail:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _encode_tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _signed(out: dict[str, Any], signature: str | None) -> dict[str, Any]:
    """Gemini's thoughtSignature rides in ``extra_content`` (Gemini's own OpenAI-compatible
    spelling), so an OpenAI caller that replays the call keeps a Gemini upstream working.
    Only the gateway writes it: real OpenAI would reject the unknown field."""
    if signature:
        out["extra_content"] = {"google": {"thought_signature": signature}}
    return out


def _signature_of(call: dict[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _encode_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.name:
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def _encode_response_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    # OpenAI requires a name; other dialects have none to give, so one is made up.
    spec: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.schema or {}}
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}


@upstream_decoder
def decode_response(body: dict[str, Any], provider: str) -> ChatResponse:
    choices = body.get("choices")
    if not choices:
        if body.get("error"):
            raise _stream_error(body["error"], provider)
        raise StreamError("response has no choices", provider=provider, body=body)
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise InvalidShape("choices", "expected a list of choice objects")
    choice = choices[0]
    message = _decode_response_message(choice.get("message") or {})
    return ChatResponse(
        id=body.get("id") or "",
        model=body.get("model") or "",
        message=message,
        finish_reason=_decode_finish(choice.get("finish_reason"), bool(message.tool_calls)),
        usage=_decode_usage(body.get("usage")),
        provider=provider,
        created=body.get("created") or 0,
        raw=body,
    )


def _decode_response_message(msg: dict[str, Any]) -> Message:
    content: list[Part] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append(ReasoningPart(reasoning))
    # A refusal is the model's answer to the caller; keep it readable as the text.
    text = msg.get("content") or msg.get("refusal")
    if isinstance(text, str):
        if text:
            content.append(TextPart(text))
    elif isinstance(text, list):
        content.extend(TextPart(p.get("text") or p.get("refusal") or "") for p in text if isinstance(p, dict))
    calls = [
        ToolCall(c.get("id") or "", (c.get("function") or {}).get("name") or "", _arguments_text(c.get("function") or {}), _signature_of(c))
        for c in msg.get("tool_calls") or ()
    ]
    return Message("assistant", content, calls)


def _arguments_text(function: dict[str, Any]) -> str:
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        return arguments or "{}"
    # Ollama and some proxies send an object where OpenAI sends JSON text.
    return _dumps(arguments) if arguments is not None else "{}"


def _decode_finish(value: str | None, has_calls: bool) -> FinishReason:
    finish = _FINISH_IN.get(value or "", "stop")
    # Some compatible servers say "stop" after tool calls; the calls in the answer decide, as
    # in every dialect.
    if has_calls and finish == "stop":
        return "tool_calls"
    return finish


def _decode_usage(usage: dict[str, Any] | None) -> Usage:
    if not usage:
        return Usage()
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        cached_tokens=prompt_details.get("cached_tokens") or 0,
        cache_write_tokens=prompt_details.get("cache_write_tokens") or 0,
        reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
    )


class StreamDecoder:
    """Turns chat.completion.chunk objects into canonical stream events.

    ``feed`` takes SSE data strings; ``feed_json`` takes chunks already parsed (the embedded
    llama.cpp engine hands them over as dicts). ``done`` turns true at ``[DONE]``.
    """

    __slots__ = ("provider", "done", "_started", "_has_calls", "_call_ids", "_raw_lines")

    def __init__(self, provider: str = "") -> None:
        self.provider = provider
        self.done = False
        self._started = False
        self._has_calls = False
        self._call_ids: dict[str, int] = {}
        self._raw_lines: list[str] = []

    @upstream_decoder
    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        if event == "raw":
            return self._feed_raw(data)
        if data == "[DONE]":
            self.done = True
            return []
        try:
            chunk = loads(data)
        except ValueError:
            raise StreamError(f"malformed stream chunk: {data[:200]!r}", provider=self.provider) from None
        return self.feed_json(chunk)

    def _feed_raw(self, line: str) -> list[StreamEvent]:
        # A server that fails mid-stream may write a bare (even pretty-printed) JSON error body.
        self._raw_lines.append(line)
        try:
            body = loads("\n".join(self._raw_lines))
        except ValueError:
            return []
        self._raw_lines.clear()
        return self.feed_json(body) if isinstance(body, dict) else []

    @upstream_decoder
    def feed_json(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if not isinstance(chunk, dict):
            raise InvalidShape("chunk", "expected a chat.completion.chunk object")
        error = chunk.get("error") or (chunk.get("x_groq") or {}).get("error")
        if error:
            raise _stream_error(error, self.provider)
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            events.append(StreamEvent("start", id=chunk.get("id") or "", model=chunk.get("model") or ""))
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._decode_choice(choice, events)
        usage = chunk.get("usage")
        if usage:
            events.append(StreamEvent("usage", usage=_decode_usage(usage)))
        return events

    def _decode_choice(self, choice: dict[str, Any], events: list[StreamEvent]) -> None:
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events.append(StreamEvent("reasoning", text=reasoning))
        text = delta.get("content") or delta.get("refusal")
        if isinstance(text, str) and text:
            events.append(StreamEvent("text", text=text))
        for position, call in enumerate(delta.get("tool_calls") or ()):
            events.append(self._decode_call_fragment(position, call))
        finish = choice.get("finish_reason")
        if finish:
            events.append(StreamEvent("finish", finish_reason=_decode_finish(finish, self._has_calls)))

    def _decode_call_fragment(self, position: int, call: dict[str, Any]) -> StreamEvent:
        self._has_calls = True
        function = call.get("function") or {}
        call_id = call.get("id")
        index = call.get("index")
        if index is None:
            # Servers that send whole calls may omit the index; a new id means a new call.
            index = self._call_ids.setdefault(call_id, len(self._call_ids)) if call_id else position
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = _dumps(arguments)
        return StreamEvent("tool_call", index=index, id=call_id or None, name=function.get("name") or None, arguments=arguments or "",
                           signature=_signature_of(call))


def _stream_error(error: Any, provider: str) -> StreamError:
    if isinstance(error, dict):
        message = error.get("message") or "stream failed"
        return StreamError(message, provider=provider, code=code_text(error.get("code")), param=error.get("param"), body=error)
    return StreamError(str(error), provider=provider, body=error)


# ---------------------------------------------------------------------------------------
# Server side: the gateway answering an OpenAI-speaking caller
# ---------------------------------------------------------------------------------------


def encode_cache_fields(req: ChatRequest, body: dict[str, Any]) -> None:
    """The prompt cache's routing key and lifetime, as chat completions and Responses name
    them; OpenAI caches prefixes on its own, so breakpoint markers have no field here."""
    if req.cache_key is not None:
        body["prompt_cache_key"] = req.cache_key
    if req.cache_retention is not None:
        body["prompt_cache_retention"] = req.cache_retention


def decode_cache_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``encode_cache_fields`` read back: the ChatRequest fields a caller's body sets."""
    return {"cache_key": optional(body, "prompt_cache_key", str, "a string"),
            "cache_retention": optional(body, "prompt_cache_retention", str, "a string")}


def decode_request(body: Any, model: str | None = None) -> ChatRequest:
    """The canonical request for an incoming chat-completions body.

    Unknown fields are ignored. ``model``, when given (from a route), wins over the body's.
    """
    if not isinstance(body, dict):
        raise bad("body", "expected a JSON object")
    model = model or body.get("model")
    if not model:
        raise bad("model", "required", "missing_required_parameter")
    if not isinstance(model, str):
        raise bad("model", "expected a string")
    raw_messages = body.get("messages")
    if raw_messages is None:
        raise bad("messages", "required", "missing_required_parameter")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise bad("messages", "expected a non-empty array")
    max_tokens = optional(body, "max_completion_tokens", int, "an integer")
    if max_tokens is None:
        max_tokens = optional(body, "max_tokens", int, "an integer")
    check_one_choice(optional(body, "n", int, "an integer"), "n")
    return ChatRequest(
        model=model,
        messages=_decode_messages(raw_messages),
        temperature=optional(body, "temperature", (int, float), "a number"),
        top_p=optional(body, "top_p", (int, float), "a number"),
        top_k=optional(body, "top_k", int, "an integer"),
        max_tokens=max_tokens,
        stop=_decode_stop(body.get("stop")),
        seed=optional(body, "seed", int, "an integer"),
        presence_penalty=optional(body, "presence_penalty", (int, float), "a number"),
        frequency_penalty=optional(body, "frequency_penalty", (int, float), "a number"),
        response_format=_decode_response_format(body.get("response_format")),
        tools=decode_tools(body.get("tools")),
        tool_choice=_decode_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=optional(body, "parallel_tool_calls", bool, "a boolean"),
        reasoning_effort=optional(body, "reasoning_effort", str, "a string"),
        metadata=decode_metadata(body.get("metadata")),
        stream=bool(optional(body, "stream", bool, "a boolean")),
        **decode_cache_fields(body),
    )


def stream_include_usage(body: dict[str, Any]) -> bool:
    """Whether the caller asked for the final usage chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _decode_messages(raw: list[Any]) -> list[Message]:
    messages: list[Message] = []
    # OpenAI tool messages carry only the call id; other dialects need the tool's name.
    names_by_call_id: dict[str, str] = {}
    for i, item in enumerate(raw):
        path = f"messages[{i}]"
        if not isinstance(item, dict):
            raise bad(path, "expected an object")
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise bad(f"{path}.role", f"expected one of {', '.join(_MESSAGE_ROLES)}", "invalid_value")
        message = _decode_message(role, item, path, names_by_call_id)
        for call in message.tool_calls:
            names_by_call_id[call.id] = call.name
        messages.append(message)
    return messages


def _decode_message(role: str, item: dict[str, Any], path: str, names_by_call_id: dict[str, str]) -> Message:
    content = _decode_content(item.get("content"), f"{path}.content", role == "user")
    if role in ("system", "developer"):
        return Message("system", content)
    if role == "assistant":
        calls = _decode_tool_calls(item.get("tool_calls"), f"{path}.tool_calls")
        return Message("assistant", content, calls)
    if role == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise bad(f"{path}.tool_call_id", "required: the id of the tool call this answers", "missing_required_parameter")
        name = names_by_call_id.get(call_id) or item.get("name")
        return Message("tool", content, tool_call_id=call_id, name=name if isinstance(name, str) else None)
    return Message("user", content)


def _decode_content(content: Any, path: str, images_allowed: bool) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise bad(path, "expected a string or an array of content parts")
    parts: list[Part] = []
    for j, raw in enumerate(content):
        part = _decode_part(raw, f"{path}[{j}]", images_allowed)
        if part is not None:
            parts.append(part)
    return parts


def _decode_part(raw: Any, path: str, images_allowed: bool) -> Part | None:
    if not isinstance(raw, dict):
        raise bad(path, "expected an object")
    kind = raw.get("type")
    if kind in ("text", "refusal"):
        text = raw.get(kind)
        if not isinstance(text, str):
            raise bad(f"{path}.{kind}", "expected a string")
        return TextPart(text) if text else None
    if kind == "image_url" and images_allowed:
        image = raw.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(image, dict) or not isinstance(url, str) or not url:
            raise bad(f"{path}.image_url.url", "expected a string", "missing_required_parameter")
        return ImagePart.from_url(url, image.get("detail"))
    allowed = "text or image_url" if images_allowed else "text"
    raise bad(f"{path}.type", f"unsupported content part {kind!r}; expected {allowed}", "invalid_value")


def _decode_tool_calls(raw: Any, path: str) -> list[ToolCall]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad(path, "expected an array")
    calls = []
    for k, call in enumerate(raw):
        where = f"{path}[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise bad(f"{where}.function", "expected an object with name and arguments")
        call_id, name = call.get("id"), function.get("name")
        if not isinstance(call_id, str) or not call_id:
            raise bad(f"{where}.id", "expected a string", "missing_required_parameter")
        if not isinstance(name, str) or not name:
            raise bad(f"{where}.function.name", "expected a string", "missing_required_parameter")
        calls.append(ToolCall(call_id, name, _arguments_text(function), _signature_of(call)))
    return calls


def _decode_stop(stop: Any) -> list[str] | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise bad("stop", "expected a string or an array of strings")
    return list(stop) or None


def _decode_response_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        raise bad("response_format.type", "expected one of text, json_object, json_schema", "invalid_value")
    spec = raw.get("json_schema")
    if not isinstance(spec, dict):
        raise bad("response_format.json_schema", "expected an object", "missing_required_parameter")
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise bad("response_format.json_schema.schema", "expected an object")
    return ResponseFormat("json_schema", schema, spec.get("name"), spec.get("strict"))


def _decode_tool_choice(raw: Any) -> ToolChoice | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in TOOL_CHOICE_MODES:
            raise bad("tool_choice", "expected one of auto, none, required, or a function choice", "invalid_value")
        return ToolChoice(raw)
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "function":
        name = (raw.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise bad("tool_choice.function.name", "expected a string", "missing_required_parameter")
        return ToolChoice("required", name)
    if kind == "allowed_tools":
        # The subset has no canonical slot; its mode is the part every backend can honour.
        mode = (raw.get("allowed_tools") or {}).get("mode", "auto")
        return ToolChoice("required" if mode == "required" else "auto")
    raise bad("tool_choice.type", "expected function or allowed_tools", "invalid_value")


def _completion_id(response_id: str | None) -> str:
    # Upstream ids of other dialects (msg_..., Gemini's) are not leaked to OpenAI callers.
    return response_id if response_id and response_id.startswith("chatcmpl-") else new_id("chatcmpl-")


def encode_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    message = resp.message
    text = message.text
    out: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not message.tool_calls else None,
        "refusal": None,
    }
    reasoning = message.reasoning
    if reasoning:
        out["reasoning_content"] = reasoning
    if message.tool_calls:
        out["tool_calls"] = [_signed(_encode_tool_call(c), c.signature) for c in message.tool_calls]
    return {
        "id": _completion_id(resp.id),
        "object": "chat.completion",
        "created": resp.created or int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": out, "logprobs": None, "finish_reason": _FINISH_OUT.get(resp.finish_reason, resp.finish_reason)}
        ],
        "usage": _encode_usage(resp.usage),
    }


def _encode_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


class StreamEncoder(StreamEncoderBase):
    """Canonical stream events in, chat.completion.chunk SSE bytes out.

    Chunks share one id and created time; their constant head is serialised once. Usage is
    held back and sent, when the caller asked for it, as the ``choices: []`` chunk that
    precedes ``[DONE]``.
    """

    __slots__ = (
        "model", "include_usage", "id", "created", "_head", "_role_sent", "_finished",
        "_closed", "_usage", "_indices", "_has_calls",
    )

    def __init__(self, model: str, include_usage: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())
        self._set_id(new_id("chatcmpl-"))
        self._role_sent = False
        self._finished = False
        self._closed = False
        self._usage: Usage | None = None
        self._indices: dict[int, int] = {}
        self._has_calls = False

    def _set_id(self, chunk_id: str) -> None:
        self.id = chunk_id
        self._head = (
            f'data: {{"id":{_dumps(chunk_id)},"object":"chat.completion.chunk",'
            f'"created":{self.created},"model":{_dumps(self.model)},"choices":'
        )

    def _chunk(self, choices: list[dict[str, Any]], tail: str = "") -> bytes:
        return (self._head + _dumps(choices) + tail + "}\n\n").encode()

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        prefix = b""
        if not self._role_sent:
            self._role_sent = True
            prefix = self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        return prefix + self._chunk([{"index": 0, "delta": delta, "finish_reason": finish}])

    def encode(self, event: StreamEvent) -> bytes:
        kind = event.kind
        if self._closed:
            return b""
        if kind == "text":
            return self._delta({"content": event.text}) if event.text else b""
        if kind == "tool_call":
            return self._delta({"tool_calls": [self._call_fragment(event)]})
        if kind == "reasoning":
            return self._delta({"reasoning_content": event.text}) if event.text else b""
        if kind == "start":
            return self._start(event)
        if kind == "usage":
            self._usage = event.usage
            return b""
        if kind == "finish":
            return self._finish(event.finish_reason, event.usage)
        return b""

    def _start(self, event: StreamEvent) -> bytes:
        if self._role_sent:
            return b""
        if event.id and event.id.startswith("chatcmpl-"):
            self._set_id(event.id)
        self._role_sent = True
        return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])

    def _call_fragment(self, event: StreamEvent) -> dict[str, Any]:
        self._has_calls = True
        index = self._indices.get(event.index)
        if index is not None:
            return {"index": index, "function": {"arguments": event.arguments}}
        # OpenAI indices count calls from 0; upstream indices (e.g. Anthropic block numbers) may not.
        index = self._indices[event.index] = len(self._indices)
        return _signed({
            "index": index,
            "id": event.id or new_id("call_"),
            "type": "function",
            "function": {"name": event.name or "", "arguments": event.arguments},
        }, event.signature)

    def _finish(self, reason: str | None, usage: Usage | None) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        if usage is not None:
            self._usage = usage
        reason = reason or ("tool_calls" if self._has_calls else "stop")
        return self._delta({}, _FINISH_OUT.get(reason, reason))

    def close(self) -> bytes:
        """The end of the stream: a finish chunk if none was sent, the usage chunk, ``[DONE]``."""
        if self._closed:
            return b""
        pending = self._finish(None, None)
        self._closed = True
        if self.include_usage:
            pending += self._chunk([], ',"usage":' + _dumps(_encode_usage(self._usage or Usage())))
        return pending + b"data: [DONE]\n\n"

    def error(self, exc: BaseException) -> bytes:
        """The in-stream error event; the stream ends with it (no ``[DONE]`` follows)."""
        self._closed = True
        _, body, _ = encode_error(exc)
        return format_event(_dumps(body))
