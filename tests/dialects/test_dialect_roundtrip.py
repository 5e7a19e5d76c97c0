"""Property tests: every dialect's encode -> decode is lossless for what it can express, and a
streamed answer folds into the same response as the non-streamed one.

Each dialect's limits are written down in its ``expressible_*`` function below: the expected
value is the generated one with exactly those losses applied, never the encoder's output.
"""

from __future__ import annotations

import copy
import json
import mimetypes
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport.dialects import anthropic as A
from modelport.dialects import gemini as G
from modelport.dialects import openai as O
from modelport.sse import SSEParser
from modelport.types import (
    REASONING_BUDGETS,
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    ReasoningPart,
    ResponseFormat,
    StreamAccumulator,
    StreamEvent,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
    dump_json,
)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ------------------------------------------------------------------------------------

ident = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=10)
call_ids = ident.map(lambda s: "call_" + s)
tool_names = st.text(string.ascii_letters, min_size=1, max_size=8)
texts = st.text(min_size=1, max_size=30).filter(lambda s: s.strip())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=5), inner, max_size=3),
    max_leaves=6,
)
# "result"/"error" as the only key is how Gemini wraps non-object results; keep objects clear of it.
objects = st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=6).filter(lambda k: k not in ("result", "error")), json_values, max_size=4)
signatures = st.text(string.ascii_letters + string.digits + "+/=", min_size=4, max_size=16)
images = st.one_of(
    st.builds(lambda d, t: ImagePart(data=d, media_type=t), st.text(string.ascii_letters + string.digits + "+/", min_size=4, max_size=16), st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"])),
    st.builds(lambda name, ext, detail: ImagePart(url=f"https://example.com/{name}.{ext}", detail=detail), ident, st.sampled_from(["png", "jpg", "webp"]), st.sampled_from([None, "low", "high"])),
)


@st.composite
def conversations(draw) -> list[Message]:
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append(Message.system(draw(texts)))
    used: set[str] = set()
    for _ in range(draw(st.integers(1, 3))):
        parts = [TextPart(draw(texts))] + draw(st.lists(images, max_size=2))
        messages.append(Message("user", parts))
        content = []
        if draw(st.booleans()):
            content.append(ReasoningPart(draw(texts), draw(signatures)))
        if draw(st.booleans()):
            content.append(TextPart(draw(texts)))
        calls = []
        for _ in range(draw(st.integers(0 if content else 1, 3))):
            call_id = draw(call_ids.filter(lambda i: i not in used))
            used.add(call_id)
            calls.append(ToolCall(call_id, draw(tool_names), dump_json(draw(objects)), draw(st.none() | signatures)))
        messages.append(Message("assistant", content, calls))
        for call in calls:
            result = draw(st.one_of(texts.filter(lambda s: not _is_object(s)), objects.map(dump_json)))
            tool_parts = [TextPart(result)] + draw(st.lists(images.filter(lambda i: i.data is not None), max_size=1))
            messages.append(Message("tool", tool_parts, tool_call_id=call.id, name=draw(st.sampled_from([None, call.name])), is_error=draw(st.booleans())))
    messages.append(Message.user(draw(texts)))
    return messages


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


@st.composite
def requests(draw) -> ChatRequest:
    tools = [Tool(name, draw(st.sampled_from(["", "Does a thing."])), {"type": "object", "properties": {"x": {"type": "string"}}}, draw(st.sampled_from([None, True]))) for name in draw(st.lists(tool_names, max_size=3, unique=True))]
    choice = draw(st.none() | st.sampled_from([ToolChoice("auto"), ToolChoice("none"), ToolChoice("required")]) | tool_names.map(lambda n: ToolChoice("required", n)))
    fmt = draw(st.none() | st.sampled_from([ResponseFormat("text"), ResponseFormat("json_object")]) | objects.map(lambda s: ResponseFormat("json_schema", {"type": "object", "properties": s}, name="answer", strict=True)))
    optional = lambda strategy: draw(st.none() | strategy)  # noqa: E731
    return ChatRequest(
        model="m",
        messages=draw(conversations()),
        temperature=optional(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0])),
        top_p=optional(st.sampled_from([0.1, 0.9])),
        top_k=optional(st.integers(1, 100)),
        # Large enough that every thinking budget fits; the clamp has its own unit test.
        max_tokens=optional(st.integers(30000, 64000)),
        stop=optional(st.lists(texts, min_size=1, max_size=3)),
        seed=optional(st.integers(0, 2**31)),
        presence_penalty=optional(st.sampled_from([0.0, 0.5])),
        frequency_penalty=optional(st.sampled_from([0.0, 0.5])),
        response_format=fmt,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=optional(st.booleans()),
        reasoning_effort=optional(st.sampled_from(["none", *REASONING_BUDGETS])),
        metadata=optional(st.just({"user_id": "u-1"})),
    )


