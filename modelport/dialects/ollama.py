"""Ollama's native API (``/api/chat``, ``/api/generate``, ``/api/embed``), both directions, no I/O.

Unlike Ollama's OpenAI-compatible layer, the native API honours ``options.num_ctx`` (the
context window) and ``keep_alive``. Streams are NDJSON, one JSON object per line, the last
one ``done: true`` with the counts and durations.

Choices made once, here:

* Options: the canonical sampling fields travel in ``options`` (``max_tokens`` as
  ``num_predict``). Everything else Ollama reads rides in ``ChatRequest.extra``: the keys
  in ``BODY_FIELDS`` (``keep_alive``, ``logprobs``...) go at the top of the body, the rest
  (``num_ctx``, ``repeat_penalty``, ``min_p``...) into ``options``; an ``options`` object in
  ``extra`` is merged in as it is. Decoding does the reverse, so nothing is lost.
* Tool calls have no ids on this wire. Decoding a history numbers them ``call_0``,
  ``call_1``... in order (stable when the same history comes back) and pairs each tool
  result with the earliest unanswered call of its ``tool_name``; a decoded answer's calls
  get fresh random ids. ``tool_choice`` does not exist: ``none`` is sent as no tools, the
  others are dropped.
* Content is one string: text parts are joined, images travel as raw base64 (their media
  type is sniffed back from the data). Images by URL cannot be sent: the dialect does no
  I/O, so they are refused with a hint to inline them.
* ``think``: ``none`` is false, minimal/low/medium/high become the level strings; on the way
  in, true is "medium" and "max" is "high". Reasoning signatures have no slot.
* ``done_reason`` knows stop and length; content_filter and error go out as stop.
* Durations (nanoseconds): the gateway measures only the whole call, so a non-streamed
  answer's time is split between prompt and output by their token counts; a stream
  measures its first token.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from typing import Any, Mapping, TypedDict

from modelport.dialects.base import StreamEncoderBase
from modelport.errors import BadRequestError, ModelportError, NotFoundError, StreamError, error_for_status
# Ollama's tool definitions are OpenAI's, and so are its error statuses and request checks.
from modelport.dialects.openai_family import bad, decode_tools, encode_tool, new_id
from modelport.dialects.openai_family import encode_error as openai_error
from modelport.jsonio import dumps, loads
from modelport.ndjson import NDJSONParser
from modelport.retry import parse_retry_after
from modelport.types import (
    ChatRequest,
    ChatResponse,
    Embedding,
    FinishReason,
    EmbeddingResponse,
    ImagePart,
    Message,
    ModelInfo,
    Part,
    ReasoningPart,
    ResponseFormat,
    StreamEvent,
    TextPart,
    Tool,
    ToolCall,
    Usage,
    dump_json,
)

# The backend reads this dialect's streams with this framing (SSE is the default).
StreamParser = NDJSONParser
MEDIA_TYPE = b"application/x-ndjson"

# Top-level chat fields with no canonical counterpart: they travel in extra both ways.
_EXTRA_BODY = ("keep_alive", "logprobs", "top_logprobs")
# extra keys that belong at the top of a chat body; every other extra key is an option.
BODY_FIELDS = frozenset({*_EXTRA_BODY, "think", "format"})
# Canonical field -> Ollama option.
_OPTIONS = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("seed", "seed"),
    ("max_tokens", "num_predict"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
)
_NUMBER, _INT = (int, float), (int,)
_OPTION_TYPES = {"temperature": _NUMBER, "top_p": _NUMBER, "top_k": _INT, "seed": _INT, "num_predict": _INT,
                 "presence_penalty": _NUMBER, "frequency_penalty": _NUMBER}
_ROLES = ("system", "user", "assistant", "tool")
_THINK_OUT = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high"}
_THINK_IN = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
# Leading base64 characters of each image format's magic bytes.
_IMAGE_MAGIC = (("iVBORw0KGgo", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"), ("UklGR", "image/webp"))


def now(at: float | None = None) -> str:
    """An ISO 8601 UTC timestamp (of ``at``, epoch seconds, else of now), as Ollama writes them."""
    moment = datetime.now(timezone.utc) if at is None else datetime.fromtimestamp(at, timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------
# Client side: modelport calling an Ollama server
# ---------------------------------------------------------------------------------------


def chat_path(model_id: str, stream: bool) -> str:
    return "/api/chat"


def encode_request(req: ChatRequest, model_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model_id, "messages": _encode_messages(req.messages)}
    no_tools = req.tool_choice is not None and req.tool_choice.mode == "none"
    if req.tools and not no_tools:
        body["tools"] = [_encode_tool(t) for t in req.tools]
    if req.response_format is not None and req.response_format.type != "text":
        fmt = req.response_format
        body["format"] = (fmt.schema or {}) if fmt.type == "json_schema" else "json"
    if req.reasoning_effort is not None:
        body["think"] = _THINK_OUT.get(req.reasoning_effort, True)
    options: dict[str, Any] = {}
    for field, option in _OPTIONS:
        value = getattr(req, field)
        if value is not None:
            options[option] = value
    if req.stop:
        options["stop"] = list(req.stop)
    for key, value in req.extra.items():
        if key == "options" and isinstance(value, dict):
            options.update(value)
        elif key in BODY_FIELDS:
            body[key] = value
        else:
            options[key] = value
    if options:
        body["options"] = options
    # Explicit either way: Ollama streams unless told not to.
    body["stream"] = req.stream
    return body


def _encode_messages(messages: list[Message]) -> list[dict[str, Any]]:
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    return [_encode_message(m, names) for m in messages]


def _encode_message(msg: Message, names: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role, "content": msg.text}
    images = [_image_data(p) for p in msg.content if isinstance(p, ImagePart)]
    if images:
        out["images"] = images
    if msg.role == "assistant":
        if msg.reasoning:
            out["thinking"] = msg.reasoning
        if msg.tool_calls:
            out["tool_calls"] = [_encode_tool_call(c) for c in msg.tool_calls]
    elif msg.role == "tool":
        name = msg.name or names.get(msg.tool_call_id or "")
        if name:
            out["tool_name"] = name
    return out


def _image_data(part: ImagePart) -> str:
    if part.data is None:
        raise BadRequestError(
            f"Ollama takes images inline (base64) only, not by URL: {str(part.url)[:100]}",
            param="messages", hint="download the image and send it as base64 data (a data: URL)",
        )
    return part.data


def _encode_tool_call(call: ToolCall) -> dict[str, Any]:
    return {"function": {"name": call.name, "arguments": call.args_object()}}


def _encode_tool(tool: Tool) -> dict[str, Any]:
    out = encode_tool(tool)
    out["function"].pop("strict", None)  # OpenAI's flag; Ollama has none
    return out


def decode_response(body: dict[str, Any], provider: str) -> ChatResponse:
    if body.get("error"):
        raise StreamError(str(body["error"]), provider=provider, body=body)
    message = body.get("message")
    if not isinstance(message, dict):
        # /api/generate answers carry the text at the top.
        message = {"content": body.get("response"), "thinking": body.get("thinking")}
    content: list[Part] = []
    thinking, text = message.get("thinking"), message.get("content")
    if isinstance(thinking, str) and thinking:
        content.append(ReasoningPart(thinking))
    if isinstance(text, str) and text:
        content.append(TextPart(text))
    calls = [_decode_answer_call(c) for c in message.get("tool_calls") or ()]
    return ChatResponse(
        id="",
        model=body.get("model") or "",
        message=Message("assistant", content, calls),
        finish_reason=_decode_finish(body.get("done_reason"), bool(calls)),
        usage=_decode_usage(body),
        provider=provider,
        raw=body,
    )


def _decode_answer_call(call: dict[str, Any]) -> ToolCall:
    function = call.get("function") or {}
    return ToolCall(call.get("id") or new_id("call_"), function.get("name") or "", _arguments_text(function.get("arguments")))


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments or "{}"
    return dump_json(arguments) if arguments is not None else "{}"


def _decode_finish(reason: Any, has_calls: bool) -> FinishReason:
    if reason == "length":
        return "length"
    return "tool_calls" if has_calls else "stop"


def _decode_usage(body: dict[str, Any]) -> Usage:
    return Usage(input_tokens=body.get("prompt_eval_count") or 0, output_tokens=body.get("eval_count") or 0)


class StreamDecoder:
    """NDJSON lines (one chat or generate object each) in, canonical stream events out.
    Tool calls arrive whole, one object per call; the ``done`` object carries the counts."""

    __slots__ = ("provider", "done", "_started", "_calls")

    def __init__(self, provider: str = "") -> None:
        self.provider = provider
        self.done = False
        self._started = False
        self._calls = 0

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        try:
            chunk = loads(data)
        except ValueError:
            raise StreamError(f"malformed stream line: {data[:200]!r}", provider=self.provider) from None
        if not isinstance(chunk, dict):
            raise StreamError(f"malformed stream line: {data[:200]!r}", provider=self.provider)
        return self.feed_json(chunk)

    def feed_json(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if chunk.get("error"):
            raise StreamError(str(chunk["error"]), provider=self.provider, body=chunk)
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            events.append(StreamEvent("start", id="", model=chunk.get("model") or ""))
        message = chunk.get("message")
        if not isinstance(message, dict):
            message = {"content": chunk.get("response"), "thinking": chunk.get("thinking")}
        thinking, text = message.get("thinking"), message.get("content")
        if isinstance(thinking, str) and thinking:
            events.append(StreamEvent("reasoning", text=thinking))
        if isinstance(text, str) and text:
            events.append(StreamEvent("text", text=text))
        for call in message.get("tool_calls") or ():
            decoded = _decode_answer_call(call)
            events.append(StreamEvent("tool_call", index=self._calls, id=decoded.id, name=decoded.name, arguments=decoded.arguments))
            self._calls += 1
        if chunk.get("done"):
            self.done = True
            finish = _decode_finish(chunk.get("done_reason"), self._calls > 0)
            events.append(StreamEvent("finish", finish_reason=finish, usage=_decode_usage(chunk)))
        return events


def retry_after(headers: Mapping[str, str] | None, body: Any = None) -> float | None:
    return parse_retry_after(headers) if headers else None


def decode_error(status: int, body: Any, headers: Mapping[str, str] | None, provider: str) -> ModelportError:
    """``{"error": "model 'x' not found"}`` and friends; other bodies are shown as text."""
    if isinstance(body, dict) and body.get("error"):
        message = str(body["error"])
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:1000]
    else:
        message = f"HTTP {status}"
    kwargs: dict[str, Any] = {"provider": provider, "retry_after": retry_after(headers, body), "body": body}
    if status in (400, 404) and "not found" in message.lower():
        # Ollama has said 400 as well as 404 for a model it does not have.
        return NotFoundError(message, status=404, hint="pull the model on the Ollama server (`ollama pull <model>`) or check its name", **kwargs)
    return error_for_status(status, message, **kwargs)


# ---------------------------------------------------------------------------------------
# Server side: the gateway answering an Ollama-speaking caller
# ---------------------------------------------------------------------------------------


def _typed(value: Any, kind: tuple[type, ...], param: str, what: str) -> Any:
    # bool is an int in Python, never in JSON.
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise bad(param, f"expected {what}")
    return value


def _model(body: Any, model: str | None) -> str:
    if not isinstance(body, dict):
        raise bad("body", "expected a JSON object")
    model = model or body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("model: required (a model name, e.g. llama3.2)", param="model", code="missing_required_parameter")
    return model


def decode_request(body: Any, model: str | None = None) -> ChatRequest:
    """The canonical request for an incoming ``/api/chat`` body; unknown fields are ignored.
    ``stream`` defaults to true, as on Ollama."""
    model = _model(body, model)
    raw = body.get("messages")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise bad("messages", "expected an array of messages")
    request = _decode_common(body, model, _decode_messages(raw))
    request.tools = decode_tools(body.get("tools"))
    return request


def decode_generate_request(body: Any, model: str | None = None) -> ChatRequest:
    """An ``/api/generate`` body as a chat: ``system`` then one user turn of ``prompt`` and
    ``images``. ``raw`` and ``template`` (prompt templating) and the deprecated ``context``
    have no meaning for a chat backend and are ignored; ``suffix`` (fill-in-the-middle) needs
    the model's own template and is refused rather than answered wrongly."""
    model = _model(body, model)
    prompt, system = body.get("prompt"), body.get("system")
    _typed(prompt, (str,), "prompt", "a string")
    _typed(system, (str,), "system", "a string")
    if body.get("suffix"):
        raise BadRequestError("suffix: fill-in-the-middle is not supported by this gateway", param="suffix",
                              hint="send the text before the gap as the prompt, without suffix")
    messages = [Message.system(system)] if system else []
    parts: list[Part] = [TextPart(prompt)] if prompt else []
    parts += _decode_images(body.get("images"), "images")
    if parts:
        messages.append(Message("user", parts))
    return _decode_common(body, model, messages)


