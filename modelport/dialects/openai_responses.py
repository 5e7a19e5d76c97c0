"""The OpenAI Responses dialect (``POST /v1/responses``), both directions, no I/O.

Server side, the gateway answers Responses callers (openai SDK ``responses.*``, the Agents
SDK, Codex, Vercel) from any backend; client side, modelport calls any server that speaks
Responses. Choices made once, here:

* ``instructions`` is the first system message; a leading system message with one text part
  goes out as ``instructions``, any other system message stays in ``input``.
* Reasoning state travels in ``encrypted_content``, the one field every client replays. A
  canonical ``signature`` (Anthropic thinking, Gemini thought signature) is sealed in a
  self-describing envelope, ``"mp1:" + base64url(JSON)``; anything else (OpenAI's own blob)
  is carried as the opaque ``ReasoningPart.encrypted_content``. Gemini's signature on a
  function call rides in a reasoning item right before that call, naming its ``call_id``.
* Client side, modelport is stateless (``store: false``, reasoning replayed by its
  ``encrypted_content``); reasoning from another provider is never sent (OpenAI rejects it).
  Parameters Responses lacks (top_k, stop, seed, penalties) are not sent.
* Finish reasons: ``length`` and ``content_filter`` are ``status: incomplete`` with that
  reason; ``error`` is ``status: failed``, which reads back as a StreamError.
* Requests that need state (``previous_response_id``, ``item_reference``) are resolved by the
  gateway's store before they reach ``decode_request``; here they are a clear 400.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from modelport.dialects.base import StreamEncoderBase
from modelport.errors import BadRequestError, ModelportError, StreamError
from modelport.jsonio import dumps, loads
from modelport.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    ResponseFormat,
    StreamEvent,
    TOOL_CHOICE_MODES,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)

# Errors, retry hints, embeddings and models are the same as chat completions', and so
# are the request decoders' small helpers.
from .openai import decode_cache_fields, encode_cache_fields
from .openai_family import DEFAULT_PARAMETERS, bad, decode_metadata, new_id, optional
from .openai_family import (  # noqa: F401  (re-exported: the dialect interface)
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

_SEAL = "mp1:"
_MESSAGE_ROLES = ("user", "assistant", "system", "developer")
# Tools a client may send that no backend here can run for it: answered with a 400 naming
# the tool, because dropping them silently would make the model pretend it had used them.
_HOSTED_TOOLS = frozenset({
    "file_search", "code_interpreter", "image_generation", "computer", "computer_use", "computer_use_preview",
    "computer_use_preview_2025_03_11", "mcp", "tool_search", "programmatic_tool_calling", "shell", "apply_patch",
    "local_shell", "custom",
})
# Web search is added by Codex whenever it is enabled; rejecting it would break the whole
# session, so it is dropped (the model simply has no search tool).
DROPPED_TOOLS = frozenset({"web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11"})
# Error codes a failed response may carry: the API's ResponseErrorCode values, plus these
# three, which real streams send outside that enum and Codex keys on.
_FAILED_CODES = {"rate_limit": "rate_limit_exceeded", "quota": "insufficient_quota", "context_length": "context_length_exceeded"}



def _text(value: bytes) -> str:
    return value.decode()



# -- the reasoning envelope ---------------------------------------------------------------


def seal(state: dict[str, Any]) -> str:
    """Opaque state of another provider as an ``encrypted_content`` this dialect can open."""
    return _SEAL + base64.urlsafe_b64encode(dumps(state)).decode().rstrip("=")


def unseal(value: Any) -> dict[str, Any] | None:
    """The state sealed by ``seal``, or None for anything else (OpenAI's own blobs)."""
    if not isinstance(value, str) or not value.startswith(_SEAL):
        return None
    raw = value[len(_SEAL):]
    try:
        state = loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _reasoning_state(part: ReasoningPart) -> str | None:
    if part.signature is None:
        return part.encrypted_content
    state: dict[str, Any] = {"s": part.signature}
    if part.encrypted_content is not None:
        state["e"] = part.encrypted_content
    return seal(state)


def _open_reasoning_state(value: Any) -> tuple[str | None, str | None, str | None]:
    """(signature, opaque encrypted_content, call_id the signature belongs to)."""
    state = unseal(value)
    if state is None:
        return None, value if isinstance(value, str) and value else None, None
    sig, enc, call = state.get("s"), state.get("e"), state.get("c")
    return (sig if isinstance(sig, str) else None, enc if isinstance(enc, str) else None, call if isinstance(call, str) else None)


# ---------------------------------------------------------------------------------------
# Client side: modelport calling a server that speaks Responses
# ---------------------------------------------------------------------------------------


def chat_path(model_id: str, stream: bool) -> str:
    return "/responses"


def encode_request(req: ChatRequest, model_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model_id}
    messages = req.messages
    first = messages[0] if messages else None
    if first is not None and first.role == "system" and len(first.content) == 1 and isinstance(first.content[0], TextPart):
        body["instructions"] = first.content[0].text
        messages = messages[1:]
    body["input"] = _encode_items(messages)
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.max_tokens is not None:
        # OpenAI's floor for max_output_tokens.
        body["max_output_tokens"] = max(req.max_tokens, 16)
    if req.response_format is not None:
        body["text"] = {"format": _encode_format(req.response_format)}
    if req.tools:
        body["tools"] = [_encode_tool(t) for t in req.tools]
    if req.tool_choice is not None:
        body["tool_choice"] = _encode_tool_choice(req.tool_choice)
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.reasoning_effort is not None:
        body["reasoning"] = {"effort": req.reasoning_effort}
    if req.metadata:
        body["metadata"] = dict(req.metadata)
    encode_cache_fields(req, body)
    # Stateless: the whole history goes out each time and reasoning comes back replayable.
    body["store"] = False
    body["include"] = ["reasoning.encrypted_content"]
    if req.stream:
        body["stream"] = True
    if req.extra:
        body.update(req.extra)
    return body


def _encode_items(messages: list[Message]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for msg in messages:
        if msg.role == "tool":
            items.append({"type": "function_call_output", "call_id": msg.tool_call_id or "", "output": _encode_tool_output(msg.content)})
        elif msg.role == "assistant":
            items.extend(_encode_assistant_input(msg))
        else:
            items.append({"type": "message", "role": msg.role, "content": _encode_input_content(msg.content)})
    return items


def _encode_input_content(parts: list[Part]) -> str | list[dict[str, Any]]:
    kept = [p for p in parts if not isinstance(p, ReasoningPart)]
    if len(kept) == 1 and isinstance(kept[0], TextPart):
        return kept[0].text
    return [_encode_input_part(p) for p in kept]


def _encode_input_part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    assert isinstance(part, ImagePart)
    return {"type": "input_image", "image_url": part.data_url, "detail": part.detail or "auto"}


def _encode_tool_output(parts: list[Part]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, TextPart))
    return [_encode_input_part(p) for p in parts if not isinstance(p, ReasoningPart)]


def _encode_assistant_input(msg: Message) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    texts: list[str] = []
    for part in msg.content:
        # Only a Responses server's own reasoning state can be replayed to it.
        if isinstance(part, ReasoningPart) and part.encrypted_content and part.signature is None:
            item: dict[str, Any] = {"type": "reasoning"}
            if part.id:
                # Safe with store: false: the state travels in encrypted_content, not in a store.
                item["id"] = part.id
            item["summary"] = [{"type": "summary_text", "text": part.text}] if part.text else []
            item["encrypted_content"] = part.encrypted_content
            items.append(item)
        elif isinstance(part, TextPart):
            texts.append(part.text)
    if texts:
        content: Any = texts[0] if len(texts) == 1 else [{"type": "output_text", "text": t, "annotations": []} for t in texts]
        items.append({"type": "message", "role": "assistant", "content": content})
    for call in msg.tool_calls:
        items.append({"type": "function_call", "call_id": call.id, "name": call.name, "arguments": call.arguments})
    return items


def _encode_tool(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["parameters"] = tool.parameters
    # Required by the spec, and Responses reads a missing one as true, which rejects loose
    # schemas: unspecified means what it means in chat completions, not strict.
    out["strict"] = bool(tool.strict)
    return out


def _encode_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.name:
        return {"type": "function", "name": choice.name}
    return choice.mode


def _encode_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    # Responses requires a name; other dialects have none to give, so one is made up.
    out: dict[str, Any] = {"type": "json_schema", "name": fmt.name or "response", "schema": fmt.schema or {}}
    if fmt.strict is not None:
        out["strict"] = fmt.strict
    return out


def decode_response(body: dict[str, Any], provider: str) -> ChatResponse:
    if body.get("status") == "failed" or (body.get("error") and not body.get("output")):
        raise _failed(body.get("error"), provider)
    message = _decode_output(body.get("output") or [])
    return ChatResponse(
        id=body.get("id") or "",
        model=body.get("model") or "",
        message=message,
        finish_reason=_finish_of(body, bool(message.tool_calls)),
        usage=_decode_usage(body.get("usage")),
        provider=provider,
        created=body.get("created_at") or 0,
        raw=body,
    )


def _failed(error: Any, provider: str) -> StreamError:
    if isinstance(error, dict):
        code = error.get("code")
        return StreamError(str(error.get("message") or "the response failed"), provider=provider,
                           code=code if isinstance(code, str) else None, param=error.get("param"), body=error)
    return StreamError("the response failed", provider=provider, body=error)


def _finish_of(response: dict[str, Any], has_calls: bool) -> FinishReason:
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details") or {}
        return "content_filter" if details.get("reason") == "content_filter" else "length"
    return "tool_calls" if has_calls else "stop"


def _decode_output(items: list[Any]) -> Message:
    content: list[Part] = []
    calls: list[ToolCall] = []
    signatures: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                text = _output_part_text(part)
                if text:
                    content.append(TextPart(text))
        elif kind == "reasoning":
            part = _reasoning_part(item, signatures)
            if part is not None:
                content.append(part)
        elif kind == "function_call":
            call_id = item.get("call_id") or item.get("id") or ""
            calls.append(ToolCall(call_id, item.get("name") or "", _arguments(item.get("arguments")), signatures.pop(call_id, None),
                                  item.get("id") or None))
    return Message("assistant", content, calls)


def _output_part_text(part: Any) -> str:
    if not isinstance(part, dict):
        return ""
    # A refusal is the model's answer to the caller; keep it readable as the text.
    text = part.get("text") if part.get("type") in ("output_text", "text", "input_text") else part.get("refusal")
    return text if isinstance(text, str) else ""


def _reasoning_part(item: dict[str, Any], signatures: dict[str, str]) -> ReasoningPart | None:
    """The item as a ReasoningPart; a call's signature goes to ``signatures`` instead."""
    signature, encrypted, call_id = _open_reasoning_state(item.get("encrypted_content"))
    if call_id is not None:
        if signature:
            signatures[call_id] = signature
        return None
    texts = [s.get("text") or "" for s in item.get("summary") or () if isinstance(s, dict)]
    if not any(texts):
        texts = [c.get("text") or "" for c in item.get("content") or () if isinstance(c, dict)]
    text = "\n\n".join(t for t in texts if t)
    if not text and signature is None and encrypted is None:
        return None
    return ReasoningPart(text, signature, id=item.get("id") or None, encrypted_content=encrypted)


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value or "{}"
    return _text(dumps(value)) if value is not None else "{}"


def _decode_usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    inp = usage.get("input_tokens_details") or {}
    out = usage.get("output_tokens_details") or {}
    return Usage(
        input_tokens=usage.get("input_tokens") or 0,
        output_tokens=usage.get("output_tokens") or 0,
        cached_tokens=inp.get("cached_tokens") or 0,
        cache_write_tokens=inp.get("cache_write_tokens") or 0,
        reasoning_tokens=out.get("reasoning_tokens") or 0,
    )


class StreamDecoder:
    """Responses stream events (one SSE event at a time) into canonical stream events.

    Tolerant of what real servers skip: argument deltas (only ``.done``), summary parts,
    deltas of any kind (the item's ``output_item.done`` then carries the whole of it).
    """

    __slots__ = ("provider", "done", "_calls", "_streamed", "_signatures")

    def __init__(self, provider: str = "") -> None:
        self.provider = provider
        self.done = False
        self._calls: dict[int, int] = {}  # output_index -> canonical call index
        self._streamed: set[int] = set()  # output indices whose content came as deltas
        self._signatures: dict[str, str] = {}

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        if data == "[DONE]":
            self.done = True
            return []
        try:
            obj = loads(data)
        except ValueError:
            raise StreamError(f"malformed stream event: {data[:200]!r}", provider=self.provider) from None
        if not isinstance(obj, dict):
            return []
        kind = obj.get("type") or event
        handler = _DECODERS.get(kind or "")
        return handler(self, obj) if handler is not None else []

    def _created(self, obj: dict[str, Any]) -> list[StreamEvent]:
        response = obj.get("response") or {}
        return [StreamEvent("start", id=response.get("id") or "", model=response.get("model") or "")]

    def _added(self, obj: dict[str, Any]) -> list[StreamEvent]:
        item = obj.get("item") or {}
        if item.get("type") != "function_call":
            return []
        index = self._calls[obj.get("output_index", -1)] = len(self._calls)
        call_id = item.get("call_id") or item.get("id") or ""
        arguments = item.get("arguments") or ""
        if arguments:
            self._streamed.add(obj.get("output_index", -1))
        return [StreamEvent("tool_call", index=index, id=call_id, name=item.get("name") or "", arguments=arguments,
                            signature=self._signatures.pop(call_id, None), item_id=item.get("id") or None)]

    def _text_delta(self, obj: dict[str, Any]) -> list[StreamEvent]:
        self._streamed.add(obj.get("output_index", -1))
        delta = obj.get("delta")
        return [StreamEvent("text", text=delta)] if isinstance(delta, str) and delta else []

    def _reasoning_delta(self, obj: dict[str, Any]) -> list[StreamEvent]:
        self._streamed.add(obj.get("output_index", -1))
        delta = obj.get("delta")
        return [StreamEvent("reasoning", text=delta)] if isinstance(delta, str) and delta else []

    def _arguments_delta(self, obj: dict[str, Any]) -> list[StreamEvent]:
        position = obj.get("output_index", -1)
        index = self._calls.get(position)
        delta = obj.get("delta")
        if index is None or not isinstance(delta, str) or not delta:
            return []
        self._streamed.add(position)
        return [StreamEvent("tool_call", index=index, arguments=delta)]

    def _arguments_done(self, obj: dict[str, Any]) -> list[StreamEvent]:
        # Some servers send no argument deltas, only the whole arguments in this event.
        position = obj.get("output_index", -1)
        index = self._calls.get(position)
        arguments = obj.get("arguments")
        if index is None or position in self._streamed or not isinstance(arguments, str):
            return []
        self._streamed.add(position)
        return [StreamEvent("tool_call", index=index, arguments=arguments)]

    def _item_done(self, obj: dict[str, Any]) -> list[StreamEvent]:
        item = obj.get("item") or {}
        position = obj.get("output_index", -1)
        kind = item.get("type")
        streamed = position in self._streamed
        if kind == "function_call":
            events = [] if position in self._calls else self._added(obj)
            if not streamed and position in self._calls:
                self._streamed.add(position)
                events.append(StreamEvent("tool_call", index=self._calls[position], arguments=_arguments(item.get("arguments"))))
            return events
        if kind == "message":
            if streamed:
                return []
            text = "".join(_output_part_text(p) for p in item.get("content") or ())
            return [StreamEvent("text", text=text)] if text else []
        if kind == "reasoning":
            part = _reasoning_part(item, self._signatures)
            if part is None:
                return []
            return [StreamEvent("reasoning", text="" if streamed else part.text, signature=part.signature,
                                item_id=part.id, encrypted_content=part.encrypted_content)]
        return []

    def _terminal(self, obj: dict[str, Any]) -> list[StreamEvent]:
        self.done = True
        response = obj.get("response") or {}
        finish = _finish_of(response, bool(self._calls))
        return [StreamEvent("usage", usage=_decode_usage(response.get("usage"))), StreamEvent("finish", finish_reason=finish)]

    def _failed(self, obj: dict[str, Any]) -> list[StreamEvent]:
        response = obj.get("response") or {}
        raise _failed(response.get("error"), self.provider)

    def _error(self, obj: dict[str, Any]) -> list[StreamEvent]:
        error = obj.get("error") if isinstance(obj.get("error"), dict) else obj
        raise _failed(error, self.provider)


_DECODERS = {
    "response.created": StreamDecoder._created,
    "response.output_item.added": StreamDecoder._added,
    "response.output_text.delta": StreamDecoder._text_delta,
    "response.refusal.delta": StreamDecoder._text_delta,
    "response.reasoning_summary_text.delta": StreamDecoder._reasoning_delta,
    "response.reasoning_text.delta": StreamDecoder._reasoning_delta,
    "response.function_call_arguments.delta": StreamDecoder._arguments_delta,
    "response.function_call_arguments.done": StreamDecoder._arguments_done,
    "response.output_item.done": StreamDecoder._item_done,
    "response.completed": StreamDecoder._terminal,
    "response.incomplete": StreamDecoder._terminal,
    "response.failed": StreamDecoder._failed,
    "error": StreamDecoder._error,
}


# ---------------------------------------------------------------------------------------
# Server side: the gateway answering a Responses caller
# ---------------------------------------------------------------------------------------



def decode_request(body: Any, model: str | None = None) -> ChatRequest:
    """The canonical request for an incoming Responses body (state already resolved).

    Unknown fields are ignored; fields that would change the answer but cannot be honoured
    here are refused with a 400 naming them, never dropped.
    """
    if not isinstance(body, dict):
        raise bad("body", "expected a JSON object")
    model = model or body.get("model")
    if not model:
        raise bad("model", "required", "missing_required_parameter")
    if not isinstance(model, str):
        raise bad("model", "expected a string")
    _refuse_unsupported(body)
    raw_input = body.get("input")
    if raw_input is None:
        raise bad("input", "required", "missing_required_parameter")
    messages: list[Message] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise bad("instructions", "expected a string")
        if instructions:
            messages.append(Message.system(instructions))
    if isinstance(raw_input, str):
        messages.append(Message.user(raw_input))
    elif isinstance(raw_input, list):
        messages.extend(decode_items(raw_input))
    else:
        raise bad("input", "expected a string or an array of input items")
    if not any(m.role != "system" for m in messages):
        raise bad("input", "expected at least one item", "invalid_value")
    max_tokens = optional(body, "max_output_tokens", int, "an integer")
    if max_tokens is not None and max_tokens < 1:
        raise bad("max_output_tokens", "expected a positive integer", "invalid_value")
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise bad("reasoning", "expected an object")
    effort = (reasoning or {}).get("effort")
    if effort is not None and not isinstance(effort, str):
        raise bad("reasoning.effort", "expected a string")
    return ChatRequest(
        model=model,
        messages=messages,
        temperature=optional(body, "temperature", (int, float), "a number"),
        top_p=optional(body, "top_p", (int, float), "a number"),
        max_tokens=max_tokens,
        response_format=_decode_text_format(body.get("text")),
        tools=_decode_tools(body.get("tools")),
        tool_choice=_decode_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=optional(body, "parallel_tool_calls", bool, "a boolean"),
        reasoning_effort=effort,
        metadata=decode_metadata(body.get("metadata")),
        stream=bool(optional(body, "stream", bool, "a boolean")),
        **decode_cache_fields(body),
    )


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("background"):
        raise bad("background", "background responses are not supported by this gateway; send background: false (or omit it)",
                   "unsupported_parameter")
    for key, why in (
        ("conversation", "the Conversations API is not supported by this gateway; send the history in input, or use previous_response_id"),
        ("prompt", "stored prompt templates are not supported by this gateway; send instructions and input instead"),
        ("previous_response_id", "this endpoint keeps no stored responses; send the whole history in input"),
    ):
        if body.get(key) is not None:
            raise bad(key, why, "unsupported_parameter")
    include = body.get("include")
    if include is not None and (not isinstance(include, list) or not all(isinstance(v, str) for v in include)):
        raise bad("include", "expected an array of strings")


def decode_items(raw: list[Any]) -> list[Message]:
    """Input items (messages, function calls and their outputs, reasoning) as messages.

    Assistant-side items in a row (reasoning, an assistant message, function calls) make one
    assistant turn; a call's result becomes a tool message carrying the call's name.
    """
    messages: list[Message] = []
    names: dict[str, str] = {}
    signatures: dict[str, str] = {}
    for i, item in enumerate(raw):
        path = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad(path, "expected an object")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            _decode_message_item(item, path, messages)
        elif kind == "reasoning":
            part = _reasoning_part(item, signatures)
            if part is not None:
                turn = _assistant_turn(messages, fresh=bool(messages and messages[-1].role == "assistant" and messages[-1].tool_calls))
                turn.content.append(part)
        elif kind == "function_call":
            call = _decode_call_item(item, path, signatures)
            names[call.id] = call.name
            _assistant_turn(messages).tool_calls.append(call)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad(f"{path}.call_id", "required: the call_id of the function_call this answers", "missing_required_parameter")
            content = _decode_parts(item.get("output"), f"{path}.output")
            messages.append(Message("tool", content, tool_call_id=call_id, name=names.get(call_id)))
        elif kind == "item_reference":
            raise bad(f"{path}.id", "item references need stored responses, which this endpoint does not keep; send the item itself",
                       "unsupported_parameter")
        else:
            raise bad(f"{path}.type", f"unsupported input item type {kind!r}; expected message, function_call, "
                       "function_call_output, reasoning or item_reference", "invalid_value")
    return messages


def _assistant_turn(messages: list[Message], fresh: bool = False) -> Message:
    if fresh or not messages or messages[-1].role != "assistant":
        messages.append(Message("assistant"))
    return messages[-1]


def _decode_message_item(item: dict[str, Any], path: str, messages: list[Message]) -> None:
    role = item.get("role")
    if role not in _MESSAGE_ROLES:
        raise bad(f"{path}.role", f"expected one of {', '.join(_MESSAGE_ROLES)}", "invalid_value")
    content = _decode_parts(item.get("content"), f"{path}.content")
    if role == "assistant":
        previous = messages[-1] if messages else None
        # Text after reasoning of the same turn joins it; after calls it starts a new turn.
        if previous is not None and previous.role == "assistant" and not previous.tool_calls:
            previous.content.extend(content)
        else:
            messages.append(Message("assistant", content))
        return
    messages.append(Message("system" if role == "developer" else role, content))


def _decode_parts(content: Any, path: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise bad(path, "expected a string or an array of content parts")
    parts: list[Part] = []
    for j, raw in enumerate(content):
        where = f"{path}[{j}]"
        if not isinstance(raw, dict):
            raise bad(where, "expected an object")
        kind = raw.get("type")
        if kind in ("input_text", "output_text", "text"):
            text = raw.get("text")
            if not isinstance(text, str):
                raise bad(f"{where}.text", "expected a string")
            if text:
                parts.append(TextPart(text))
        elif kind == "refusal":
            refusal = raw.get("refusal")
            if isinstance(refusal, str) and refusal:
                parts.append(TextPart(refusal))
        elif kind == "input_image":
            url = raw.get("image_url")
            if not isinstance(url, str) or not url:
                raise bad(f"{where}.image_url", "expected an https or data: URL (file_id needs the Files API, which images cannot use here)",
                           "missing_required_parameter")
            detail = raw.get("detail")
            parts.append(ImagePart.from_url(url, detail if detail in ("low", "high") else None))
        else:
            raise bad(f"{where}.type", f"unsupported content part {kind!r}; expected input_text, input_image, output_text or refusal",
                       "invalid_value")
    return parts


def _decode_call_item(item: dict[str, Any], path: str, signatures: dict[str, str]) -> ToolCall:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise bad(f"{path}.call_id", "expected a string", "missing_required_parameter")
    if not isinstance(name, str) or not name:
        raise bad(f"{path}.name", "expected a string", "missing_required_parameter")
    item_id = item.get("id")
    return ToolCall(call_id, name, _arguments(item.get("arguments")), signatures.pop(call_id, None),
                    item_id if isinstance(item_id, str) and item_id else None)


def _decode_text_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad("text", "expected an object")
    fmt = raw.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        raise bad("text.format.type", "expected one of text, json_object, json_schema", "invalid_value")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise bad("text.format.schema", "expected a JSON Schema object", "missing_required_parameter")
    name = fmt.get("name")
    return ResponseFormat("json_schema", schema, name if isinstance(name, str) else None, fmt.get("strict"))


def _decode_tools(raw: Any) -> list[Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad("tools", "expected an array")
    tools: list[Tool] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise bad(f"tools[{i}]", "expected an object")
        kind = tool.get("type")
        if kind in DROPPED_TOOLS:
            continue
        if kind in _HOSTED_TOOLS:
            raise BadRequestError(
                f"tools[{i}].type: the {kind!r} tool is not supported by this gateway: no backend here can run it for you; "
                "remove it, or offer the capability as a function tool", param=f"tools[{i}].type", code="unsupported_parameter")
        if kind == "namespace":
            tools.extend(_decode_tools(tool.get("tools")))
            continue
        if kind != "function":
            raise bad(f"tools[{i}].type", f"unsupported tool type {kind!r}; expected function", "invalid_value")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise bad(f"tools[{i}].name", "expected a string", "missing_required_parameter")
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise bad(f"tools[{i}].parameters", "expected a JSON Schema object")
        strict = tool.get("strict")
        tools.append(Tool(name, tool.get("description") or "", parameters or dict(DEFAULT_PARAMETERS), strict if isinstance(strict, bool) else None))
    return tools


def _decode_tool_choice(raw: Any) -> ToolChoice | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in TOOL_CHOICE_MODES:
            raise bad("tool_choice", "expected one of auto, none, required, or a function choice", "invalid_value")
        return ToolChoice(raw)
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "function":
        name = raw.get("name") or (raw.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise bad("tool_choice.name", "expected a string", "missing_required_parameter")
        return ToolChoice("required", name)
    if kind == "allowed_tools":
        # The subset has no canonical slot; its mode is the part every backend can honour.
        return ToolChoice("required" if raw.get("mode") == "required" else "auto")
    if kind in TOOL_CHOICE_MODES:
        return ToolChoice(kind)
    raise BadRequestError(f"tool_choice.type: {kind!r} is not supported by this gateway; expected a mode or a function",
                          param="tool_choice", code="unsupported_parameter")



def echo_fields(body: dict[str, Any]) -> dict[str, Any]:
    """What the response object repeats of the request, with the values OpenAI's API reports
    for fields the request left out."""
    text, reasoning = body.get("text"), body.get("reasoning")
    text = text if isinstance(text, dict) else {}
    reasoning = reasoning if isinstance(reasoning, dict) else {}
    tools = [_echo_tool(t) for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") not in DROPPED_TOOLS]
    echo = {
        "background": False,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": body["temperature"] if body.get("temperature") is not None else 1,
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity") or body.get("verbosity") or "medium"},
        "tool_choice": body.get("tool_choice") if body.get("tool_choice") is not None else "auto",
        "tools": tools,
        "top_logprobs": body.get("top_logprobs") or 0,
        "top_p": body["top_p"] if body.get("top_p") is not None else 1,
        "truncation": body.get("truncation") or "disabled",
    }
    # The spec types ``user`` as a string, never null: it is echoed only when given.
    if isinstance(body.get("user"), str):
        echo["user"] = body["user"]
    return echo


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        return tool
    return {"type": "function", "name": tool.get("name"), "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": tool.get("strict") if isinstance(tool.get("strict"), bool) else True}


def response_object(response_id: str, created_at: int, model: str, echo: dict[str, Any] | None, status: str,
                    output: list[dict[str, Any]], usage: Usage | None, error: dict[str, Any] | None = None,
                    incomplete: str | None = None) -> dict[str, Any]:
    """The whole ``Response`` object: every field OpenAI's has, echoed or null (clients read
    them without checking), except ``usage`` before it is known: the spec types it as an
    object, never null."""
    out = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model,
        "output": output,
        **(echo if echo is not None else echo_fields({})),
    }
    if usage is not None:
        out["usage"] = _encode_usage(usage)
    return out


def _encode_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _status(finish: str | None) -> tuple[str, str | None]:
    """(response status, incomplete reason) for a canonical finish reason."""
    if finish == "length":
        return "incomplete", "max_output_tokens"
    if finish == "content_filter":
        return "incomplete", "content_filter"
    if finish == "error":
        return "failed", None
    return "completed", None


def _failure(exc: BaseException | None) -> dict[str, Any]:
    if isinstance(exc, ModelportError):
        return {"code": exc.code if exc.code in _FAILED_CODES.values() else _FAILED_CODES.get(exc.kind, "server_error"), "message": exc.message}
    return {"code": "server_error", "message": "the model stopped with an error"}


def _message_item(texts: list[str], status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "annotations": [], "logprobs": [], "text": t} for t in texts]
    return {"id": new_id("msg_"), "type": "message", "status": status, "content": content, "role": "assistant"}


def _reasoning_item(part: ReasoningPart) -> dict[str, Any]:
    item: dict[str, Any] = {"id": part.id or new_id("rs_"), "type": "reasoning",
                            "summary": [{"type": "summary_text", "text": part.text}] if part.text else []}
    state = _reasoning_state(part)
    if state is not None:
        item["encrypted_content"] = state
    return item


def _signature_item(call_id: str, signature: str) -> dict[str, Any]:
    """A Gemini function call's thought signature, in the item clients replay before the call."""
    return {"id": new_id("rs_"), "type": "reasoning", "summary": [], "encrypted_content": seal({"c": call_id, "s": signature})}


def _call_item(call: ToolCall, status: str) -> dict[str, Any]:
    return {"id": call.item_id or new_id("fc_"), "type": "function_call", "status": status,
            "arguments": call.arguments, "call_id": call.id or new_id("call_"), "name": call.name}


def output_items(message: Message, finish: str | None) -> list[dict[str, Any]]:
    """The output items of an answer, in the order the model produced them."""
    items: list[dict[str, Any]] = []
    texts: list[str] = []
    for part in message.content:
        if isinstance(part, TextPart) and part.text:
            texts.append(part.text)
        elif isinstance(part, ReasoningPart) and (part.text or part.signature or part.encrypted_content):
            if texts:
                items.append(_message_item(texts, "completed"))
                texts = []
            items.append(_reasoning_item(part))
    if texts:
        items.append(_message_item(texts, "completed"))
    for call in message.tool_calls:
        if call.signature:
            items.append(_signature_item(call.id, call.signature))
        items.append(_call_item(call, "completed"))
    if finish == "length" and items and items[-1]["type"] in ("message", "function_call"):
        items[-1]["status"] = "incomplete"
    return items


def encode_response(resp: ChatResponse, model: str, echo: dict[str, Any] | None = None, response_id: str | None = None) -> dict[str, Any]:
    status, incomplete = _status(resp.finish_reason)
    return response_object(
        response_id or _response_id(resp.id), resp.created or int(time.time()), model, echo, status,
        output_items(resp.message, resp.finish_reason), resp.usage,
        error=_failure(None) if status == "failed" else None, incomplete=incomplete,
    )


def _response_id(upstream_id: str | None) -> str:
    # Upstream ids of other dialects are not leaked to Responses callers.
    return upstream_id if upstream_id and upstream_id.startswith("resp_") else new_id("resp_")


class StreamEncoder(StreamEncoderBase):
    """Canonical stream events in, Responses SSE events out, as OpenAI's server sends them.

    Items go out one after another, each with its whole lifecycle; a call is streamed live
    only while no other call started before it (parallel fragments cannot be interleaved
    in Responses), later ones are sent whole at the end. ``response`` holds the final
    object once the stream is closed or failed.
    """

    def __init__(self, model: str, include_usage: bool = True, echo: dict[str, Any] | None = None,
                 response_id: str | None = None, created_at: int | None = None) -> None:
        self.model = model
        self.echo = echo if echo is not None else echo_fields({})
        self.id = response_id or new_id("resp_")
        self.created_at = created_at or int(time.time())
        self.response: dict[str, Any] | None = None
        self._seq = 0
        self._skip_to = -1
        self._started = False
        self._closed = False
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._parts: list[str] = []  # text of the open message or reasoning summary
        self._live: int | None = None  # canonical index of the call streamed live
        self._calls: dict[int, ToolCall] = {}  # every call, by canonical index
        self._usage: Usage | None = None
        self._finish: str | None = None

    # -- framing --------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        seq = self._seq
        self._seq += 1
        if seq <= self._skip_to:
            return b""
        return b"event: " + kind.encode() + b"\ndata: " + dumps({"type": kind, "sequence_number": seq, **fields}) + b"\n\n"

    def _snapshot(self, status: str, usage: Usage | None = None, error: dict[str, Any] | None = None, incomplete: str | None = None) -> dict[str, Any]:
        return response_object(self.id, self.created_at, self.model, self.echo, status, list(self._output), usage, error, incomplete)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        snapshot = self._snapshot("in_progress")
        return self._event("response.created", response=snapshot) + self._event("response.in_progress", response=snapshot)

    # -- items ----------------------------------------------------------------------------

    @property
    def _index(self) -> int:
        return len(self._output)

    def _add(self, item: dict[str, Any]) -> bytes:
        self._open = item
        self._parts = []
        return self._event("response.output_item.added", output_index=self._index, item=item)

    def _open_message(self) -> bytes:
        item = {"id": new_id("msg_"), "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
        return self._close() + self._add(item) + self._event(
            "response.content_part.added", item_id=item["id"], output_index=self._index, content_index=0, part=_text_part(""))

    def _open_reasoning(self) -> bytes:
        return self._close() + self._add({"id": new_id("rs_"), "type": "reasoning", "summary": []})

    def _open_call(self, call: ToolCall) -> bytes:
        out = self._close()
        if call.signature:
            out += self._whole(_signature_item(call.id, call.signature))
        return out + self._add({"id": call.item_id, "type": "function_call", "status": "in_progress", "arguments": "",
                                "call_id": call.id, "name": call.name})

    def _close(self, status: str = "completed") -> bytes:
        """Finish the open item with its closing events; it joins the output."""
        item = self._open
        if item is None:
            return b""
        self._open = None
        kind, index, item_id = item["type"], self._index, item["id"]
        out = b""
        if kind == "message":
            text = "".join(self._parts)
            part = _text_part(text)
            out += self._event("response.output_text.done", item_id=item_id, output_index=index, content_index=0, text=text, logprobs=[])
            out += self._event("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part)
            done = {**item, "status": status, "content": [part]}
        elif kind == "reasoning":
            done = dict(item)
            if self._parts:
                summary = {"type": "summary_text", "text": "".join(self._parts)}
                out += self._event("response.reasoning_summary_text.done", item_id=item_id, output_index=index, summary_index=0, text=summary["text"])
                out += self._event("response.reasoning_summary_part.done", item_id=item_id, output_index=index, summary_index=0, part=summary)
                done["summary"] = [summary]
        else:
            call = self._calls[self._live]  # type: ignore[index]
            arguments = call.arguments or "{}"
            out += self._event("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments, name=call.name)
            done = {**item, "status": status, "arguments": arguments}
        self._output.append(done)
        return out + self._event("response.output_item.done", output_index=index, item=done)

    def _whole(self, item: dict[str, Any]) -> bytes:
        """One finished item with its whole lifecycle at once (later calls, replays)."""
        kind, index, item_id = item["type"], self._index, item["id"]
        if kind == "message":
            out = self._event("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
            for c, part in enumerate(item.get("content") or ()):
                text = part.get("text", "")
                out += self._event("response.content_part.added", item_id=item_id, output_index=index, content_index=c, part=_text_part(""))
                if text:
                    out += self._event("response.output_text.delta", item_id=item_id, output_index=index, content_index=c, delta=text, logprobs=[])
                out += self._event("response.output_text.done", item_id=item_id, output_index=index, content_index=c, text=text, logprobs=[])
                out += self._event("response.content_part.done", item_id=item_id, output_index=index, content_index=c, part=part)
        elif kind == "reasoning":
            out = self._event("response.output_item.added", output_index=index, item={**item, "summary": []})
            for s, summary in enumerate(item.get("summary") or ()):
                text = summary.get("text", "")
                out += self._event("response.reasoning_summary_part.added", item_id=item_id, output_index=index, summary_index=s,
                                   part={"type": "summary_text", "text": ""})
                out += self._event("response.reasoning_summary_text.delta", item_id=item_id, output_index=index, summary_index=s, delta=text)
                out += self._event("response.reasoning_summary_text.done", item_id=item_id, output_index=index, summary_index=s, text=text)
                out += self._event("response.reasoning_summary_part.done", item_id=item_id, output_index=index, summary_index=s, part=summary)
        else:
            arguments = item.get("arguments", "")
            out = self._event("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "arguments": ""})
            if arguments:
                out += self._event("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=arguments)
            out += self._event("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments, name=item.get("name"))
        self._output.append(item)
        return out + self._event("response.output_item.done", output_index=index, item=item)

    # -- canonical events -----------------------------------------------------------------

    def encode(self, event: StreamEvent) -> bytes:
        if self._closed:
            return b""
        out = self._start()
        kind = event.kind
        if kind == "text":
            if event.text:
                if self._open is None or self._open["type"] != "message":
                    out += self._open_message()
                self._parts.append(event.text)
                out += self._event("response.output_text.delta", item_id=self._open["id"], output_index=self._index,  # type: ignore[index]
                                   content_index=0, delta=event.text, logprobs=[])
        elif kind == "reasoning":
            out += self._reasoning(event)
        elif kind == "tool_call":
            out += self._tool_call(event)
        elif kind == "usage":
            self._usage = event.usage
        elif kind == "finish":
            self._finish = event.finish_reason
            self._usage = event.usage or self._usage
        return out

    def _reasoning(self, event: StreamEvent) -> bytes:
        out = b""
        if self._open is None or self._open["type"] != "reasoning":
            if not event.text and not event.signature and not event.encrypted_content:
                return b""
            out += self._open_reasoning()
        item = self._open
        assert item is not None
        if event.item_id:
            item["id"] = event.item_id
        if event.signature or event.encrypted_content:
            signature, encrypted, _ = _open_reasoning_state(item.get("encrypted_content"))
            state = _reasoning_state(ReasoningPart("", event.signature or signature, encrypted_content=event.encrypted_content or encrypted))
            if state is not None:
                item["encrypted_content"] = state
        if event.text:
            index = self._index
            if not self._parts:
                out += self._event("response.reasoning_summary_part.added", item_id=item["id"], output_index=index, summary_index=0,
                                   part={"type": "summary_text", "text": ""})
            self._parts.append(event.text)
            out += self._event("response.reasoning_summary_text.delta", item_id=item["id"], output_index=index, summary_index=0, delta=event.text)
        return out

    def _tool_call(self, event: StreamEvent) -> bytes:
        call = self._calls.get(event.index)
        if call is None:
            call = self._calls[event.index] = ToolCall(event.id or new_id("call_"), event.name or "", "", event.signature,
                                                       event.item_id or new_id("fc_"))
            if self._live is None:
                self._live = event.index
                out = self._open_call(call)
                if event.arguments:
                    call.arguments += event.arguments
                    out += self._event("response.function_call_arguments.delta", item_id=call.item_id, output_index=self._index, delta=event.arguments)
                return out
        call.arguments += event.arguments
        if event.signature:
            call.signature = event.signature
        live = self._open is not None and self._open["type"] == "function_call" and event.index == self._live
        if live and event.arguments:
            return self._event("response.function_call_arguments.delta", item_id=call.item_id, output_index=self._index, delta=event.arguments)
        return b""

    def close(self) -> bytes:
        """The open item's end, the calls held back, and exactly one terminal event."""
        if self._closed:
            return b""
        out = self._start()
        status, incomplete = _status(self._finish)
        item_status = "incomplete" if incomplete == "max_output_tokens" else "completed"
        out += self._close(item_status)
        for index in sorted(self._calls):
            if index != self._live:
                call = self._calls[index]
                call.arguments = call.arguments or "{}"
                if call.signature:
                    out += self._whole(_signature_item(call.id, call.signature))
                out += self._whole(_call_item(call, item_status))
        self._closed = True
        usage = self._usage or Usage()
        error = _failure(None) if status == "failed" else None
        self.response = self._snapshot(status, usage, error, incomplete)
        return out + self._event(_TERMINAL[status], response=self.response)

    def error(self, exc: BaseException) -> bytes:
        """A failure after the stream began: an ``error`` event (which makes openai-python
        raise with the message), then ``response.failed`` with the partial output."""
        if self._closed:
            return b""
        out = self._start() + self._close("incomplete")
        self._closed = True
        failure = _failure(exc)
        _, body, _ = encode_error(exc)
        out += self._event("error", code=failure["code"], message=failure["message"], param=body["error"].get("param"), error=body["error"])
        self.response = self._snapshot("failed", self._usage, failure)
        return out + self._event("response.failed", response=self.response)


_TERMINAL = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def replay(response: dict[str, Any], starting_after: int = -1) -> bytes:
    """A stored response as the stream that made it, from ``starting_after + 1`` on."""
    encoder = StreamEncoder(response.get("model") or "", echo={}, response_id=response["id"], created_at=response.get("created_at"))
    encoder._skip_to = starting_after
    head = {**response, "status": "in_progress", "output": [], "completed_at": None, "error": None, "incomplete_details": None}
    head.pop("usage", None)
    out = encoder._event("response.created", response=head) + encoder._event("response.in_progress", response=head)
    for item in response.get("output") or ():
        out += encoder._whole(item)
    return out + encoder._event(_TERMINAL.get(response.get("status") or "", "response.completed"), response=response)
