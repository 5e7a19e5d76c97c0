"""The same canonical request means the same thing on every provider, streamed or not.

One ``ChatRequest`` (system prompt, user turn, a tool, a tool choice, structured output,
temperature, max tokens, stop sequences, seed) is built once with ``Client.request`` and sent
with ``Client.send`` and ``Client.send_stream`` to five loopback upstreams: OpenAI, Groq and
LM Studio (all three the OpenAI fake, each reached through its own provider row), Anthropic
and Gemini. The fakes derive their answers from what they understood (a forced tool is
called with ``{"echo": <last user text>}``; otherwise they answer ``"echo: <text>"``), and
count tokens as words, so every provider that understood the request answers the same.

What is checked:

* each wire body spells every setting the way its provider does (``SPELLINGS``);
* the decoded answers (text, tool calls with parsed arguments, finish reason, usage) are
  equal across providers, and equal between ``send`` and ``send_stream`` for each;
* each provider's 429 retry hint (``retry-after`` for OpenAI-style and Anthropic,
  ``RetryInfo.retryDelay`` in the body for Gemini) is read and the call retried;
* each provider's error bodies map to the right modelport error class.

``send`` rather than ``chat``: a tool-call answer has no text to validate against the
response_format, and this file is about the wire, not about structured-output parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest

from modelport import Client
from modelport.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    ModelportError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
)
from modelport.types import ChatRequest, ChatResponse
from tests.fakes import anthropic_upstream, gemini_upstream
from tests.fakes.anthropic_upstream import AnthropicUpstream, anthropic_error
from tests.fakes.gemini_upstream import GeminiUpstream, gemini_error
from tests.fakes.openai_upstream import OpenAIUpstream, openai_error
from tests.fakes.server import FakeServer, Recorded

KEY = "sk-cross-0123456789abcdef"
SYSTEM = "You answer in one short sentence."
QUESTION = "Where is order A-118 right now?"
TOOL = {
    "name": "lookup_order",
    "description": "Look up an order by its number.",
    "parameters": {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]},
}
SCHEMA = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
TEMPERATURE, MAX_TOKENS, STOP, SEED = 0.25, 200, ["\n\n", "END"], 1234


@dataclass(frozen=True)
class Upstream:
    """One provider row and the fake that plays it."""

    provider: str
    model: str
    fake: Callable[[], FakeServer]
    base_url: Callable[[Any], str]
    key: str | None = KEY

    @property
    def dialect(self) -> str:
        return {"anthropic": "anthropic", "gemini": "gemini"}.get(self.provider, "openai")

    def chat_path(self, stream: bool) -> str:
        if self.dialect == "anthropic":
            return "/v1/messages"
        if self.dialect == "gemini":
            return f"/v1beta/models/{self.model}:{'streamGenerateContent' if stream else 'generateContent'}"
        return "/v1/chat/completions"


UPSTREAMS = {
    u.provider: u
    for u in (
        Upstream("openai", "gpt-fake", OpenAIUpstream, lambda f: f.base_url),
        Upstream("groq", "openai/gpt-oss-120b", OpenAIUpstream, lambda f: f.base_url),
        Upstream("lmstudio", "qwen3-4b-instruct", OpenAIUpstream, lambda f: f.base_url, key=None),  # no key needed
        Upstream("anthropic", "claude-fake", AnthropicUpstream, lambda f: f.url),
        Upstream("gemini", "gemini-fake", GeminiUpstream, lambda f: f.base_url_for("v1beta")),
    )
}
PROVIDERS = list(UPSTREAMS)


@pytest.fixture(params=PROVIDERS)
def upstream(request):
    spec = UPSTREAMS[request.param]
    with spec.fake() as fake:
        yield spec, fake


def client_for(spec: Upstream, fake: FakeServer, **options: Any) -> Client:
    keys = {spec.provider: spec.key} if spec.key else None
    return Client(api_keys=keys, base_urls={spec.provider: spec.base_url(fake)}, **options)


def canonical_request(client: Client, spec: Upstream, tool_choice: str) -> ChatRequest:
    return client.request(
        f"{spec.provider}/{spec.model}", QUESTION, system=SYSTEM, tools=[TOOL], tool_choice=tool_choice,
        response_format={"type": "json_schema", "json_schema": {"name": "order_status", "schema": SCHEMA}},
        temperature=TEMPERATURE, max_tokens=MAX_TOKENS, stop=STOP, seed=SEED,
    )


# -- every setting, in each provider's spelling ----------------------------------------------------------

ABSENT = object()  # the provider has no way to say it; it must not be sent at all

# setting -> dialect -> (path into the wire body, expected value there)
SPELLINGS: dict[str, dict[str, tuple[tuple[Any, ...], Any]]] = {
    "system": {
        "openai": (("messages", 0), {"role": "system", "content": SYSTEM}),
        "anthropic": (("system",), SYSTEM),
        "gemini": (("systemInstruction",), {"parts": [{"text": SYSTEM}]}),
    },
    "user turn": {
        "openai": (("messages", 1), {"role": "user", "content": QUESTION}),
        "anthropic": (("messages",), [{"role": "user", "content": QUESTION}]),
        "gemini": (("contents",), [{"role": "user", "parts": [{"text": QUESTION}]}]),
    },
    "tools": {
        "openai": (("tools",), [{"type": "function", "function": TOOL}]),
        "anthropic": (("tools",), [{"name": TOOL["name"], "description": TOOL["description"], "input_schema": TOOL["parameters"]}]),
        "gemini": (("tools",), [{"functionDeclarations": [{"name": TOOL["name"], "description": TOOL["description"], "parametersJsonSchema": TOOL["parameters"]}]}]),
    },
    "tool_choice required": {
        "openai": (("tool_choice",), "required"),
        "anthropic": (("tool_choice",), {"type": "any"}),
        "gemini": (("toolConfig",), {"functionCallingConfig": {"mode": "ANY"}}),
    },
    "tool_choice none": {
        "openai": (("tool_choice",), "none"),
        "anthropic": (("tool_choice",), {"type": "none"}),
        "gemini": (("toolConfig",), {"functionCallingConfig": {"mode": "NONE"}}),
    },
    "response_format": {
        "openai": (("response_format",), {"type": "json_schema", "json_schema": {"name": "order_status", "schema": SCHEMA}}),
        "anthropic": (("output_config",), {"format": {"type": "json_schema", "schema": SCHEMA}}),
        "gemini": (("generationConfig", "responseJsonSchema"), SCHEMA),
    },
    "response_format (mime type)": {
        "openai": (("response_format", "type"), "json_schema"),
        "anthropic": (("output_config", "format", "type"), "json_schema"),
        "gemini": (("generationConfig", "responseMimeType"), "application/json"),
    },
    "temperature": {
        "openai": (("temperature",), TEMPERATURE),
        "anthropic": (("temperature",), TEMPERATURE),
        "gemini": (("generationConfig", "temperature"), TEMPERATURE),
    },
    "max_tokens": {
        "openai": (("max_tokens",), MAX_TOKENS),
        "anthropic": (("max_tokens",), MAX_TOKENS),
        "gemini": (("generationConfig", "maxOutputTokens"), MAX_TOKENS),
    },
    "stop": {
        "openai": (("stop",), STOP),
        "anthropic": (("stop_sequences",), STOP),
        "gemini": (("generationConfig", "stopSequences"), STOP),
    },
    "seed": {
        "openai": (("seed",), SEED),
        "anthropic": (("seed",), ABSENT),  # Anthropic has no seed; sending one would be a 400
        "gemini": (("generationConfig", "seed"), SEED),
    },
}

# Every top-level field each dialect may send for this request; anything else is a leak.
TOP_LEVEL = {
    "openai": {"model", "messages", "tools", "tool_choice", "response_format", "temperature", "max_tokens", "stop", "seed"},
    "anthropic": {"model", "system", "messages", "tools", "tool_choice", "output_config", "temperature", "max_tokens", "stop_sequences"},
    "gemini": {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"},
}


def dig(body: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        try:
            body = body[key]
        except (KeyError, IndexError):
            return ABSENT
    return body


def wire_body(fake: FakeServer, spec: Upstream, stream: bool) -> Recorded:
    """The one chat request sent streamed (or not): Gemini tells them apart by path, the
    others by the body's stream flag."""
    (recorded,) = [
        r for r in fake.requests
        if r.path == spec.chat_path(stream) and (spec.dialect == "gemini" or bool(r.body.get("stream")) == stream)
    ]
    return recorded


