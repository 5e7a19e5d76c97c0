"""The official SDKs as an oracle for what modelport puts on the wire, and how it reads answers.

One logical request (a system prompt, a multi-turn history with an image by base64, an
assistant tool call and its result, a tool definition, temperature, max tokens, stop
sequences, a seed and structured output) is written once as each vendor's SDK would be
called by hand, and once through ``modelport.Client``. Both go to the same loopback fake,
which records the JSON body and headers; the two bodies must say the same thing field for
field. Then the fake's answer (a tool call plus text, with usage) is read by both, and the
SDK's reading must be modelport's.

Where the two legitimately differ, the difference is written down next to the one
normalisation that removes it (``DIFFERENCES``); nothing else is normalised. Each SDK's
tests are independent: one fake per test, no shared state, no network.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
import zlib
from typing import Any

import pytest

from modelport import Client
from modelport.dialects import anthropic as anthropic_dialect
from modelport.dialects import gemini as gemini_dialect
from modelport.types import ImagePart, Message, ToolCall
from tests.fakes.anthropic_upstream import AnthropicUpstream
from tests.fakes.gemini_upstream import GeminiUpstream
from tests.fakes.openai_upstream import Answer, OpenAIUpstream
from tests.fakes.server import Recorded

KEY = "sk-test-0123456789abcdef"


def _png_1x1() -> bytes:
    """A real (tiny) PNG, so no SDK has a reason to re-encode it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")


# -- the one logical request -----------------------------------------------------------------------

SYSTEM = "You are a shop assistant. Answer with JSON."
PNG = _png_1x1()
PNG_B64 = base64.b64encode(PNG).decode()
ORDER_TOOL = {
    "name": "lookup_order",
    "description": "Look up an order by its number.",
    "parameters": {"type": "object", "properties": {"order_no": {"type": "string"}}, "required": ["order_no"]},
}
SCHEMA = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "eta_days": {"type": "integer"}},
    "required": ["status", "eta_days"],
    "additionalProperties": False,
}
CALL_ID = "call_k3J9"
CALL_ARGS = {"order_no": "A-118"}
RESULT = {"status": "shipped"}
TEMPERATURE, MAX_TOKENS, STOP, SEED = 0.5, 300, ["END", "###"], 7

HISTORY = [
    Message.user("Hi"),
    Message.assistant("Hello! How can I help?"),
    Message.user("Where is order A-118? Here is the receipt.", ImagePart(data=PNG_B64, media_type="image/png")),
    Message.assistant(tool_calls=[ToolCall(CALL_ID, "lookup_order", json.dumps(CALL_ARGS, separators=(",", ":")))]),
    Message.tool(CALL_ID, json.dumps(RESULT, separators=(",", ":")), name="lookup_order"),
    Message.user("When will it arrive?"),
]


def modelport_call(provider: str, base_url: str, model: str, *, stream: bool = False, response_format: Any = None) -> Any:
    """The logical request through modelport's public Client, as a user writes it."""
    with Client(api_keys={provider: KEY}, base_urls={provider: base_url}, max_retries=0) as client:
        params = dict(
            system=SYSTEM, messages=copy.deepcopy(HISTORY), tools=[ORDER_TOOL], temperature=TEMPERATURE,
            max_tokens=MAX_TOKENS, stop=STOP, seed=SEED, response_format=response_format,
        )
        if stream:
            return client.stream(f"{provider}/{model}", **params).until_done()
        return client.chat(f"{provider}/{model}", **params)


# The fake's answer for the decode direction: a tool call and some text, with exact usage.
SCRIPTED = Answer(
    text="Checking that for you.", tool_calls=[("call_ans1", "lookup_order", '{"order_no":"B-7"}')],
    prompt_tokens=41, completion_tokens=9,
)
STRUCTURED = Answer(text='{"status":"shipped","eta_days":2}', prompt_tokens=41, completion_tokens=9)
OPENAI_FORMAT = {"type": "json_schema", "json_schema": {"name": "order_status", "schema": SCHEMA, "strict": True}}

