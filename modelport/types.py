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
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Union

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "tool_calls", "content_filter", "error")


def dump_json(value: Any) -> str:
    """The one canonical JSON text for tool arguments and structured payloads."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# reasoning_effort as a thinking-token budget for providers that take a budget (Anthropic
# thinking.budget_tokens, Gemini thinkingBudget). Policy, not provider-defined (protocols §9.15).
REASONING_BUDGETS: dict[str, int] = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


def effort_for_budget(budget: int) -> str:
    """The smallest effort whose budget covers ``budget``: REASONING_BUDGETS read backwards."""
    for effort, limit in REASONING_BUDGETS.items():
        if budget <= limit:
            return effort
    return "high"


@dataclass(slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(slots=True)
class ImagePart:
    """An image given by URL or inline as base64 ``data`` with its ``media_type``."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None
    type: Literal["image"] = "image"

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
        or failing the whole call (protocols §9.7).
        """
        try:
            return self.args
        except ValueError:
            return {"_raw": self.arguments}


@dataclass(slots=True)
class Message:
    role: Role
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    # role == "tool": which call this answers, the tool's name when known, and failure flag
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False

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


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``mode`` is auto, none or required; ``name`` forces that one tool (mode "required")."""

    mode: Literal["auto", "none", "required"] = "auto"
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