def without_stream_flags(spec: Upstream, recorded: Recorded) -> dict[str, Any]:
    """A streamed body minus the provider's way of asking for a stream."""
    body = dict(recorded.body)
    if spec.dialect == "openai":
        assert body.pop("stream") is True
        assert body.pop("stream_options") == {"include_usage": True}  # or an OpenAI stream has no usage
    elif spec.dialect == "anthropic":
        assert body.pop("stream") is True
    else:
        assert recorded.query == {"alt": "sse"}  # Gemini streams by URL, not by a body field
    return body


def meaning(response: ChatResponse) -> tuple[Any, ...]:
    """What an answer says, leaving out what only identifies it (ids, timestamps, latency)."""
    usage = response.usage
    return (
        response.text,
        [(call.name, call.args) for call in response.tool_calls],
        response.finish_reason,
        (usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.reasoning_tokens),
    )


def expected_answer(tool_choice: str) -> tuple[Any, ...]:
    prompt_words = len(SYSTEM.split()) + len(QUESTION.split())
    if tool_choice == "required":
        return ("", [("lookup_order", {"echo": QUESTION})], "tool_calls", (prompt_words, 1, 0, 0))
    text = f"echo: {QUESTION}"
    return (text, [], "stop", (prompt_words, len(text.split()), 0, 0))