# Legitimate differences between an SDK's body and modelport's, each with its normalisation.
DIFFERENCES = {
    "openai.stream_options": "modelport always asks a stream for its usage (stream_options.include_usage), "
    "which OpenAI otherwise never sends; the SDK sends only what the caller passed",
    "anthropic.content_form": "Anthropic takes a message's content as a string or as text blocks, the same "
    "thing; modelport sends user text alone as a string and assistant text as blocks",
    "anthropic.auth": "SDK 2.x sends Authorization: Bearer and anthropic-version 2026-10-21; modelport sends "
    "the documented pair x-api-key and 2023-06-01",
    "gemini.system_role": "google-genai writes role 'user' into systemInstruction, where Gemini ignores any "
    "role; modelport leaves it out",
    "gemini.field_spelling": "google-genai writes some fields in snake_case (inlineData.mime_type, "
    "functionDeclarations[].parameters_json_schema); proto3 JSON parsers accept both, modelport writes lowerCamelCase",
    "gemini.bytes": "google-genai writes bytes (inlineData.data) as URL-safe base64; proto3 JSON parsers accept "
    "both alphabets, modelport writes the standard one that data: URLs and the other providers use",
}


def _one(server: Any, path: str) -> Recorded:
    """The single request the server got on ``path``; it is then forgotten for the next call."""
    hits = [r for r in server.requests if r.path == path]
    assert len(hits) == 1, [r.path for r in server.requests]
    server.clear()
    return hits[0]


# -- OpenAI ------------------------------------------------------------------------------------------


def _openai_messages() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": [
            {"type": "text", "text": "Where is order A-118? Here is the receipt."},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": CALL_ID, "type": "function", "function": {"name": "lookup_order", "arguments": json.dumps(CALL_ARGS, separators=(",", ":"))}},
        ]},
        {"role": "tool", "tool_call_id": CALL_ID, "content": json.dumps(RESULT, separators=(",", ":"))},
        {"role": "user", "content": "When will it arrive?"},
    ]


def _openai_kwargs(structured: bool = True) -> dict[str, Any]:
    kwargs = dict(
        messages=_openai_messages(), tools=[{"type": "function", "function": ORDER_TOOL}], temperature=TEMPERATURE,
        max_tokens=MAX_TOKENS, stop=STOP, seed=SEED,
    )
    return kwargs | {"response_format": OPENAI_FORMAT} if structured else kwargs


def _without_stream_options(body: dict[str, Any]) -> dict[str, Any]:
    """DIFFERENCES["openai.stream_options"]: the one field modelport adds to a stream."""
    body = dict(body)
    assert body.pop("stream_options") == {"include_usage": True}
    return body


@pytest.fixture()
def openai_fake():
    with OpenAIUpstream() as fake:
        yield fake


def test_openai_sdk_and_modelport_send_the_same_body(openai_fake):
    import openai

    sdk = openai.OpenAI(base_url=openai_fake.base_url, api_key=KEY, max_retries=0)
    openai_fake.script(STRUCTURED)
    sdk.chat.completions.create(model="gpt-fake", **_openai_kwargs())
    oracle = _one(openai_fake, "/v1/chat/completions")

    openai_fake.script(STRUCTURED)
    answer = modelport_call("openai", openai_fake.base_url, "gpt-fake", response_format=OPENAI_FORMAT)
    ours = _one(openai_fake, "/v1/chat/completions")

    assert ours.body == oracle.body  # every field, no normalisation at all
    assert answer.parsed == {"status": "shipped", "eta_days": 2}
    assert ours.headers["authorization"] == oracle.headers["authorization"] == f"Bearer {KEY}"
    assert ours.headers["content-type"] == oracle.headers["content-type"] == "application/json"