@st.composite
def responses(draw) -> ChatResponse:
    content = []
    if draw(st.booleans()):
        content.append(ReasoningPart(draw(texts), draw(signatures)))
    if draw(st.booleans()):
        content.append(TextPart(draw(texts)))
    calls = [ToolCall(f"call_{i}{draw(ident)}", draw(tool_names), dump_json(draw(objects)), draw(st.none() | signatures)) for i in range(draw(st.integers(0, 3)))]
    cached, write, fresh = draw(st.integers(0, 500)), draw(st.integers(0, 500)), draw(st.integers(0, 5000))
    reasoning, answer = draw(st.integers(0, 500)), draw(st.integers(0, 500))
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length", "content_filter", "error"]))
    return ChatResponse(
        # OpenAI keeps only its own chatcmpl- ids; both kinds are drawn.
        id=draw(st.sampled_from(["resp_", "chatcmpl-"])) + draw(ident),
        model="the-model",
        message=Message("assistant", content, calls),
        finish_reason=finish,
        usage=Usage(fresh + cached + write, answer + reasoning, cached, write, reasoning),
        provider="p",
    )


# -- what each dialect can express ------------------------------------------------------------------


def _hoist_system(request: ChatRequest, extra_system: list[TextPart] = ()) -> None:
    """Both dialects keep system text in one top-level slot: all of it, first, in order."""
    system = [p for m in request.messages if m.role == "system" for p in m.content] + list(extra_system)
    rest = [m for m in request.messages if m.role != "system"]
    request.messages = ([Message("system", system)] if system else []) + rest


def _common(request: ChatRequest) -> ChatRequest:
    """Losses shared by Anthropic and Gemini: tool-result names are recovered from the call
    (so they are always set), image detail does not exist, response_format has no name or
    strict flag, and "text" format is the default."""
    request = copy.deepcopy(request)
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    for message in request.messages:
        if message.role == "tool":
            message.name = names[message.tool_call_id]
        for part in message.content:
            if isinstance(part, ImagePart):
                part.detail = None
    fmt = request.response_format
    if fmt is not None:
        request.response_format = None if fmt.type == "text" else ResponseFormat(fmt.type, fmt.schema)
    return request


def expressible_anthropic(request: ChatRequest) -> ChatRequest:
    """Anthropic: no seed or penalties; metadata is user_id only; temperature is clamped to
    1.0; max_tokens always gets a value; json_object becomes a system instruction; parallel
    tool calls can only be switched off (and need a tool_choice to carry the flag); image URLs
    carry no media type; Gemini's tool-call signatures have no place."""
    request = _common(request)
    request.seed = request.presence_penalty = request.frequency_penalty = None
    if request.temperature is not None:
        request.temperature = min(request.temperature, 1.0)
    if request.max_tokens is None:
        request.max_tokens = A.DEFAULT_MAX_TOKENS + REASONING_BUDGETS.get(request.reasoning_effort or "", 0)
    extra_system = []
    if request.response_format is not None and request.response_format.type == "json_object":
        request.response_format = None
        extra_system.append(TextPart(A.JSON_OBJECT_INSTRUCTION))
    _hoist_system(request, extra_system)
    if request.parallel_tool_calls is False and request.tool_choice is None:
        request.tool_choice = ToolChoice("auto")
    if request.parallel_tool_calls is True or (request.tool_choice and request.tool_choice.mode == "none"):
        request.parallel_tool_calls = None
    for message in request.messages:
        for call in message.tool_calls:
            call.signature = None
        for part in message.content:
            if isinstance(part, ImagePart) and part.url is not None:
                part.media_type = None
    return request