@pytest.mark.parametrize("tool_choice", ["required", "none"])
def test_every_setting_reaches_the_wire_in_the_providers_spelling_streamed_or_not(upstream, tool_choice):
    spec, fake = upstream
    with client_for(spec, fake, max_retries=0) as client:
        request = canonical_request(client, spec, tool_choice)
        client.send(request)
        client.send_stream(request).until_done()
    body = wire_body(fake, spec, stream=False).body
    streamed = without_stream_flags(spec, wire_body(fake, spec, stream=True))

    assert streamed == body  # streaming changes how the answer comes, not what is asked
    skip = "tool_choice none" if tool_choice == "required" else "tool_choice required"
    for setting, spellings in SPELLINGS.items():
        if setting != skip:
            path, value = spellings[spec.dialect]
            assert dig(body, path) == value, f"{setting} in {spec.provider}"
    assert set(body) <= TOP_LEVEL[spec.dialect]
    if spec.dialect != "gemini":  # Gemini names the model in the URL
        assert body["model"] == spec.model


def test_a_provider_without_a_key_gets_no_auth_header_and_keyed_ones_get_theirs(upstream):
    spec, fake = upstream
    with client_for(spec, fake, max_retries=0) as client:
        client.send(canonical_request(client, spec, "none"))
    headers = wire_body(fake, spec, stream=False).headers
    auth = {k: v for k, v in headers.items() if k in ("authorization", "x-api-key", "x-goog-api-key")}
    expected = {
        "openai": {"authorization": f"Bearer {KEY}"},
        "groq": {"authorization": f"Bearer {KEY}"},
        "lmstudio": {},
        "anthropic": {"x-api-key": KEY},
        "gemini": {"x-goog-api-key": KEY},
    }
    assert auth == expected[spec.provider]
    assert ("anthropic-version" in headers) == (spec.provider == "anthropic")