def test_openai_sdk_and_modelport_send_the_same_stream_body(openai_fake):
    import openai

    sdk = openai.OpenAI(base_url=openai_fake.base_url, api_key=KEY, max_retries=0)
    openai_fake.script(STRUCTURED)
    list(sdk.chat.completions.create(model="gpt-fake", stream=True, **_openai_kwargs()))
    oracle = _one(openai_fake, "/v1/chat/completions")

    openai_fake.script(STRUCTURED)
    modelport_call("openai", openai_fake.base_url, "gpt-fake", stream=True, response_format=OPENAI_FORMAT)
    ours = _one(openai_fake, "/v1/chat/completions")

    assert oracle.body["stream"] is True and "stream_options" not in oracle.body
    assert _without_stream_options(ours.body) == oracle.body


def test_openai_sdk_and_modelport_read_the_same_answer(openai_fake):
    import openai

    sdk = openai.OpenAI(base_url=openai_fake.base_url, api_key=KEY, max_retries=0)
    openai_fake.script(SCRIPTED)
    theirs = sdk.chat.completions.create(model="gpt-fake", **_openai_kwargs(structured=False))
    openai_fake.script(SCRIPTED)
    ours = modelport_call("openai", openai_fake.base_url, "gpt-fake")

    choice = theirs.choices[0]
    assert ours.text == choice.message.content
    assert [(c.id, c.name, c.args) for c in ours.tool_calls] == [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls
    ]
    assert ours.finish_reason == choice.finish_reason == "tool_calls"
    assert (ours.usage.input_tokens, ours.usage.output_tokens) == (theirs.usage.prompt_tokens, theirs.usage.completion_tokens)
    assert ours.model == theirs.model == "gpt-fake"


# -- Groq: the OpenAI dialect under /openai/v1 ---------------------------------------------------------


class GroqUpstream(OpenAIUpstream):
    """The OpenAI fake, also answering where the groq SDK posts (``/openai/v1/...``)."""

    def __init__(self) -> None:
        super().__init__()
        self.route("POST", "/openai/v1/chat/completions", self._authorised(self._chat))


@pytest.fixture()
def groq_fake():
    with GroqUpstream() as fake:
        yield fake


def test_groq_sdk_and_modelport_send_the_same_body_to_the_same_path(groq_fake):
    import groq

    sdk = groq.Groq(base_url=groq_fake.url, api_key=KEY, max_retries=0)
    groq_fake.script(STRUCTURED)
    sdk.chat.completions.create(model="openai/gpt-oss-120b", **_openai_kwargs())
    oracle = _one(groq_fake, "/openai/v1/chat/completions")

    # modelport's groq row already ends in /openai/v1, like the SDK's base plus its prefix.
    groq_fake.script(STRUCTURED)
    answer = modelport_call("groq", groq_fake.url + "/openai/v1", "openai/gpt-oss-120b", response_format=OPENAI_FORMAT)
    ours = _one(groq_fake, "/openai/v1/chat/completions")

    assert ours.body == oracle.body
    assert ours.body["model"] == "openai/gpt-oss-120b"  # the provider prefix, and only it, is gone
    assert answer.parsed == {"status": "shipped", "eta_days": 2}
    assert ours.headers["authorization"] == oracle.headers["authorization"] == f"Bearer {KEY}"


def test_groq_sdk_and_modelport_send_the_same_stream_body(groq_fake):
    import groq

    sdk = groq.Groq(base_url=groq_fake.url, api_key=KEY, max_retries=0)
    groq_fake.script(SCRIPTED)
    list(sdk.chat.completions.create(model="llama-3.1-8b-instant", stream=True, **_openai_kwargs(structured=False)))
    oracle = _one(groq_fake, "/openai/v1/chat/completions")

    groq_fake.script(SCRIPTED)
    ours_answer = modelport_call("groq", groq_fake.url + "/openai/v1", "llama-3.1-8b-instant", stream=True)
    ours = _one(groq_fake, "/openai/v1/chat/completions")

    assert _without_stream_options(ours.body) == oracle.body
    assert [(c.name, c.args) for c in ours_answer.tool_calls] == [("lookup_order", {"order_no": "B-7"})]


# -- Anthropic ------------------------------------------------------------------------------------------


