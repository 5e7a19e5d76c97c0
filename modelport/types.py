"""Canonical types: the one shape every dialect translates to and from.

Plain dataclasses with slots: they import in microseconds and construct fast, which keeps
`import modelport` light and per-call overhead low. Conventions:

* ``Usage.input_tokens`` includes cached tokens and ``output_tokens`` includes reasoning
  tokens (OpenAI's convention; dialects convert).
* ``ToolCall.arguments`` is the JSON text exactly as the model produced it (it can be
  invalid JSON); ``ToolCall.args`` parses it.
* ``finish_reason`` uses one vocabulary: stop, length, tool_calls, content_filter, error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Union

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
FINISH_REASONS: tuple[FinishReason, ...] = ("stop", "length", "tool_calls", "content_filter", "error")
ToolChoiceMode = Literal["auto", "none", "required"]
TOOL_CHOICE_MODES: tuple[ToolChoiceMode, ...] = ("auto", "none", "required")


def dump_json(value: Any) -> str:
    """The one canonical JSON text for tool arguments and structured payloads."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# reasoning_effort as a thinking-token budget for providers that take a budget (Anthropic
# thinking.budget_tokens, Gemini thinkingBudget). modelport's policy: no provider defines one.
REASONING_BUDGETS: dict[str, int] = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


def effort_for_budget(budget: int) -> str:
    """The smallest effort whose budget covers ``budget``: REASONING_BUDGETS read backwards."""
    for effort, limit in REASONING_BUDGETS.items():
        if budget <= limit:
            return effort
    return "high"


# A prompt-cache breakpoint: the provider may cache the prompt up to and including the item
# that carries it. False: no breakpoint; True: one with the provider's default lifetime;
# "5m" or "1h": one with that lifetime (Anthropic's ``ttl``).
CacheMark = Union[bool, str]
CACHE_TTLS: tuple[str, ...] = ("5m", "1h")


@dataclass(slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"
    cache: CacheMark = False


@dataclass(slots=True)
class ImagePart:
    """An image given by URL or inline as base64 ``data`` with its ``media_type``."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None
    type: Literal["image"] = "image"
    cache: CacheMark = False

    @property
    def data_url(self) -> str:
        if self.url is not None:
            return self.url
        return f"data:{self.media_type or 'image/png'};base64,{self.data}"

    @classmethod
    def from_url(cls, url: str, detail: str | None = None) -> ImagePart:
        """Split ``data:`` URLs into media type and base64 so every dialect can inline them."""
        if url.startswith("data:") and ";base64," in url:
            head, data = url[5:].split(";base64,", 1)
            return cls(data=data, media_type=head or "image/png", detail=detail)
        return cls(url=url, detail=detail)


@dataclass(slots=True)
class ReasoningPart:
    """Model reasoning ("thinking") text; ``signature`` lets providers verify it on replay."""

    text: str
    signature: str | None = None
    type: Literal["reasoning"] = "reasoning"
    # The Responses API's reasoning item: its id (rs_...) and its opaque state
    # (``encrypted_content``), which only a Responses server can read and must get back as is.
    id: str | None = None
    encrypted_content: str | None = None


Part = Union[TextPart, ImagePart, ReasoningPart]


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str = "{}"
    # Gemini's thoughtSignature: opaque, must travel back with the call on the next turn.
    signature: str | None = None
    # The Responses API's item id (fc_...); ``id`` is its call_id, the one results answer.
    item_id: str | None = None
    cache: CacheMark = False

    @property
    def args(self) -> dict[str, Any]:
        """The arguments parsed; raises ValueError naming the tool when the JSON is invalid."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"tool call {self.name!r} has invalid JSON arguments: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"tool call {self.name!r} arguments are not a JSON object")
        return value

    def args_object(self) -> dict[str, Any]:
        """The arguments for wire formats that need an object (Anthropic, Gemini).

        Invalid JSON or a non-object is carried as ``{"_raw": text}`` instead of being lost
        or failing the whole call.
        """
        try:
            value = self.args
        except (ValueError, RecursionError):
            return {"_raw": self.arguments}
        # Nesting no real call has would break the JSON encoders on the way out (orjson
        # stops at 255 levels); it travels as text instead.
        return value if json_depth(value) <= MAX_JSON_DEPTH else {"_raw": self.arguments}