# -- the answers agree ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool_choice", ["required", "none"])
def test_the_answer_means_the_same_on_every_provider_streamed_or_not(upstream, tool_choice):
    spec, fake = upstream
    with client_for(spec, fake, max_retries=0) as client:
        request = canonical_request(client, spec, tool_choice)
        whole = client.send(request)
        stream = client.send_stream(request)
        events = list(stream)
    streamed = stream.response

    assert meaning(whole) == meaning(streamed) == expected_answer(tool_choice)
    # Within one provider the calls are the very same calls, ids included (Gemini sends none:
    # modelport's synthetic ids are derived from the response id, so a stream gets the same ones).
    assert [c.id for c in whole.tool_calls] == [c.id for c in streamed.tool_calls]
    assert all(c.id for c in whole.tool_calls)
    assert whole.provider == streamed.provider == spec.provider
    assert whole.model == streamed.model == spec.model
    assert events[0].kind == "start" and events[-1].kind in ("finish", "usage")
    if tool_choice == "none":
        assert len([e for e in events if e.kind == "text"]) > 1  # it really came in pieces


def test_all_providers_agree_with_each_other():
    """The same request, one client, five providers: one answer."""
    answers: dict[str, list[tuple[Any, ...]]] = {}
    fakes = {name: spec.fake().start() for name, spec in UPSTREAMS.items()}
    try:
        keys = {name: spec.key for name, spec in UPSTREAMS.items() if spec.key}
        urls = {name: UPSTREAMS[name].base_url(fake) for name, fake in fakes.items()}
        with Client(api_keys=keys, base_urls=urls, max_retries=0) as client:
            for name, spec in UPSTREAMS.items():
                for choice in ("required", "none"):
                    request = canonical_request(client, spec, choice)
                    answers.setdefault(name, []).append(meaning(client.send(request)))
                    answers[name].append(meaning(client.send_stream(request).until_done()))
    finally:
        for fake in fakes.values():
            fake.stop()
    reference = answers.pop("openai")
    assert reference == [expected_answer("required")] * 2 + [expected_answer("none")] * 2
    for name, got in answers.items():
        assert got == reference, name


# -- retry hints and error bodies ---------------------------------------------------------------------------

# provider -> a 429 in that provider's own form, and the wait it asks for (short on purpose)
RATE_LIMITS = {
    "openai": (lambda: openai_error(429, "Rate limit reached for requests. Please try again in 200ms.", "requests", "rate_limit_exceeded", headers={"retry-after": "0.2"}), 0.2),
    "groq": (lambda: openai_error(429, "Rate limit reached for model. Please try again in 200ms.", "tokens", "rate_limit_exceeded", headers={"retry-after": "0.2"}), 0.2),
    "lmstudio": (lambda: openai_error(429, "Too many requests", "server_error", headers={"retry-after": "0.2"}), 0.2),
    # Anthropic writes whole seconds in retry-after.
    "anthropic": (lambda: anthropic_upstream.rate_limited(1), 1.0),
    # Gemini sends no header at all: the wait is RetryInfo.retryDelay in the body.
    "gemini": (lambda: gemini_upstream.rate_limited("0.2s"), 0.2),
}


def test_each_providers_429_retry_hint_is_read_and_the_call_retried(upstream):
    spec, fake = upstream
    fault, wait = RATE_LIMITS[spec.provider]
    if spec.provider == "gemini":
        assert "retry-after" not in {k.lower() for k in fault().reply.headers}
    fake.inject(fault())
    with client_for(spec, fake, max_retries=0) as client:
        with pytest.raises(RateLimitError) as caught:
            client.send(canonical_request(client, spec, "none"))
    assert type(caught.value) is RateLimitError  # not a quota error: waiting helps
    assert caught.value.retry_after == pytest.approx(wait)
    assert caught.value.provider == spec.provider

    fake.clear()
    fake.inject(fault())
    with client_for(spec, fake, max_retries=1) as client:
        answer = client.send(canonical_request(client, spec, "none"))
    assert answer.text == f"echo: {QUESTION}"
    assert fake.request_count == 2  # the 429, then the retry that got the answer


def test_each_providers_429_hint_is_honoured_for_streams_too(upstream):
    spec, fake = upstream
    fault, _ = RATE_LIMITS[spec.provider]
    fake.inject(fault())
    with client_for(spec, fake, max_retries=1) as client:
        answer = client.send_stream(canonical_request(client, spec, "required")).until_done()
    assert meaning(answer) == expected_answer("required")
    assert fake.request_count == 2