def _anthropic_messages() -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": [
            {"type": "text", "text": "Where is order A-118? Here is the receipt."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        ]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": CALL_ID, "name": "lookup_order", "input": CALL_ARGS}]},
        # Anthropic wants the tool results first in the user turn that answers the call.
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": CALL_ID, "content": json.dumps(RESULT, separators=(",", ":"))},
            {"type": "text", "text": "When will it arrive?"},
        ]},
    ]


def _anthropic_kwargs() -> dict[str, Any]:
    tool = {"name": ORDER_TOOL["name"], "description": ORDER_TOOL["description"], "input_schema": ORDER_TOOL["parameters"]}
    return dict(
        max_tokens=MAX_TOKENS, system=SYSTEM, messages=_anthropic_messages(), tools=[tool], stop_sequences=STOP,
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        # SDK >= 1.0 has no typed temperature; it goes in extra_body. No seed exists.
        extra_body={"temperature": TEMPERATURE},
    )


def _anthropic_blocks(body: dict[str, Any]) -> dict[str, Any]:
    """DIFFERENCES["anthropic.content_form"]: string content as the one text block it means."""
    body = copy.deepcopy(body)
    for message in body["messages"]:
        if isinstance(message["content"], str):
            message["content"] = [{"type": "text", "text": message["content"]}]
    return body


@pytest.fixture()
def anthropic_fake():
    with AnthropicUpstream() as fake:
        yield fake


def test_anthropic_sdk_and_modelport_send_the_same_body(anthropic_fake):
    import anthropic

    sdk = anthropic.Anthropic(base_url=anthropic_fake.url, api_key=KEY, max_retries=0)
    anthropic_fake.script(STRUCTURED)
    sdk.messages.create(model="claude-fake", **_anthropic_kwargs())
    oracle = _one(anthropic_fake, "/v1/messages")

    anthropic_fake.script(STRUCTURED)
    answer = modelport_call("anthropic", anthropic_fake.url, "claude-fake", response_format=SCHEMA)
    ours = _one(anthropic_fake, "/v1/messages")

    assert _anthropic_blocks(ours.body) == _anthropic_blocks(oracle.body)
    # The gateway direction: modelport's dialect reads the SDK's body as it reads its own.
    assert anthropic_dialect.decode_request(oracle.body) == anthropic_dialect.decode_request(ours.body)
    assert "seed" not in ours.body  # Anthropic has no seed; modelport drops it rather than send a 400
    assert answer.parsed == {"status": "shipped", "eta_days": 2}


