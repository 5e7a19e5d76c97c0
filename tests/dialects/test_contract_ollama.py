"""Contract tests: what the Ollama dialect sends and serves validates against Ollama's own
OpenAPI spec (shared/specs/ollama/openapi.yaml, read in place; skipped when absent), and
uses only the fields the spec names, so a misspelt field cannot pass as an "additional" one."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import pytest

jsonschema = pytest.importorskip("jsonschema")
yaml = pytest.importorskip("yaml")

from modelport import errors  # noqa: E402
from tests.paths import ROOT  # noqa: E402
from modelport.dialects import ollama as OL  # noqa: E402
from modelport.types import (  # noqa: E402
    ChatRequest,
    ChatResponse,
    Embedding,
    EmbeddingResponse,
    ImagePart,
    Message,
    ModelInfo,
    ReasoningPart,
    ResponseFormat,
    StreamEvent,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)

SPEC = ROOT.parent / "shared/specs/ollama/openapi.yaml"
# Fields the Ollama server reads on chat messages that this spec revision leaves out
# (tool results carry tool_name; thinking models replay thinking).
MESSAGE_EXTRAS = {"tool_name", "thinking"}
SCHEMA = {"type": "object", "properties": {"order_no": {"type": "string"}}, "required": ["order_no"]}


@lru_cache(maxsize=None)
def _spec() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip(f"{SPEC} is absent: the provider specs are kept outside the repository (shared/specs)")
    return yaml.safe_load(SPEC.read_text())


def _assert_valid(schema_name: str, body: Any) -> None:
    spec = _spec()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    cls = jsonschema.validators.validator_for({"$schema": "https://json-schema.org/draft/2020-12/schema"})
    found = sorted(cls(schema).iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not found, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in found[:5])


def _named(schema_name: str) -> set[str]:
    return set(_spec()["components"]["schemas"][schema_name]["properties"])


def _assert_only_named(schema_name: str, body: dict[str, Any]) -> None:
    unknown = set(body) - _named(schema_name)
    assert not unknown, f"{schema_name} has no {sorted(unknown)}"


REQUESTS = {
    "worked_example": ChatRequest("m", [
        Message.system("You are a shop assistant."),
        Message.user("Where is order A-118?", ImagePart(data="iVBORw0KGgo=", media_type="image/png")),
        Message("assistant", [ReasoningPart("Look it up.", "sig"), TextPart("Checking.")], [ToolCall("call_1", "lookup_order", '{"order_no":"A-118"}')]),
        Message.tool("call_1", '{"status":"shipped"}'),
        Message.user("Thanks."),
    ], tools=[Tool("lookup_order", "Find an order.", SCHEMA)], max_tokens=300),
    "sampling": ChatRequest("m", [Message.user("hi")], temperature=1.5, top_p=0.9, top_k=40, stop=["END"], seed=7,
                            presence_penalty=0.5, frequency_penalty=0.1, stream=True,
                            extra={"num_ctx": 8192, "keep_alive": "5m", "repeat_penalty": 1.1}),
    "no_tools": ChatRequest("m", [Message.user("hi")], tools=[Tool("f")], tool_choice=ToolChoice("none")),
    "thinking": ChatRequest("m", [Message.user("hi")], reasoning_effort="high"),
    "thinking_off": ChatRequest("m", [Message.user("hi")], reasoning_effort="none"),
    "json_object": ChatRequest("m", [Message.user("hi")], response_format=ResponseFormat("json_object")),
    "json_schema": ChatRequest("m", [Message.user("hi")], response_format=ResponseFormat("json_schema", SCHEMA, "order")),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_chat_requests_match_the_spec(name):
    body = OL.encode_request(REQUESTS[name], "llama3.2")
    _assert_valid("ChatRequest", body)
    _assert_only_named("ChatRequest", body)
    _assert_only_named("ModelOptions", {k: v for k, v in body.get("options", {}).items()
                                        if k not in ("repeat_penalty", "presence_penalty", "frequency_penalty")})
    for message in body["messages"]:
        assert set(message) <= _named("ChatMessage") | MESSAGE_EXTRAS


def _answer() -> ChatResponse:
    return ChatResponse("", "m", Message("assistant", [ReasoningPart("hm"), TextPart("hi")], [ToolCall("c", "f", '{"a":1}')]),
                        "tool_calls", Usage(10, 5), latency=0.25)


def test_chat_answers_we_serve_match_the_spec():
    body = OL.encode_response(_answer(), "llama3.2")
    _assert_valid("ChatResponse", body)
    _assert_only_named("ChatResponse", body)


def test_chat_stream_lines_match_the_spec():
    encoder = OL.StreamEncoder("llama3.2")
    events = [StreamEvent("start", id="x"), StreamEvent("reasoning", text="hm"), StreamEvent("text", text="hi"),
              StreamEvent("tool_call", index=0, id="c", name="f", arguments='{"a"'), StreamEvent("tool_call", index=0, arguments=":1}"),
              StreamEvent("finish", finish_reason="tool_calls", usage=Usage(10, 5))]
    raw = b"".join(encoder.encode(e) for e in events) + encoder.close()
    lines = [json.loads(line) for line in raw.splitlines()]
    for line in lines[:-1]:
        _assert_valid("ChatStreamEvent", line)
    # The final line carries what ChatResponse defines (done_reason, counts, durations).
    _assert_valid("ChatResponse", lines[-1])
    _assert_only_named("ChatResponse", lines[-1])
    assert lines[-2]["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"a": 1}}}]


def test_generate_answers_and_stream_lines_match_the_spec():
    body = OL.encode_generate_response(_answer(), "llama3.2")
    _assert_valid("GenerateResponse", body)
    _assert_only_named("GenerateResponse", body)
    encoder = OL.GenerateStreamEncoder("llama3.2")
    raw = encoder.encode(StreamEvent("text", text="hi")) + encoder.close()
    for line in raw.splitlines():
        _assert_valid("GenerateStreamEvent", json.loads(line))
        _assert_only_named("GenerateStreamEvent", json.loads(line))


def test_spec_request_examples_decode():
    spec = _spec()["paths"]
    example = spec["/api/generate"]["post"]["requestBody"]["content"]["application/json"]["example"]
    request = OL.decode_generate_request(example)
    assert (request.model, request.messages[-1].text, request.stream) == ("gemma4", "Why is the sky blue?", True)
    embed = spec["/api/embed"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert OL.decode_embed_request(embed) == ("embeddinggemma", ["Generate embeddings for this text"])


def test_spec_answer_examples_decode():
    spec = _spec()["paths"]
    chat = spec["/api/chat"]["post"]["responses"]["200"]["content"]["application/json"]["example"]
    answer = OL.decode_response(chat, "ollama")
    assert answer.text == "Hello! How can I help you today?" and (answer.usage.input_tokens, answer.usage.output_tokens) == (11, 18)
    generate = spec["/api/generate"]["post"]["responses"]["200"]["content"]["application/json"]["example"]
    assert OL.decode_response(generate, "ollama").text == "Hello! How can I help you today?"
    embed = spec["/api/embed"]["post"]["responses"]["200"]["content"]["application/json"]["example"]
    vectors = OL.decode_embeddings_response(embed, "ollama")
    assert len(vectors.data[0].vector) == 10 and vectors.usage.input_tokens == 8


def test_embeddings_both_ways_match_the_spec():
    _, body = OL.encode_embeddings_request(["a", "b"], "nomic-embed-text", dimensions=64)
    _assert_valid("EmbedRequest", body)
    _assert_only_named("EmbedRequest", body)
    served = OL.encode_embed_response(EmbeddingResponse("m", [Embedding(0, [0.5, -0.5])], Usage(3)), "nomic-embed-text", 0.01)
    _assert_valid("EmbedResponse", served)
    _assert_only_named("EmbedResponse", served)


def test_model_listings_match_the_spec():
    models = [ModelInfo("llama3.2", "openai"), ModelInfo("local/smollm2", "local", context_length=8192)]
    tags = OL.encode_tags(models, OL.now())
    _assert_valid("ListResponse", tags)
    for item in tags["models"]:
        _assert_only_named("ModelSummary", item)
    ps = OL.encode_ps([(m, OL.now()) for m in models])
    _assert_valid("PsResponse", ps)
    for item in ps["models"]:
        _assert_only_named("Ps", item)
    show = OL.encode_show(models[1], OL.now())
    _assert_valid("ShowResponse", show)
    # modelfile is what the ollama client reads; the spec revision dropped it from the schema.
    _assert_only_named("ShowResponse", {k: v for k, v in show.items() if k != "modelfile"})


def test_errors_match_the_spec():
    _, body, _ = OL.encode_error(errors.NotFoundError("model 'x' not found"))
    _assert_valid("ErrorResponse", body)
    _assert_only_named("ErrorResponse", body)