def expressible_gemini(request: ChatRequest) -> ChatRequest:
    """Gemini: no parallel_tool_calls or metadata; tool strict does not exist; a JSON-object
    tool result travels as an object (so its text is re-serialised canonically); URL images
    are fileData with a media type guessed from the extension."""
    request = _common(request)
    request.parallel_tool_calls = None
    request.metadata = None
    _hoist_system(request)
    for tool in request.tools:
        tool.strict = None
    for message in request.messages:
        if message.role == "tool" and not message.is_error and _is_object(message.text):
            message.content[0] = TextPart(dump_json(json.loads(message.text)))
        for part in message.content:
            if isinstance(part, ImagePart) and part.url is not None:
                part.media_type = mimetypes.guess_type(part.url)[0]
    return request


def expressible_openai(request: ChatRequest) -> ChatRequest:
    """OpenAI chat completions: messages stay in place (system ones too), but reasoning in
    the history has no slot, nor do tool-call signatures or ``is_error`` on tool results;
    tool messages carry no name (it is recovered from the call) and take text only, so a
    tool's images follow the run of tool messages in one user message; image URLs carry no
    media type. Everything else, top_k included (vLLM, LM Studio and Ollama read it), is sent
    as is. A format without a name gets "response", which OpenAI requires."""
    request = copy.deepcopy(request)
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    messages: list[Message] = []
    images: list[ImagePart] = []
    for message in request.messages:
        if message.role == "tool":
            images.extend(p for p in message.content if isinstance(p, ImagePart))
            message.content = [p for p in message.content if not isinstance(p, ImagePart)]
            message.name = names[message.tool_call_id]
            message.is_error = False
        elif images:
            messages.append(Message("user", images))
            images = []
        message.content = [p for p in message.content if not isinstance(p, ReasoningPart)]
        for call in message.tool_calls:
            call.signature = None
        for part in message.content:
            if isinstance(part, ImagePart) and part.url is not None:
                part.media_type = None
        messages.append(message)
    if images:
        messages.append(Message("user", images))
    request.messages = messages
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.name is None:
        fmt.name = "response"
    return request


class Fresh:
    """A value the encoder makes up, equal to anything ``check`` accepts: an id it must not
    leak from another dialect, or a timestamp the canonical response did not have."""

    def __init__(self, what: str, check) -> None:
        self.what, self.check = what, check

    def __eq__(self, other: object) -> bool:
        return self.check(other)

    def __repr__(self) -> str:
        return f"<fresh {self.what}>"


def response_openai(response: ChatResponse) -> ChatResponse:
    """OpenAI: reasoning text travels (as reasoning_content) without its signature; tool-call
    signatures travel in extra_content; "error" goes out as stop; an id that is not OpenAI's
    own (chatcmpl-) is replaced by a fresh one, and a missing creation time by the current one."""
    response = copy.deepcopy(response)
    if response.finish_reason == "error":
        response.finish_reason = "stop"
    for part in response.message.content:
        if isinstance(part, ReasoningPart):
            part.signature = None
    if not response.id.startswith("chatcmpl-"):
        response.id = Fresh("chatcmpl- id", lambda v: isinstance(v, str) and v.startswith("chatcmpl-") and len(v) > len("chatcmpl-"))
    if not response.created:
        response.created = Fresh("creation time", lambda v: isinstance(v, int) and v > 0)
    return response


def response_anthropic(response: ChatResponse) -> ChatResponse:
    """Anthropic: no "error" finish (sent as end_turn); no tool-call signatures; an id that
    is not Anthropic's own (msg_) is replaced by a fresh one."""
    response = copy.deepcopy(response)
    if response.finish_reason == "error":
        response.finish_reason = "stop"
    for call in response.message.tool_calls:
        call.signature = None
    if not response.id.startswith("msg_"):
        response.id = Fresh("msg_ id", lambda v: isinstance(v, str) and v.startswith("msg_") and len(v) > len("msg_"))
    return response