def _decode_common(body: dict[str, Any], model: str, messages: list[Message]) -> ChatRequest:
    fields, extra = _decode_options(body.get("options"))
    for key in _EXTRA_BODY:
        if body.get(key) is not None:
            extra[key] = body[key]
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise bad("stream", "expected a boolean")
    return ChatRequest(model=model, messages=messages, response_format=_decode_format(body.get("format")),
                       reasoning_effort=_decode_think(body.get("think")), stream=stream, extra=extra, **fields)


def _decode_options(raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(canonical fields, the other options for ``extra``)."""
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        raise bad("options", "expected an object")
    options = dict(raw)
    fields: dict[str, Any] = {}
    for field, option in _OPTIONS:
        value = _typed(options.pop(option, None), _OPTION_TYPES[option], f"options.{option}", "a number")
        if value is not None:
            fields[field] = value
    # num_predict -1 (no limit) and -2 (fill the context) mean "as many as allowed".
    if fields.get("max_tokens") is not None and fields["max_tokens"] < 0:
        del fields["max_tokens"]
    stop = options.pop("stop", None)
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise bad("options.stop", "expected a string or an array of strings")
        if stop:
            fields["stop"] = stop
    return fields, {k: v for k, v in options.items() if v is not None}


def _decode_format(raw: Any) -> ResponseFormat | None:
    if raw is None or raw == "":
        return None
    if raw == "json":
        return ResponseFormat("json_object")
    if isinstance(raw, dict):
        return ResponseFormat("json_schema", raw)
    raise bad("format", 'expected "json" or a JSON Schema object')


def _decode_think(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        return "medium" if raw else "none"
    if raw in _THINK_IN:
        return _THINK_IN[raw]
    raise bad("think", "expected true, false, or one of low, medium, high, max")


def _decode_images(raw: Any, path: str) -> list[Part]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
        raise bad(path, "expected an array of base64 strings")
    return [ImagePart.from_url(i) if i.startswith("data:") else ImagePart(data=i, media_type=_sniff(i)) for i in raw]


def _sniff(data: str) -> str:
    return next((kind for magic, kind in _IMAGE_MAGIC if data.startswith(magic)), "image/png")


def _decode_messages(raw: list[Any]) -> list[Message]:
    messages: list[Message] = []
    # The last assistant turn's calls not yet answered, as (id, name), in order.
    pending: list[tuple[str, str]] = []
    numbered = 0
    for i, item in enumerate(raw):
        path = f"messages[{i}]"
        if not isinstance(item, dict):
            raise bad(path, "expected an object")
        role = item.get("role")
        if role not in _ROLES:
            raise BadRequestError(f"{path}.role: expected one of {', '.join(_ROLES)}", param=f"{path}.role", code="invalid_value")
        text = _typed(item.get("content"), (str,), f"{path}.content", "a string")
        parts: list[Part] = [TextPart(text)] if text else []
        parts += _decode_images(item.get("images"), f"{path}.images")
        if role == "assistant":
            thinking = _typed(item.get("thinking"), (str,), f"{path}.thinking", "a string")
            if thinking:
                parts.insert(0, ReasoningPart(thinking))
            calls = _decode_history_calls(item.get("tool_calls"), f"{path}.tool_calls", numbered)
            numbered += len(calls)
            pending = [(c.id, c.name) for c in calls]
            messages.append(Message("assistant", parts, calls))
        elif role == "tool":
            name = item.get("tool_name") or item.get("name")
            name = name if isinstance(name, str) and name else None
            match = next((p for p in pending if p[1] == name), None) or (pending[0] if pending else None)
            if match is not None:
                pending.remove(match)
            call_id = item.get("tool_call_id") or (match[0] if match else f"call_{numbered}")
            messages.append(Message("tool", parts, tool_call_id=call_id, name=name or (match[1] if match else None)))
        else:
            messages.append(Message(role, parts))
    return messages


def _decode_history_calls(raw: Any, path: str, first: int) -> list[ToolCall]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad(path, "expected an array")
    calls = []
    for j, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise bad(f"{path}[{j}].function.name", "expected a string")
        arguments = function.get("arguments")  # type: ignore[union-attr]
        if arguments is not None and not isinstance(arguments, (dict, str)):
            raise bad(f"{path}[{j}].function.arguments", "expected an object")
        calls.append(ToolCall(call.get("id") or f"call_{first + j}", name, _arguments_text(arguments)))
    return calls


class _Stats(TypedDict):
    """The timings and counts that end an Ollama answer (durations in nanoseconds)."""

    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


def _stats(usage: Usage, total_ns: int, prompt_ns: int | None = None) -> _Stats:
    n_in, n_out = usage.input_tokens, usage.output_tokens
    if prompt_ns is None:
        prompt_ns = total_ns * n_in // (n_in + n_out) if n_in + n_out else 0
    return {
        "total_duration": total_ns,
        "load_duration": 0,
        "prompt_eval_count": n_in,
        "prompt_eval_duration": prompt_ns,
        "eval_count": n_out,
        "eval_duration": total_ns - prompt_ns,
    }


def _done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


def _answer(resp: ChatResponse) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": resp.message.text}
    if resp.message.reasoning:
        message["thinking"] = resp.message.reasoning
    if resp.message.tool_calls:
        message["tool_calls"] = [_encode_tool_call(c) for c in resp.message.tool_calls]
    return message


def encode_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    """The whole ``/api/chat`` answer (``stream: false``)."""
    return {"model": model, "created_at": now(), "message": _answer(resp), "done": True,
            "done_reason": _done_reason(resp.finish_reason), **_stats(resp.usage, int(resp.latency * 1e9))}


def encode_generate_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    """The whole ``/api/generate`` answer: the text in ``response``."""
    out: dict[str, Any] = {"model": model, "created_at": now(), "response": resp.message.text}
    if resp.message.reasoning:
        out["thinking"] = resp.message.reasoning
    out.update(done=True, done_reason=_done_reason(resp.finish_reason), **_stats(resp.usage, int(resp.latency * 1e9)))
    return out


def encode_load_response(model: str, generate: bool, unload: bool = False) -> dict[str, Any]:
    """The answer to a request with nothing to answer, which Ollama treats as (un)loading."""
    out: dict[str, Any] = {"model": model, "created_at": now()}
    if generate:
        out["response"] = ""
    else:
        out["message"] = {"role": "assistant", "content": ""}
    out.update(done=True, done_reason="unload" if unload else "load")
    return out


class StreamEncoder(StreamEncoderBase):
    """Canonical stream events in, ``/api/chat`` NDJSON out. Tool calls go out whole (Ollama
    never splits one), so their fragments are held until the answer ends; the last line is
    ``done: true`` with the counts and the measured durations."""

    __slots__ = ("model", "_started", "_first", "_calls", "_usage", "_finish", "_closed")
    media_type = MEDIA_TYPE

    def __init__(self, model: str) -> None:
        self.model = model
        self._started = time.perf_counter_ns()
        self._first: int | None = None
        self._calls: dict[int, list[str]] = {}
        self._usage = Usage()
        self._finish: str | None = None
        self._closed = False

    def _line(self, content: str = "", thinking: str = "", calls: list[dict[str, Any]] | None = None, **tail: Any) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        return dumps({"model": self.model, "created_at": now(), "message": message, **tail}) + b"\n"

    def encode(self, event: StreamEvent) -> bytes:
        if self._closed:
            return b""
        kind = event.kind
        if kind in ("text", "reasoning") and event.text:
            if self._first is None:
                self._first = time.perf_counter_ns()
            if kind == "text":
                return self._line(content=event.text, done=False)
            return self._line(thinking=event.text, done=False)
        if kind == "tool_call":
            if self._first is None:
                self._first = time.perf_counter_ns()
            call = self._calls.setdefault(event.index, [event.name or "", ""])
            call[0] = call[0] or event.name or ""
            call[1] += event.arguments
        elif kind in ("usage", "finish"):
            self._usage = event.usage or self._usage
            self._finish = event.finish_reason or self._finish
        return b""

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        out = b""
        if self._calls:
            calls = [_encode_tool_call(ToolCall("", name, arguments or "{}")) for name, arguments in (self._calls[i] for i in sorted(self._calls))]
            out = self._line(calls=calls, done=False)
        end = time.perf_counter_ns()
        first = self._first if self._first is not None else end
        stats = _stats(self._usage, end - self._started, first - self._started)
        return out + self._line(done=True, done_reason=_done_reason(self._finish), **stats)

    def error(self, exc: BaseException) -> bytes:
        """The in-stream error line: Ollama's ``{"error": ...}`` (the status is already 200)."""
        self._closed = True
        return dumps(encode_error(exc)[1]) + b"\n"


class GenerateStreamEncoder(StreamEncoder):
    """``/api/generate`` NDJSON: the text in ``response``, thinking at the top."""

    __slots__ = ()

    def _line(self, content: str = "", thinking: str = "", calls: list[dict[str, Any]] | None = None, **tail: Any) -> bytes:
        out: dict[str, Any] = {"model": self.model, "created_at": now(), "response": content}
        if thinking:
            out["thinking"] = thinking
        return dumps({**out, **tail}) + b"\n"

    def close(self) -> bytes:
        # A generate request has no tools, so there are no calls to send.
        self._calls.clear()
        return super().close()


def encode_error(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, ``{"error": message}``, headers) for any exception the gateway meets:
    the statuses and retry headers of the OpenAI door (Ollama's own are a subset of them),
    with the message in Ollama's shape."""
    status, body, headers = openai_error(exc)
    # The hints name OpenAI's model list; an Ollama client lists models with /api/tags.
    return status, {"error": body["error"]["message"].replace("GET /v1/models", "GET /api/tags")}, headers


# ---------------------------------------------------------------------------------------
# Embeddings and models
# ---------------------------------------------------------------------------------------


def encode_embeddings_request(inputs: list[str], model_id: str, dimensions: int | None = None) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"model": model_id, "input": list(inputs)}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return "/api/embed", body


def decode_embeddings_response(body: dict[str, Any], provider: str) -> EmbeddingResponse:
    data = [Embedding(i, list(v)) for i, v in enumerate(body.get("embeddings") or ())]
    return EmbeddingResponse(model=body.get("model") or "", data=data, usage=Usage(input_tokens=body.get("prompt_eval_count") or 0), provider=provider)


def decode_embed_request(body: Any) -> tuple[str, list[str]]:
    """(model, inputs) of an ``/api/embed`` body (``input``: a string or strings)."""
    model = _model(body, None)
    raw = body.get("input")
    if isinstance(raw, str):
        return model, [raw]
    if isinstance(raw, list) and raw and all(isinstance(s, str) for s in raw):
        return model, list(raw)
    raise bad("input", "expected a string or a non-empty array of strings")


def decode_embeddings_legacy_request(body: Any) -> tuple[str, list[str]]:
    """(model, [prompt]) of a deprecated ``/api/embeddings`` body."""
    model = _model(body, None)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise bad("prompt", "expected a string")
    return model, [prompt]


def encode_embed_response(resp: EmbeddingResponse, model: str, seconds: float) -> dict[str, Any]:
    return {"model": model, "embeddings": [e.vector for e in resp.data], "total_duration": int(seconds * 1e9),
            "load_duration": 0, "prompt_eval_count": resp.usage.input_tokens}


def encode_embeddings_legacy_response(resp: EmbeddingResponse) -> dict[str, Any]:
    return {"embedding": resp.data[0].vector if resp.data else []}


def _details(info: ModelInfo) -> dict[str, Any]:
    # A routed model has no file here: the family is where it runs.
    return {"parent_model": "", "format": "", "family": info.provider, "families": [info.provider],
            "parameter_size": "", "quantization_level": ""}


def _summary(info: ModelInfo, modified_at: str) -> dict[str, Any]:
    return {"name": info.id, "model": info.id, "modified_at": modified_at, "size": 0,
            "digest": hashlib.sha256(info.id.encode()).hexdigest(), "details": _details(info)}


def encode_tags(models: list[ModelInfo], modified_at: str) -> dict[str, Any]:
    """``GET /api/tags``: every model, as Ollama lists the ones it has pulled."""
    return {"models": [_summary(m, modified_at) for m in models]}


def encode_ps(models: list[tuple[ModelInfo, str]]) -> dict[str, Any]:
    """``GET /api/ps``: the models in use, each with when it stops counting as loaded."""
    out = []
    for info, expires_at in models:
        item = _summary(info, "")
        del item["modified_at"]
        item.update(expires_at=expires_at, size_vram=0)
        if info.context_length:
            item["context_length"] = info.context_length
        out.append(item)
    return {"models": out}


def encode_show(info: ModelInfo, modified_at: str) -> dict[str, Any]:
    """``POST /api/show``: what clients read to decide what a model can do."""
    model_info: dict[str, Any] = {"general.architecture": info.provider, "general.basename": info.id}
    if info.context_length:
        model_info[f"{info.provider}.context_length"] = info.context_length
    return {"modelfile": "", "parameters": "", "template": "", "details": _details(info), "model_info": model_info,
            "capabilities": ["completion", "tools"], "modified_at": modified_at}


def encode_status(status: str = "success") -> dict[str, Any]:
    return {"status": status}