@dataclass(slots=True)
class Message:
    role: Role
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    # role == "tool": which call this answers, the tool's name when known, and failure flag
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False
    # role == "tool": a breakpoint on the result as a whole (Anthropic marks the tool_result
    # block itself, not the text inside it).
    cache: CacheMark = False

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def reasoning(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, ReasoningPart))

    @classmethod
    def system(cls, text: str) -> Message:
        return cls("system", [TextPart(text)])

    @classmethod
    def user(cls, *parts: str | Part) -> Message:
        return cls("user", [TextPart(p) if isinstance(p, str) else p for p in parts])

    @classmethod
    def assistant(cls, text: str = "", tool_calls: list[ToolCall] | None = None) -> Message:
        return cls("assistant", [TextPart(text)] if text else [], list(tool_calls or []))

    @classmethod
    def tool(cls, tool_call_id: str, content: str, name: str | None = None, is_error: bool = False) -> Message:
        return cls("tool", [TextPart(content)], tool_call_id=tool_call_id, name=name, is_error=is_error)


@dataclass(slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None
    cache: CacheMark = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``mode`` is auto, none or required; ``name`` forces that one tool (mode "required")."""

    mode: ToolChoiceMode = "auto"
    name: str | None = None


@dataclass(slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "json_schema"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # One vocabulary for every provider: none, minimal, low, medium, high (mapped per dialect)
    reasoning_effort: str | None = None
    metadata: dict[str, str] | None = None
    stream: bool = False
    # Passed through verbatim to the provider's JSON body; the caller's explicit escape hatch.
    extra: dict[str, Any] = field(default_factory=dict)
    # Prompt caching. ``cache``: a breakpoint on the request as a whole (the provider places
    # it on the last cacheable item, Anthropic's top-level cache_control). ``cache_key`` and
    # ``cache_retention``: the routing key and lifetime of providers that cache by prefix on
    # their own (OpenAI's prompt_cache_key, prompt_cache_retention). ``auto_cache``: place
    # breakpoints where caching certainly pays when the request has none (None: the
    # provider's setting decides).
    cache: CacheMark = False
    cache_key: str | None = None
    cache_retention: str | None = None
    auto_cache: bool | None = None
    # Request headers of the caller's wire format that only an upstream speaking the same
    # dialect understands (anthropic-beta), by dialect name: {"anthropic": {...}}.
    dialect_headers: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    message: Message
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    provider: str = ""
    created: int = 0
    latency: float = 0.0
    raw: Any = field(default=None, compare=False, repr=False)
    # Set by the client when a response_format schema was requested and the answer validated.
    parsed: Any = field(default=None, compare=False)
    # The provider's rate-limit response headers (x-ratelimit-*, anthropic-ratelimit-*), lower-cased,
    # so a caller pacing many calls (the batch engine) can follow the provider's own counters.
    rate_limits: dict[str, str] | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        return self.message.text

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.message.tool_calls

    def __str__(self) -> str:
        return self.text


StreamKind = Literal["start", "text", "reasoning", "tool_call", "usage", "finish"]


@dataclass(slots=True)
class StreamEvent:
    """One step of a streamed answer.

    start: ``id``/``model``; text: ``text``; reasoning: ``text`` and maybe ``signature``;
    tool_call: ``index`` plus ``id``/``name`` on a call's first fragment and an
    ``arguments`` fragment to append; usage: ``usage``; finish: ``finish_reason``.
    ``item_id`` and ``encrypted_content`` carry a Responses reasoning item's or function
    call's item id and opaque state (see ReasoningPart and ToolCall).
    """

    kind: StreamKind
    text: str = ""
    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    signature: str | None = None
    model: str | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    item_id: str | None = None
    encrypted_content: str | None = None


class StreamAccumulator:
    """Folds stream events into the ChatResponse the non-streamed call would have returned."""

    __slots__ = ("id", "model", "provider", "created", "_text", "_reasoning", "_signature", "_reasoning_id", "_encrypted",
                 "_calls", "finish_reason", "usage")

    def __init__(self, model: str = "", provider: str = "") -> None:
        self.id = ""
        self.model = model
        self.provider = provider
        self.created = 0
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._signature: str | None = None
        self._reasoning_id: str | None = None
        self._encrypted: str | None = None
        self._calls: dict[int, ToolCall] = {}
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None

    def add(self, event: StreamEvent) -> None:
        kind = event.kind
        if kind == "text":
            self._text.append(event.text)
        elif kind == "tool_call":
            call = self._calls.get(event.index)
            if call is None:
                call = self._calls[event.index] = ToolCall(event.id or "", event.name or "", "")
            else:
                call.id = call.id or event.id or ""
                call.name = call.name or event.name or ""
            call.arguments += event.arguments
            if event.signature:
                call.signature = event.signature
            if event.item_id:
                call.item_id = event.item_id
        elif kind == "reasoning":
            self._reasoning.append(event.text)
            if event.signature:
                self._signature = event.signature
            if event.item_id:
                self._reasoning_id = event.item_id
            if event.encrypted_content:
                self._encrypted = event.encrypted_content
        elif kind == "start":
            self.id = event.id or self.id
            self.model = event.model or self.model
        elif kind == "usage":
            self.usage = event.usage
        elif kind == "finish":
            self.finish_reason = event.finish_reason
            if event.usage is not None:
                self.usage = event.usage

    def response(self, latency: float = 0.0) -> ChatResponse:
        content: list[Part] = []
        if self._reasoning:
            content.append(ReasoningPart("".join(self._reasoning), self._signature, id=self._reasoning_id,
                                         encrypted_content=self._encrypted))
        if self._text:
            content.append(TextPart("".join(self._text)))
        calls = [self._calls[i] for i in sorted(self._calls)]
        for call in calls:
            call.arguments = call.arguments or "{}"
        finish = self.finish_reason or ("tool_calls" if calls else "stop")
        return ChatResponse(
            id=self.id,
            model=self.model,
            message=Message("assistant", content, calls),
            finish_reason=finish,
            usage=self.usage or Usage(),
            provider=self.provider,
            created=self.created,
            latency=latency,
        )


def accumulate(events: Iterable[StreamEvent], model: str = "", provider: str = "") -> ChatResponse:
    """The ChatResponse a whole stream of events folds into."""
    acc = StreamAccumulator(model, provider)
    for event in events:
        acc.add(event)
    return acc.response()


@dataclass(slots=True)
class Embedding:
    index: int
    vector: list[float]


@dataclass(slots=True)
class EmbeddingResponse:
    model: str
    data: list[Embedding]
    usage: Usage = field(default_factory=Usage)
    provider: str = ""


@dataclass(slots=True)
class ModelInfo:
    id: str
    provider: str
    owned_by: str = ""
    context_length: int | None = None


# -- validation: the one check of a canonical request (SDK, CLI and every gateway door) -------------

# Deeper JSON (schemas, tool arguments) is no real tool's: the bound keeps recursive walks
# (token estimates, schema translation, JSON encoders) far from their recursion limits.
MAX_JSON_DEPTH = 64
# SQLite's INTEGER (the call log, key usage) holds signed 64-bit values.
_MAX_COUNT = 2**63 - 1
_ROLES = ("system", "user", "assistant", "tool")
# field: (low, high, integer); None is an open end. Ranges are the widest any provider takes.
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "temperature": (0, 2, False),
    "top_p": (0, 1, False),
    "top_k": (1, None, True),
    "max_tokens": (1, None, True),
    "seed": (None, None, True),
    "presence_penalty": (-2, 2, False),
    "frequency_penalty": (-2, 2, False),
}


class InvalidShape(ValueError):
    """A canonical value of the wrong type or range; ``field`` names where."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply ``value`` nests (a scalar is 0), counted without recursion and only up to
    ``limit + 1``, so a hostile value costs no more than a legal one."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _need(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise InvalidShape(field, problem)


def _is_str(value: Any, optional: bool = False) -> bool:
    return isinstance(value, str) or (optional and value is None)


_CACHE_PROBLEM = f"expected true, false or a lifetime ({', '.join(CACHE_TTLS)})"


def _is_cache_mark(value: Any) -> bool:
    return isinstance(value, bool) or value in CACHE_TTLS


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT


def check_message(message: Any, where: str) -> None:
    """Every field of a Message has its declared type (raises InvalidShape naming it)."""
    # The common case (text parts, no calls) in one pass; anything else takes the full check.
    if (type(message) is Message and message.role in _ROLES and not message.tool_calls and type(message.content) is list
            and message.cache is False and all(type(p) is TextPart and type(p.text) is str and p.cache is False for p in message.content)
            and (message.tool_call_id is None or type(message.tool_call_id) is str) and (message.name is None or type(message.name) is str)):
        return
    _need(isinstance(message, Message), where, "expected a Message")
    _need(message.role in _ROLES, f"{where}.role", f"expected one of {', '.join(_ROLES)}")
    _need(isinstance(message.content, list), f"{where}.content", "expected a list of parts")
    for i, part in enumerate(message.content):
        here = f"{where}.content[{i}]"
        _need(_is_cache_mark(getattr(part, "cache", False)), f"{here}.cache", _CACHE_PROBLEM)
        if isinstance(part, (TextPart, ReasoningPart)):
            _need(_is_str(part.text), f"{here}.text", "expected a string")
            _need(_is_str(getattr(part, "signature", None), True), f"{here}.signature", "expected a string")
        elif isinstance(part, ImagePart):
            for name in ("url", "data", "media_type", "detail"):
                _need(_is_str(getattr(part, name), True), f"{here}.{name}", "expected a string")
            _need(part.url is not None or part.data is not None, here, "an image needs a url or data")
        else:
            _need(False, here, "expected a text, image or reasoning part")
    _need(isinstance(message.tool_calls, list), f"{where}.tool_calls", "expected a list")
    for i, call in enumerate(message.tool_calls):
        here = f"{where}.tool_calls[{i}]"
        _need(isinstance(call, ToolCall), here, "expected a ToolCall")
        for name in ("id", "name", "arguments"):
            _need(_is_str(getattr(call, name)), f"{here}.{name}", "expected a string")
        _need(_is_str(call.signature, True), f"{here}.signature", "expected a string")
        _need(_is_cache_mark(call.cache), f"{here}.cache", _CACHE_PROBLEM)
    _need(_is_cache_mark(message.cache), f"{where}.cache", _CACHE_PROBLEM)
    for name in ("tool_call_id", "name"):
        _need(_is_str(getattr(message, name), True), f"{where}.{name}", "expected a string")


def check_usage(usage: Any, where: str = "usage") -> None:
    if (type(usage) is Usage and type(usage.input_tokens) is int and type(usage.output_tokens) is int and type(usage.cached_tokens) is int
            and type(usage.cache_write_tokens) is int and type(usage.reasoning_tokens) is int
            and 0 <= min(usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.reasoning_tokens)
            and max(usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.reasoning_tokens) <= _MAX_COUNT):
        return
    _need(isinstance(usage, Usage), where, "expected a Usage")
    for name in ("input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens"):
        _need(_is_count(getattr(usage, name)), f"{where}.{name}", f"expected a whole number from 0 to {_MAX_COUNT}")


def _check_range(name: str, value: Any) -> None:
    if value is None:
        return
    low, high, integer = _RANGES[name]
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    _need(ok and not isinstance(value, bool), name, f"expected {kind}")
    if low is not None and high is not None:
        _need(low <= value <= high, name, f"{value} is out of range: expected {kind} from {low:g} to {high:g}")
    elif low is not None:
        _need(value >= low, name, f"{value} is out of range: expected {kind} of at least {low:g}")


def _check_schema(schema: Any, field: str) -> None:
    _need(isinstance(schema, dict), field, "expected a JSON Schema object")
    depth = json_depth(schema)
    _need(depth <= MAX_JSON_DEPTH, field, f"nested more than {MAX_JSON_DEPTH} levels deep; flatten the schema")


def validate_request(request: ChatRequest) -> None:
    """The canonical checks every entry point shares (SDK, CLI, batch and every gateway
    door): types of every field and the ranges of the sampling parameters. Raises
    BadRequestError naming the field and the range."""
    try:
        _check_request(request)
    except InvalidShape as exc:
        from .errors import BadRequestError

        raise BadRequestError(str(exc), param=exc.field) from None


def _check_request(request: ChatRequest) -> None:
    _need(isinstance(request.model, str), "model", "expected a string")
    _need(isinstance(request.messages, list) and bool(request.messages), "messages", "expected a non-empty list")
    for i, message in enumerate(request.messages):
        check_message(message, f"messages[{i}]")
    for name in _RANGES:
        _check_range(name, getattr(request, name))
    if request.stop is not None:
        _need(isinstance(request.stop, list) and all(isinstance(s, str) for s in request.stop), "stop", "expected a list of strings")
    _need(isinstance(request.stream, bool), "stream", "expected a boolean")
    _need(request.parallel_tool_calls is None or isinstance(request.parallel_tool_calls, bool), "parallel_tool_calls", "expected a boolean")
    _need(_is_str(request.reasoning_effort, True), "reasoning_effort", "expected a string")
    if request.metadata is not None:
        _need(isinstance(request.metadata, dict) and all(isinstance(v, str) for v in request.metadata.values()),
              "metadata", "expected an object of strings")
    _need(isinstance(request.tools, list), "tools", "expected a list")
    for i, tool in enumerate(request.tools):
        _need(isinstance(tool, Tool) and _is_str(tool.name) and _is_str(tool.description), f"tools[{i}]", "expected a tool with a name and a description")
        _check_schema(tool.parameters, f"tools[{i}].parameters")
        _need(_is_cache_mark(tool.cache), f"tools[{i}].cache", _CACHE_PROBLEM)
    _need(_is_cache_mark(request.cache), "cache", _CACHE_PROBLEM)
    for name in ("cache_key", "cache_retention"):
        _need(_is_str(getattr(request, name), True), name, "expected a string")
    _need(request.auto_cache is None or isinstance(request.auto_cache, bool), "auto_cache", "expected a boolean")
    _need(isinstance(request.dialect_headers, dict) and all(
        isinstance(h, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in h.items())
        for h in request.dialect_headers.values()), "dialect_headers", "expected an object of header objects")
    fmt = request.response_format
    if fmt is not None and fmt.schema is not None:
        _check_schema(fmt.schema, "response_format.schema")


def check_response(response: ChatResponse) -> ChatResponse:
    """A decoded answer holds only the declared types (raises InvalidShape naming the field)."""
    _need(_is_str(response.id) and _is_str(response.model), "id", "expected strings for id and model")
    check_message(response.message, "message")
    _need(response.finish_reason in FINISH_REASONS, "finish_reason", "unknown finish reason")
    check_usage(response.usage)
    return response


def check_event(event: StreamEvent) -> StreamEvent:
    """A decoded stream event holds only the declared types."""
    # The common case in one expression: this runs for every event of every stream.
    if (type(event.text) is str and type(event.arguments) is str and type(event.index) is int and event.usage is None
            and (event.id is None or type(event.id) is str) and (event.name is None or type(event.name) is str)
            and (event.signature is None or type(event.signature) is str) and (event.model is None or type(event.model) is str)):
        return event
    _need(isinstance(event, StreamEvent), "event", "expected a StreamEvent")
    for name in ("text", "arguments"):
        _need(_is_str(getattr(event, name)), name, "expected a string")
    for name in ("id", "name", "signature", "model"):
        _need(_is_str(getattr(event, name), True), name, "expected a string")
    _need(isinstance(event.index, int) and not isinstance(event.index, bool), "index", "expected an integer")
    if event.usage is not None:
        check_usage(event.usage)
    return event


def check_embeddings(response: EmbeddingResponse) -> EmbeddingResponse:
    for i, item in enumerate(response.data):
        _need(isinstance(item.index, int) and not isinstance(item.index, bool), f"data[{i}].index", "expected an integer")
        _need(isinstance(item.vector, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in item.vector),
              f"data[{i}].embedding", "expected a list of numbers")
    check_usage(response.usage)
    return response