def test_anthropic_auth_headers_differ_only_in_their_documented_form(anthropic_fake):
    """DIFFERENCES["anthropic.auth"]: both carry the key and a version; the fake accepts both forms."""
    import anthropic

    sdk = anthropic.Anthropic(base_url=anthropic_fake.url, api_key=KEY, max_retries=0)
    sdk.messages.create(model="claude-fake", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    oracle = _one(anthropic_fake, "/v1/messages")
    with Client(api_keys={"anthropic": KEY}, base_urls={"anthropic": anthropic_fake.url}, max_retries=0) as client:
        client.chat("anthropic/claude-fake", "hi", max_tokens=5)
    ours = _one(anthropic_fake, "/v1/messages")

    assert oracle.headers["authorization"] == f"Bearer {KEY}" and "x-api-key" not in oracle.headers
    assert ours.headers["x-api-key"] == KEY and "authorization" not in ours.headers
    assert oracle.headers["anthropic-version"] == "2026-10-21"
    assert ours.headers["anthropic-version"] == "2023-06-01"
    assert ours.body == oracle.body == {"model": "claude-fake", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def test_anthropic_sdk_and_modelport_send_the_same_stream_body(anthropic_fake):
    import anthropic

    sdk = anthropic.Anthropic(base_url=anthropic_fake.url, api_key=KEY, max_retries=0)
    kwargs = _anthropic_kwargs()
    del kwargs["output_config"]
    anthropic_fake.script(SCRIPTED)
    list(sdk.messages.create(model="claude-fake", stream=True, **kwargs))
    oracle = _one(anthropic_fake, "/v1/messages")

    anthropic_fake.script(SCRIPTED)
    modelport_call("anthropic", anthropic_fake.url, "claude-fake", stream=True)
    ours = _one(anthropic_fake, "/v1/messages")

    assert oracle.body["stream"] is True
    assert _anthropic_blocks(ours.body) == _anthropic_blocks(oracle.body)


def test_anthropic_sdk_and_modelport_read_the_same_answer(anthropic_fake):
    import anthropic

    sdk = anthropic.Anthropic(base_url=anthropic_fake.url, api_key=KEY, max_retries=0)
    kwargs = _anthropic_kwargs()
    del kwargs["output_config"]
    anthropic_fake.script(SCRIPTED)
    theirs = sdk.messages.create(model="claude-fake", **kwargs)
    anthropic_fake.script(SCRIPTED)
    ours = modelport_call("anthropic", anthropic_fake.url, "claude-fake")

    texts = [b.text for b in theirs.content if b.type == "text"]
    calls = [(b.id, b.name, b.input) for b in theirs.content if b.type == "tool_use"]
    assert ours.text == "".join(texts) == SCRIPTED.text
    assert [(c.id, c.name, c.args) for c in ours.tool_calls] == calls
    assert theirs.stop_reason == "tool_use" and ours.finish_reason == "tool_calls"
    # Anthropic's input_tokens exclude cache reads; there are none here, so the counts agree.
    assert (ours.usage.input_tokens, ours.usage.output_tokens) == (theirs.usage.input_tokens, theirs.usage.output_tokens)
    assert ours.id.startswith("msg_") and ours.model == theirs.model == "claude-fake"


# -- Gemini ---------------------------------------------------------------------------------------------


def _gemini_call(types: Any) -> tuple[list[Any], Any]:
    contents = [
        types.Content(role="user", parts=[types.Part(text="Hi")]),
        types.Content(role="model", parts=[types.Part(text="Hello! How can I help?")]),
        types.Content(role="user", parts=[
            types.Part(text="Where is order A-118? Here is the receipt."),
            types.Part.from_bytes(data=PNG, mime_type="image/png"),
        ]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(id=CALL_ID, name="lookup_order", args=CALL_ARGS))]),
        types.Content(role="user", parts=[
            types.Part(function_response=types.FunctionResponse(id=CALL_ID, name="lookup_order", response=RESULT)),
        ]),
        # Whether Gemini takes text beside functionResponse parts is unconfirmed:
        # modelport, and this call, put the next question in a content of its own.
        types.Content(role="user", parts=[types.Part(text="When will it arrive?")]),
    ]
    declaration = types.FunctionDeclaration(
        name=ORDER_TOOL["name"], description=ORDER_TOOL["description"], parameters_json_schema=ORDER_TOOL["parameters"]
    )
    config = types.GenerateContentConfig(
        system_instruction=SYSTEM, tools=[types.Tool(function_declarations=[declaration])], temperature=TEMPERATURE,
        max_output_tokens=MAX_TOKENS, stop_sequences=STOP, seed=SEED,
        response_mime_type="application/json", response_json_schema=SCHEMA,
    )
    return contents, config


def _gemini_normalised(body: dict[str, Any]) -> dict[str, Any]:
    """DIFFERENCES["gemini.*"]: systemInstruction without a role, lowerCamelCase field names,
    and inline bytes as the bytes they encode. Nothing else is touched."""
    body = copy.deepcopy(body)
    assert body["systemInstruction"].pop("role", "user") == "user"
    for content in body["contents"]:
        for part in content["parts"]:
            inline = part.get("inlineData")
            if inline is not None:
                if "mime_type" in inline:
                    inline["mimeType"] = inline.pop("mime_type")
                inline["data"] = base64.urlsafe_b64decode(inline["data"].replace("+", "-").replace("/", "_"))
    for tool in body.get("tools", ()):
        for declaration in tool["functionDeclarations"]:
            if "parameters_json_schema" in declaration:
                declaration["parametersJsonSchema"] = declaration.pop("parameters_json_schema")
    return body


