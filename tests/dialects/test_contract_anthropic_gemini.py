"""Contract tests: encoded requests validate against the providers' own machine-readable specs.

The specs live outside the repository (shared/specs, see its README.txt for provenance and
licences; where they are looked for: tests/specs.py) and are read in place, never copied.
Tests skip when they are absent.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

from modelport.dialects import anthropic as A  # noqa: E402
from modelport.dialects import gemini as G  # noqa: E402
from modelport.types import (  # noqa: E402
    ChatRequest,
    ImagePart,
    Message,
    ReasoningPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from tests.specs import missing, spec_path  # noqa: E402

ANTHROPIC_SPEC = spec_path("anthropic/openapi.yaml")  # JSON content despite the name
GEMINI_SPEC = spec_path("gemini/openapi.json")


@lru_cache(maxsize=None)
def _load(path: Path) -> dict:
    if not path.exists():
        pytest.skip(missing(path))
    return json.loads(path.read_text())


def _validator(path: Path, schema_name: str):
    spec = _load(path)
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    cls = jsonschema.validators.validator_for({"$schema": "https://json-schema.org/draft/2020-12/schema"})
    return cls(schema)


def _assert_valid(path: Path, schema_name: str, body: dict) -> None:
    errors = sorted(_validator(path, schema_name).iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5])


SCHEMA = {"type": "object", "properties": {"order_no": {"type": "string"}}, "required": ["order_no"]}


def _full_conversation() -> list[Message]:
    return [
        Message.system("You are a shop assistant."),
        Message.user("Where is order A-118?", ImagePart(data="iVBORw0KGgo=", media_type="image/png"), ImagePart(url="https://example.com/receipt.jpg")),
        Message("assistant", [ReasoningPart("Look it up.", "EqQBsig"), TextPart("Checking.")], [ToolCall("call_k3J9", "lookup_order", '{"order_no":"A-118"}', "CiQB0e2Kb"), ToolCall("call_2", "lookup_order", '{"order_no":"B-2"}')]),
        Message.tool("call_k3J9", '{"status":"shipped"}'),
        Message("tool", [TextPart("not found"), ImagePart(data="R0lGOD", media_type="image/gif")], tool_call_id="call_2", is_error=True),
        Message.user("Thanks. And the other one?"),
    ]


REQUESTS = {
    "worked_example": ChatRequest("m", _full_conversation(), tools=[Tool("lookup_order", "Find an order.", SCHEMA)], max_tokens=300),
    "sampling": ChatRequest("m", [Message.user("hi")], temperature=1.5, top_p=0.9, top_k=40, stop=["END"], seed=7, presence_penalty=0.5, frequency_penalty=0.1, metadata={"user_id": "u1"}, stream=True),
    "forced_tool": ChatRequest("m", [Message.user("hi")], tools=[Tool("f")], tool_choice=ToolChoice("required", "f"), parallel_tool_calls=False),
    "any_tool": ChatRequest("m", [Message.user("hi")], tools=[Tool("f")], tool_choice=ToolChoice("required")),
    "no_tools": ChatRequest("m", [Message.user("hi")], tools=[Tool("f")], tool_choice=ToolChoice("none")),
    "thinking": ChatRequest("m", [Message.user("hi")], reasoning_effort="high"),
    "thinking_off": ChatRequest("m", [Message.user("hi")], reasoning_effort="none"),
    "json_object": ChatRequest("m", [Message.system("S"), Message.system("T"), Message.user("hi")], response_format=ResponseFormat("json_object")),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_anthropic_requests_match_the_messages_spec(name):
    _assert_valid(ANTHROPIC_SPEC, "CreateMessageParams", A.encode_request(REQUESTS[name], "claude-sonnet-4-6"))


def test_anthropic_structured_output():
    """The Jan-2026 spec predates GA ``output_config.format`` (Anthropic SDK 2.x): its
    OutputConfig has only ``effort``. So the format object is checked against the beta
    JsonOutputFormat it came from, and the rest of the body against CreateMessageParams."""
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"], "additionalProperties": False}
    body = A.encode_request(ChatRequest("m", [Message.user("hi")], response_format=ResponseFormat("json_schema", schema)), "claude-x")
    fmt = body.pop("output_config")["format"]
    _assert_valid(ANTHROPIC_SPEC, "BetaJsonOutputFormat", fmt)
    _assert_valid(ANTHROPIC_SPEC, "CreateMessageParams", body)


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_gemini_requests_match_the_generate_content_spec(name):
    body = G.encode_request(REQUESTS[name], "gemini-x")
    # The spec marks ``model`` required in the body; the URL path carries it and SDKs omit it.
    _assert_valid(GEMINI_SPEC, "GenerateContentRequest", {"model": "models/gemini-x", **body})


def test_gemini_structured_output_uses_the_wire_name():
    """The export lists both ``_responseJsonSchema`` and ``responseJsonSchema``; the wire
    field is the latter, and it must validate as such."""
    spec = _load(GEMINI_SPEC)
    assert "responseJsonSchema" in spec["components"]["schemas"]["GenerationConfig"]["properties"]
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}}
    body = G.encode_request(ChatRequest("m", [Message.user("hi")], response_format=ResponseFormat("json_schema", schema)), "gemini-x")
    assert "_responseJsonSchema" not in body["generationConfig"]
    _assert_valid(GEMINI_SPEC, "GenerateContentRequest", {"model": "models/gemini-x", **body})


def test_gemini_embeddings_request_matches_the_spec():
    _, body = G.encode_embeddings_request(["a", "b"], "text-embedding-004")
    _assert_valid(GEMINI_SPEC, "BatchEmbedContentsRequest", body)


def test_anthropic_responses_we_serve_match_the_message_spec():
    from modelport.types import ChatResponse, Usage

    response = ChatResponse("msg_1", "m", Message("assistant", [TextPart("hi")], [ToolCall("call_1", "f", "{}")]), "tool_calls", Usage(10, 5, 2, 1))
    body = A.encode_response(response, "claude-x")
    # The spec requires text blocks' "citations" (nullable), but the real API leaves it out
    # when there are none and strict clients reject a null (tests/dialects/test_wire_fields.py): the
    # spec is checked with the block as the real API sends it.
    for block in body["content"]:
        if block["type"] == "text":
            assert "citations" not in block
            block["citations"] = None
    _assert_valid(ANTHROPIC_SPEC, "Message", body)


def test_gemini_responses_we_serve_match_the_spec():
    from modelport.types import ChatResponse, Usage

    response = ChatResponse("r1", "m", Message("assistant", [ReasoningPart("hm", "S"), TextPart("hi")], [ToolCall("call_1", "f", "{}", "SIG")]), "tool_calls", Usage(10, 5, 2, 0, 1))
    _assert_valid(GEMINI_SPEC, "GenerateContentResponse", G.encode_response(response, "gemini-x"))