# (provider, fault, expected class, status): each body exactly as that provider writes it
ERRORS = [
    ("openai", lambda: openai_error(401, "Incorrect API key provided: sk-cro...cdef.", "invalid_request_error", "invalid_api_key"), AuthenticationError, 401),
    ("openai", lambda: openai_error(400, "This model's maximum context length is 8192 tokens.", "invalid_request_error", "context_length_exceeded", "messages"), ContextLengthError, 400),
    ("openai", lambda: openai_error(404, "The model 'gpt-fake' does not exist", "invalid_request_error", "model_not_found", "model"), NotFoundError, 404),
    ("openai", lambda: openai_error(429, "You exceeded your current quota, please check your plan and billing details.", "insufficient_quota", "insufficient_quota"), QuotaExceededError, 429),
    ("openai", lambda: openai_error(503, "The engine is currently overloaded, please try again later", "server_error"), OverloadedError, 503),
    ("openai", lambda: openai_error(500, "The server had an error while processing your request.", "server_error"), ServerError, 500),
    ("groq", lambda: openai_error(401, "Invalid API Key", "invalid_request_error", "invalid_api_key"), AuthenticationError, 401),
    ("groq", lambda: openai_error(413, "Request too large for model.", "tokens", "rate_limit_exceeded"), RequestTooLargeError, 413),
    ("lmstudio", lambda: openai_error(404, "Model qwen3-4b-instruct not found", "invalid_request_error", "model_not_found"), NotFoundError, 404),
    ("anthropic", lambda: anthropic_error(401, "authentication_error", "invalid x-api-key"), AuthenticationError, 401),
    ("anthropic", lambda: anthropic_error(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"), ContextLengthError, 400),
    ("anthropic", lambda: anthropic_error(403, "permission_error", "Your API key does not have permission to use the specified resource."), PermissionDeniedError, 403),
    ("anthropic", lambda: anthropic_error(404, "not_found_error", "model: claude-fake"), NotFoundError, 404),
    ("anthropic", lambda: anthropic_error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes."), RequestTooLargeError, 413),
    ("anthropic", lambda: anthropic_error(402, "billing_error", "Your credit balance is too low to access the Anthropic API."), QuotaExceededError, 402),
    ("anthropic", anthropic_upstream.overloaded, OverloadedError, 529),
    ("gemini", lambda: gemini_error(400, "API key not valid. Please pass a valid API key.", [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]), AuthenticationError, 400),
    ("gemini", lambda: gemini_error(400, "* GenerateContentRequest.generation_config.temperature: must be <= 2"), BadRequestError, 400),
    ("gemini", lambda: gemini_error(403, "Method doesn't allow unregistered callers."), PermissionDeniedError, 403),
    ("gemini", lambda: gemini_error(404, "models/gemini-fake is not found for API version v1beta."), NotFoundError, 404),
    ("gemini", lambda: gemini_upstream.rate_limited("30s", per_day=True), QuotaExceededError, 429),
    ("gemini", lambda: gemini_error(503, "The model is overloaded. Please try again later."), OverloadedError, 503),
    ("gemini", lambda: gemini_error(500, "An internal error has occurred."), ServerError, 500),
]


@pytest.mark.parametrize(
    ("provider", "fault", "cls", "status"), ERRORS, ids=[f"{p}-{s}-{c.__name__}" for p, _, c, s in ERRORS]
)
def test_each_providers_error_body_becomes_the_right_error(provider, fault, cls, status):
    spec = UPSTREAMS[provider]
    with spec.fake() as fake:
        injected = fault()
        fake.inject(injected)
        with client_for(spec, fake, max_retries=0) as client:
            with pytest.raises(ModelportError) as caught:
                client.send(canonical_request(client, spec, "none"))
    error = caught.value
    assert type(error) is cls
    assert error.status == status and error.provider == provider
    # The provider's own words reach the caller.
    body = injected.reply.body.decode()
    assert error.message and error.message.split(":")[0] in body
    assert KEY not in str(error)