@pytest.fixture()
def gemini_fake():
    with GeminiUpstream() as fake:
        yield fake


def _genai(fake: GeminiUpstream) -> Any:
    from google import genai
    from google.genai import types

    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=fake.url, api_version="v1beta")), types


def test_gemini_sdk_and_modelport_send_the_same_body(gemini_fake):
    sdk, types = _genai(gemini_fake)
    contents, config = _gemini_call(types)
    gemini_fake.script(STRUCTURED)
    sdk.models.generate_content(model="gemini-fake", contents=contents, config=config)
    oracle = _one(gemini_fake, "/v1beta/models/gemini-fake:generateContent")

    gemini_fake.script(STRUCTURED)
    answer = modelport_call("gemini", gemini_fake.base_url_for("v1beta"), "gemini-fake", response_format=SCHEMA)
    ours = _one(gemini_fake, "/v1beta/models/gemini-fake:generateContent")

    assert _gemini_normalised(ours.body) == _gemini_normalised(oracle.body)
    # The gateway direction: modelport's dialect reads the SDK's body as it reads its own.
    read = gemini_dialect.decode_request(oracle.body, "gemini-fake")
    assert read == gemini_dialect.decode_request(ours.body, "gemini-fake")
    assert read.messages[3].content[1] == ImagePart(data=PNG_B64, media_type="image/png")  # standard base64 again
    assert answer.parsed == {"status": "shipped", "eta_days": 2}
    assert ours.headers["x-goog-api-key"] == oracle.headers["x-goog-api-key"] == KEY
    assert "key" not in ours.query and "authorization" not in ours.headers  # the key never rides in the URL


def test_gemini_sdk_and_modelport_stream_to_the_same_url_with_the_same_body(gemini_fake):
    sdk, types = _genai(gemini_fake)
    contents, config = _gemini_call(types)
    config.response_mime_type = config.response_json_schema = None
    gemini_fake.script(SCRIPTED)
    list(sdk.models.generate_content_stream(model="gemini-fake", contents=contents, config=config))
    oracle = _one(gemini_fake, "/v1beta/models/gemini-fake:streamGenerateContent")

    gemini_fake.script(SCRIPTED)
    modelport_call("gemini", gemini_fake.base_url_for("v1beta"), "gemini-fake", stream=True)
    ours = _one(gemini_fake, "/v1beta/models/gemini-fake:streamGenerateContent")

    assert ours.query == oracle.query == {"alt": "sse"}
    assert "stream" not in ours.body  # Gemini streams by URL, never by a body flag
    assert _gemini_normalised(ours.body) == _gemini_normalised(oracle.body)


def test_gemini_sdk_and_modelport_read_the_same_answer(gemini_fake):
    sdk, types = _genai(gemini_fake)
    contents, config = _gemini_call(types)
    config.response_mime_type = config.response_json_schema = None
    gemini_fake.script(SCRIPTED)
    theirs = sdk.models.generate_content(model="gemini-fake", contents=contents, config=config)
    gemini_fake.script(SCRIPTED)
    ours = modelport_call("gemini", gemini_fake.base_url_for("v1beta"), "gemini-fake")

    parts = theirs.candidates[0].content.parts
    assert ours.text == "".join(p.text for p in parts if p.text) == SCRIPTED.text
    calls = [p for p in parts if p.function_call]
    assert [(c.id, c.name, c.args, c.signature) for c in ours.tool_calls] == [
        (p.function_call.id, p.function_call.name, p.function_call.args, base64.b64encode(p.thought_signature).decode())
        for p in calls
    ]
    # Gemini says STOP after a function call too; modelport decides tool_calls from the content.
    assert theirs.candidates[0].finish_reason == types.FinishReason.STOP and ours.finish_reason == "tool_calls"
    usage = theirs.usage_metadata
    assert (ours.usage.input_tokens, ours.usage.output_tokens) == (usage.prompt_token_count, usage.candidates_token_count)
    assert ours.model == theirs.model_version == "gemini-fake"
