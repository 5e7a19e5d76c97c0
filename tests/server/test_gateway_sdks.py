"""The official SDKs (openai, anthropic, google-genai, groq) against a live gateway.

One gateway serves the whole module on a free loopback port. Each SDK calls the embedded
model and a fake upstream that speaks *another* dialect, so every call crosses two
translations. The embedded model is slow on CI, so its calls are few, with small max_tokens.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any, Iterator

import anthropic
import groq
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes import anthropic_upstream, gemini_upstream, openai_upstream
from tests.fakes.anthropic_upstream import AnthropicUpstream
from tests.fakes.gemini_upstream import GeminiUpstream
from tests.fakes.openai_upstream import OpenAIUpstream

LOCAL = "local/smollm2"
UPSTREAM_KEYS = {"openai": "sk-upstream-openai", "anthropic": "sk-ant-upstream", "gemini": "gm-upstream-key"}


class Upstreams:
    def __init__(self, stack: ExitStack) -> None:
        self.openai = stack.enter_context(OpenAIUpstream(api_key=UPSTREAM_KEYS["openai"]))
        self.anthropic = stack.enter_context(AnthropicUpstream(api_key=UPSTREAM_KEYS["anthropic"]))
        self.gemini = stack.enter_context(GeminiUpstream(api_key=UPSTREAM_KEYS["gemini"]))

    def config(self) -> dict[str, Any]:
        return {
            "default_model": LOCAL,
            "aliases": {
                "gpt-4o-mini": "openai/gpt-fake",
                "claude-fake": "anthropic/claude-fake",
                "gemini-fake": "gemini/gemini-fake",
                "gemma-3-4b-it": LOCAL,
                "flaky": "anthropic/claude-fake",
            },
            "fallbacks": {"flaky": ["openai/gpt-fake"]},
            "providers": {
                "openai": {"base_url": self.openai.base_url},
                "anthropic": {"base_url": self.anthropic.base_url},
                "gemini": {"base_url": self.gemini.base_url_for("v1beta")},
            },
        }

    def clear(self) -> None:
        for upstream in (self.openai, self.anthropic, self.gemini):
            upstream.clear()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with ExitStack() as stack:
        yield Upstreams(stack)


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    settings = Settings(log_calls=False, keys_path=str(tmp_path_factory.mktemp("keys") / "gateway.db"), max_tokens=256)
    with GatewayThread(settings, config=upstreams.config(), api_keys=UPSTREAM_KEYS) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _fresh_upstreams(upstreams: Upstreams) -> None:
    upstreams.clear()


def oa(gw: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="lm-studio", max_retries=0)


def an(gw: GatewayThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="anything", max_retries=0)


def gm(gw: GatewayThread, version: str = "v1beta") -> genai.Client:
    return genai.Client(api_key="anything", http_options=gtypes.HttpOptions(base_url=gw.url, api_version=version))


def gq(gw: GatewayThread) -> groq.Groq:
    return groq.Groq(base_url=gw.url, api_key="anything", max_retries=0)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# Bounded answers for the embedded model: an open integer could run on to max_tokens.
YES_NO_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}}, "required": ["answer"], "additionalProperties": False}
NUMBER_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}


# -- OpenAI SDK -------------------------------------------------------------------------------


def test_openai_sdk_local_chat_stream_and_usage(gateway: GatewayThread) -> None:
    client = oa(gateway)
    reply = client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=6)
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens <= 6
    stream = client.chat.completions.create(
        model="gemma-3-4b-it", messages=[{"role": "user", "content": "Say hi"}], max_tokens=6, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_openai_sdk_local_tools_and_structured_output(gateway: GatewayThread) -> None:
    client = oa(gateway)
    reply = client.chat.completions.create(
        model=LOCAL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=40,
    )
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)
    reply = client.chat.completions.create(
        model=LOCAL, messages=[{"role": "user", "content": "Is the sky blue?"}], max_tokens=30,
        response_format={"type": "json_schema", "json_schema": {"name": "yes_no", "schema": YES_NO_SCHEMA}},
    )
    assert json.loads(reply.choices[0].message.content)["answer"] in ("yes", "no")


def test_openai_sdk_to_anthropic_upstream(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = oa(gateway)
    reply = client.chat.completions.create(model="claude-fake", messages=[{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.model == "claude-fake"
    sent = upstreams.anthropic.last_request
    # The provider key travels upstream; the caller's key never does.
    assert UPSTREAM_KEYS["anthropic"] in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])
    assert "lm-studio" not in json.dumps(sent.headers)
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="claude-fake", messages=[{"role": "user", "content": "a b c"}], stream=True)
        if c.choices
    )
    assert text == "echo: a b c"


def test_openai_sdk_tools_through_anthropic_upstream(gateway: GatewayThread) -> None:
    client = oa(gateway)
    messages: list[Any] = [{"role": "user", "content": "Paris"}]
    reply = client.chat.completions.create(model="claude-fake", messages=messages, tools=[WEATHER_TOOL], tool_choice="required")
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"echo": "Paris"}
    stream = client.chat.completions.create(model="claude-fake", messages=messages, tools=[WEATHER_TOOL], tool_choice="required", stream=True)
    fragments = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert fragments[0].function.name == "get_weather"
    assert json.loads("".join(f.function.arguments or "" for f in fragments)) == {"echo": "Paris"}
    # the tool round trip: result back in, answer out
    messages += [reply.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    messages.append({"role": "user", "content": "thanks"})
    final = client.chat.completions.create(model="claude-fake", messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == "echo: thanks"


def test_openai_sdk_structured_output_through_gemini_upstream(gateway: GatewayThread, upstreams: Upstreams) -> None:
    upstreams.gemini.script('{"n": 7}')
    reply = oa(gateway).chat.completions.create(
        model="gemini-fake", messages=[{"role": "user", "content": "a number"}],
        response_format={"type": "json_schema", "json_schema": {"name": "num", "schema": NUMBER_SCHEMA}},
    )
    assert json.loads(reply.choices[0].message.content) == {"n": 7}
    config = upstreams.gemini.last_request.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"


def test_openai_sdk_embeddings_float_and_base64(gateway: GatewayThread) -> None:
    client = oa(gateway)
    default = client.embeddings.create(model="gpt-4o-mini", input=["one", "two"])  # the SDK asks for base64
    floats = client.embeddings.create(model="gpt-4o-mini", input=["one", "two"], encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 8
    assert default.data[1].embedding == pytest.approx(floats.data[1].embedding, rel=1e-6)
    assert default.data[0].embedding == pytest.approx(openai_upstream.fake_vector("one"), rel=1e-6)


def test_openai_sdk_local_embeddings(gateway: GatewayThread) -> None:
    result = oa(gateway).embeddings.create(model=LOCAL, input="hello")
    assert len(result.data[0].embedding) > 16


def test_openai_sdk_models_and_legacy_completions(gateway: GatewayThread) -> None:
    client = oa(gateway)
    ids = {m.id for m in client.models.list()}
    assert {LOCAL, "gpt-4o-mini", "claude-fake", "gemma-3-4b-it"} <= ids
    assert client.models.retrieve("claude-fake").id == "claude-fake"
    completion = client.completions.create(model="gpt-4o-mini", prompt="say this")
    assert completion.choices[0].text == "echo: say this"
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="gpt-4o-mini", prompt="x y", stream=True) if c.choices)
    assert streamed == "echo: x y"


def test_openai_sdk_errors(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = oa(gateway)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert "local/smollm2" in missing.value.message and "gpt-4o-mini" in missing.value.message
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": "hi"}], temperature="hot")  # type: ignore[arg-type]
    assert bad.value.param == "temperature"
    upstreams.anthropic.inject(anthropic_upstream.rate_limited(retry_after=7))
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="claude-fake", messages=[{"role": "user", "content": "hi"}])
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.response.headers["x-request-id"]


def test_fallback_on_upstream_overload(gateway: GatewayThread, upstreams: Upstreams) -> None:
    upstreams.anthropic.inject(anthropic_upstream.overloaded())
    reply = oa(gateway).chat.completions.create(model="flaky", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "echo: hi"
    assert upstreams.anthropic.request_count == 1 and upstreams.openai.request_count == 1


def test_error_mid_stream_ends_with_the_dialects_error_event(gateway: GatewayThread, upstreams: Upstreams) -> None:
    upstreams.anthropic.inject(anthropic_upstream.error_mid_stream())
    stream = oa(gateway).chat.completions.create(model="claude-fake", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError, match="Overloaded|overloaded"):
        list(stream)


# -- Anthropic SDK ----------------------------------------------------------------------------


def test_anthropic_sdk_local(gateway: GatewayThread) -> None:
    client = an(gateway)
    message = client.messages.create(model=LOCAL, max_tokens=6, messages=[{"role": "user", "content": "Say hi"}])
    assert message.content[0].text and message.usage.output_tokens <= 6
    with client.messages.stream(model=LOCAL, max_tokens=6, messages=[{"role": "user", "content": "Say hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason in ("max_tokens", "end_turn")


def test_anthropic_sdk_to_openai_upstream_with_tools(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = an(gateway)
    message = client.messages.create(model="gpt-4o-mini", max_tokens=50, system="be brief", messages=[{"role": "user", "content": "hi you"}])
    assert message.content[0].text == "echo: hi you"
    assert upstreams.openai.last_request.headers["authorization"] == f"Bearer {UPSTREAM_KEYS['openai']}"
    tool = {"name": "get_weather", "description": "weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}
    message = client.messages.create(
        model="gpt-4o-mini", max_tokens=50, tools=[tool], tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Rome"}],
    )
    block = message.content[-1]
    assert message.stop_reason == "tool_use" and block.name == "get_weather" and block.input == {"echo": "Rome"}
    with client.messages.stream(model="gpt-4o-mini", max_tokens=50, tools=[tool], tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": "Oslo"}]) as stream:
        final = stream.get_final_message()
    assert final.content[-1].input == {"echo": "Oslo"}
    with client.messages.stream(model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "x y z"}]) as stream:
        assert "".join(stream.text_stream) == "echo: x y z"


def test_anthropic_sdk_structured_output_and_count_tokens(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = an(gateway)
    upstreams.openai.script('{"n": 3}')
    message = client.messages.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "a number"}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": NUMBER_SCHEMA}}},
    )
    assert json.loads(message.content[0].text) == {"n": 3}
    assert upstreams.openai.last_request.body["response_format"]["type"] == "json_schema"
    count = client.messages.count_tokens(model="claude-fake", messages=[{"role": "user", "content": "how many tokens is this"}])
    assert count.input_tokens > 0


def test_anthropic_sdk_errors(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = an(gateway)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        # The SDK itself does arithmetic on max_tokens, so the wrong type goes in extra_body.
        client.messages.create(model=LOCAL, messages=[{"role": "user", "content": "hi"}], max_tokens=5, extra_body={"max_tokens": "lots"})
    assert "max_tokens" in bad.value.message
    upstreams.gemini.inject(gemini_upstream.rate_limited("12s"))
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="gemini-fake", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.response.headers["retry-after"] == "12"


# -- google-genai SDK -------------------------------------------------------------------------


def test_genai_sdk_local(gateway: GatewayThread) -> None:
    client = gm(gateway, "v1")
    config = gtypes.GenerateContentConfig(max_output_tokens=6)
    reply = client.models.generate_content(model=LOCAL, contents="Say hi", config=config)
    assert reply.text and reply.usage_metadata.candidates_token_count <= 6
    text = "".join(c.text or "" for c in client.models.generate_content_stream(model=LOCAL, contents="Say hi", config=config))
    assert text


def test_genai_sdk_to_openai_upstream(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = gm(gateway)
    assert client.models.generate_content(model="gpt-4o-mini", contents="hello world").text == "echo: hello world"
    text = "".join(c.text or "" for c in client.models.generate_content_stream(model="gpt-4o-mini", contents="p q"))
    assert text == "echo: p q"
    weather = gtypes.FunctionDeclaration(
        name="get_weather", description="weather",
        parameters_json_schema=WEATHER_TOOL["function"]["parameters"],
    )
    config = gtypes.GenerateContentConfig(
        tools=[gtypes.Tool(function_declarations=[weather])],
        tool_config=gtypes.ToolConfig(function_calling_config=gtypes.FunctionCallingConfig(mode="ANY")),
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
    )
    reply = client.models.generate_content(model="gpt-4o-mini", contents="Lima", config=config)
    assert reply.function_calls[0].name == "get_weather" and reply.function_calls[0].args == {"echo": "Lima"}
    upstreams.openai.script('{"n": 5}')
    reply = client.models.generate_content(
        model="gpt-4o-mini", contents="a number",
        config=gtypes.GenerateContentConfig(response_mime_type="application/json", response_json_schema=NUMBER_SCHEMA),
    )
    assert json.loads(reply.text) == {"n": 5}


def test_genai_sdk_embeddings_tokens_and_models(gateway: GatewayThread) -> None:
    client = gm(gateway)
    result = client.models.embed_content(model="gpt-4o-mini", contents=["one", "two"])
    assert result.embeddings[0].values == pytest.approx(openai_upstream.fake_vector("one"), rel=1e-6)
    assert client.models.count_tokens(model="claude-fake", contents="count these words").total_tokens > 0
    names = {m.name for m in client.models.list()}
    assert "models/local/smollm2" in names and "models/claude-fake" in names
    assert gm(gateway, "v1").models.get(model="claude-fake").name == "models/claude-fake"


def test_genai_sdk_errors(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = gm(gateway)
    with pytest.raises(genai_errors.ClientError) as missing:
        client.models.generate_content(model="nope", contents="hi")
    assert missing.value.code == 404 and "local/smollm2" in missing.value.message
    upstreams.openai.inject(openai_upstream.rate_limited(retry_after=3))
    with pytest.raises(genai_errors.ClientError) as limited:
        client.models.generate_content(model="gpt-4o-mini", contents="hi")
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"


# -- Groq SDK ---------------------------------------------------------------------------------


def test_groq_sdk_local_and_gemini_upstream(gateway: GatewayThread) -> None:
    client = gq(gateway)
    reply = client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=6)
    assert reply.choices[0].message.content
    reply = client.chat.completions.create(model="gemini-fake", messages=[{"role": "user", "content": "hey you"}])
    assert reply.choices[0].message.content == "echo: hey you"
    stream = client.chat.completions.create(model="gemini-fake", messages=[{"role": "user", "content": "s t"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: s t"
    reply = client.chat.completions.create(model="gemini-fake", messages=[{"role": "user", "content": "Bern"}], tools=[WEATHER_TOOL], tool_choice="required")
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == {"echo": "Bern"}
    assert {m.id for m in client.models.list().data} >= {LOCAL}


def test_groq_sdk_errors(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = gq(gateway)
    with pytest.raises(groq.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(groq.BadRequestError):
        client.chat.completions.create(model=LOCAL, messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[list-item]
    upstreams.gemini.inject(gemini_upstream.rate_limited("4s"))
    with pytest.raises(groq.RateLimitError) as limited:
        client.chat.completions.create(model="gemini-fake", messages=[{"role": "user", "content": "hi"}])
    assert limited.value.response.headers["retry-after"] == "4"