def response_gemini(response: ChatResponse) -> ChatResponse:
    """Gemini: no cache-write count; "error" is sent as OTHER, which reads back as stop."""
    response = copy.deepcopy(response)
    response.usage.cache_write_tokens = 0
    if response.finish_reason == "error":
        response.finish_reason = "stop"
    return response


DIALECTS = {
    "anthropic": (A, expressible_anthropic, response_anthropic),
    "gemini": (G, expressible_gemini, response_gemini),
    "openai": (O, expressible_openai, response_openai),
}

# -- properties --------------------------------------------------------------------------------------


def _decode_request(dialect, body):
    # Anthropic and OpenAI carry the model in the body; Gemini's comes from the URL path.
    return dialect.decode_request(body, "m")


@SETTINGS
@given(requests())
def test_anthropic_request_round_trip(request):
    assert _decode_request(A, A.encode_request(request, "m")) == expressible_anthropic(request)


@SETTINGS
@given(requests())
def test_gemini_request_round_trip(request):
    assert _decode_request(G, G.encode_request(request, "m")) == expressible_gemini(request)


@SETTINGS
@given(requests())
def test_openai_request_round_trip(request):
    assert _decode_request(O, O.encode_request(request, "m")) == expressible_openai(request)


@SETTINGS
@given(requests())
def test_requests_survive_a_second_trip_unchanged(request):
    """After the first trip only expressible content is left, so a second trip is exact."""
    for dialect, _, _ in DIALECTS.values():
        once = _decode_request(dialect, dialect.encode_request(request, "m"))
        assert _decode_request(dialect, dialect.encode_request(once, "m")) == once


@SETTINGS
@given(responses())
def test_response_round_trip(response):
    for name, (dialect, _, expressible) in DIALECTS.items():
        assert dialect.decode_response(dialect.encode_response(response, "the-model"), "p") == expressible(response), name


def response_events(response: ChatResponse) -> list[StreamEvent]:
    """The events a backend would stream for this response: text in pieces, signatures
    after their reasoning, tool arguments in two fragments, usage after the finish."""
    events = [StreamEvent("start", id=response.id, model="upstream-name")]
    for part in response.message.content:
        if isinstance(part, ReasoningPart):
            events.append(StreamEvent("reasoning", text=part.text))
            events.append(StreamEvent("reasoning", signature=part.signature))
        elif isinstance(part, TextPart):
            events.extend(StreamEvent("text", text=part.text[i : i + 3]) for i in range(0, len(part.text), 3))
    for index, call in enumerate(response.message.tool_calls):
        half = len(call.arguments) // 2
        events.append(StreamEvent("tool_call", index=index, id=call.id, name=call.name, arguments=call.arguments[:half], signature=call.signature))
        events.append(StreamEvent("tool_call", index=index, arguments=call.arguments[half:]))
    events.append(StreamEvent("finish", finish_reason=response.finish_reason))
    events.append(StreamEvent("usage", usage=response.usage))
    return events


@SETTINGS
@given(responses())
def test_streamed_equals_non_streamed(response):
    """The wire stream folds into what decode_response makes of the same answer. The
    accumulator has no provider or raw body, which the comparison leaves out."""
    for name, (dialect, _, _) in DIALECTS.items():
        encoder = dialect.StreamEncoder("the-model", True)
        raw = b"".join(encoder.encode(e) for e in response_events(response)) + encoder.close()
        parser, decoder, acc = SSEParser(), dialect.StreamDecoder(), StreamAccumulator()
        for event, data in parser.feed(raw) + parser.close():
            for item in decoder.feed(event, data):
                acc.add(item)
        streamed = acc.response()
        whole = dialect.decode_response(dialect.encode_response(response, "the-model"), "")
        own_prefix = {"openai": "chatcmpl-", "anthropic": "msg_"}.get(name)
        if own_prefix and not response.id.startswith(own_prefix):
            # Each encoder makes up its own id for a foreign one (never leaked).
            assert streamed.id.startswith(own_prefix) and whole.id.startswith(own_prefix)
            streamed.id = whole.id
        if name == "openai":
            # Stream events carry no creation time, so the accumulator's stays 0.
            assert whole.created > 0
            streamed.created = whole.created
        assert streamed == whole, name
