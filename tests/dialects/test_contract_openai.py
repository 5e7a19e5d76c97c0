"""Contract tests: what the OpenAI dialect and the fake upstream put on the wire is what
OpenAI's own OpenAPI spec, and OpenAI's own SDK, accept.

The spec lives outside the repository (``openai/openapi.yaml`` in the specs directory, see
tests/specs.py); when it is absent the spec checks are skipped, the SDK checks still run.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport import errors
from modelport.dialects import openai as oa
from modelport.sse import SSEParser
from modelport.types import ChatRequest, Embedding, EmbeddingResponse, Message, ModelInfo, StreamEvent, Usage
from tests.fakes.openai_upstream import Answer, OpenAIUpstream, fake_vector, openai_error, rate_limited
from tests.specs import missing, spec_path
from tests.fakes.server import FakeServer, Reply, cut_stream, drop_connection, http_error, malformed_json, stall_stream
from tests.dialects.test_dialect_openai import as_stream_events, chat_requests, chat_responses

SPEC_PATH = spec_path("openai/openapi.yaml")
needs_spec = pytest.mark.skipif(not SPEC_PATH.exists(), reason=missing(SPEC_PATH))


@lru_cache(maxsize=1)
def spec_components() -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(SPEC_PATH, encoding="utf-8") as f:
        return _with_nullable_as_null_type(yaml.load(f, Loader=loader)["components"])


def _with_nullable_as_null_type(node: Any) -> Any:
    """The spec still writes OpenAPI 3.0's ``nullable: true``, which JSON Schema ignores; spell
    it the 3.1 way so ``null`` values the spec allows (e.g. ``"usage": null``) validate."""
    if isinstance(node, list):
        return [_with_nullable_as_null_type(n) for n in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _with_nullable_as_null_type(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@lru_cache(maxsize=None)
def validator(schema_name: str):
    import jsonschema

    root = {"components": spec_components(), "$ref": f"#/components/schemas/{schema_name}"}
    return jsonschema.Draft202012Validator(root)


def assert_valid(instance: Any, schema_name: str) -> None:
    problems = sorted(validator(schema_name).iter_errors(instance), key=lambda e: e.path)
    assert not problems, f"{schema_name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in problems[:3])


def sse_chunks(stream: bytes) -> list[dict]:
    return [json.loads(data) for _, data in SSEParser().feed(stream) if data != "[DONE]"]


# ---------------------------------------------------------------------------------------
# The dialect against the spec
# ---------------------------------------------------------------------------------------


@needs_spec
def test_the_validator_rejects_what_the_spec_forbids():
    # Guards against a validator that silently accepts everything (a broken $ref, say).
    with pytest.raises(AssertionError, match="messages"):
        assert_valid({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "CreateChatCompletionRequest")
    with pytest.raises(AssertionError):
        assert_valid({"model": "m"}, "CreateChatCompletionRequest")


@needs_spec
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_requests)
def test_encoded_requests_follow_the_spec(req: ChatRequest):
    assert_valid(oa.encode_request(req, req.model), "CreateChatCompletionRequest")


@needs_spec
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_responses())
def test_encoded_responses_follow_the_spec(resp):
    assert_valid(oa.encode_response(resp, "gateway/model"), "CreateChatCompletionResponse")


@needs_spec
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_responses(), st.booleans(), st.data())
def test_encoded_stream_chunks_follow_the_spec(resp, include_usage, data):
    encoder = oa.StreamEncoder("gateway/model", include_usage)
    stream = b"".join(encoder.encode(e) for e in as_stream_events(resp, data.draw)) + encoder.close()
    assert stream.endswith(b"data: [DONE]\n\n")
    for chunk in sse_chunks(stream):
        assert_valid(chunk, "CreateChatCompletionStreamResponse")


@needs_spec
@pytest.mark.parametrize(
    "exc",
    [errors.BadRequestError("bad", param="temperature"), errors.QuotaExceededError("pay"), errors.OverloadedError("busy", retry_after=2), ValueError("bug")],
)
def test_error_bodies_follow_the_spec(exc):
    assert_valid(oa.encode_error(exc)[1], "ErrorResponse")
    encoder = oa.StreamEncoder("m")
    assert_valid(sse_chunks(encoder.error(exc))[0], "ErrorResponse")


@needs_spec
def test_models_and_embeddings_follow_the_spec():
    assert_valid(oa.encode_models([ModelInfo("openai/gpt-4o", "openai"), ModelInfo("local/smollm2", "local", context_length=8192)]), "ListModelsResponse")
    assert_valid(oa.encode_embeddings_request(["a", "b"], "text-embedding-3-small", 64)[1], "CreateEmbeddingRequest")
    resp = EmbeddingResponse("e", [Embedding(0, [0.1, 0.2])], Usage(2))
    assert_valid(oa.encode_embeddings_response(resp, "float"), "CreateEmbeddingResponse")


# ---------------------------------------------------------------------------------------
# The fake upstream: the same contract, and what the official SDK makes of it
# ---------------------------------------------------------------------------------------


@pytest.fixture
def upstream():
    with OpenAIUpstream(api_key="sk-test") as server:
        yield server


@pytest.fixture
def sdk(upstream):
    return openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0, timeout=5)


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def test_the_fake_echoes_the_last_user_message(sdk):
    reply = sdk.chat.completions.create(model="gpt-fake", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}])
    assert reply.choices[0].message.content == "echo: Hello there"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 3)


def test_the_fake_calls_a_forced_tool_with_the_user_text(sdk):
    reply = sdk.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "Oslo"}], tools=TOOLS, tool_choice="required")
    call = reply.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments), reply.choices[0].finish_reason) == ("get_weather", {"echo": "Oslo"}, "tool_calls")


def test_requests_from_the_official_sdk_decode_on_the_gateway_side(sdk, upstream):
    sdk.chat.completions.create(
        model="gpt-fake", messages=[{"role": "developer", "content": "Terse."}, {"role": "user", "content": "Oslo?"}],
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_completion_tokens=20,
        stream=True, stream_options={"include_usage": True}, temperature=0.3,
    ).close()
    req = oa.decode_request(upstream.last_request.body)
    assert req.messages == [Message.system("Terse."), Message.user("Oslo?")]
    assert (req.max_tokens, req.temperature, req.stream, req.tool_choice.name) == (20, 0.3, True, "get_weather")
    assert oa.stream_include_usage(upstream.last_request.body)
    assert upstream.last_request.headers["authorization"] == "Bearer sk-test"


def test_the_official_sdk_reads_what_the_gateway_side_writes():
    events = [StreamEvent("text", text="Hi "), StreamEvent("text", text="there"), StreamEvent("tool_call", index=0, id="call_1", name="f", arguments='{"a":1}'), StreamEvent("finish", finish_reason="tool_calls", usage=Usage(5, 3))]

    def gateway(request):
        encoder = oa.StreamEncoder(request.body["model"], oa.stream_include_usage(request.body))
        return Reply.stream([encoder.encode(e) for e in events] + [encoder.close()])

    with FakeServer() as server:
        server.route("POST", "/v1/chat/completions", gateway)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi there"
    assert chunks[-1].usage.total_tokens == 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_scripted_answers_stream_in_order(sdk, upstream):
    upstream.script(Answer("first answer", reasoning="hmm", cached_tokens=2, prompt_tokens=9, completion_tokens=4, reasoning_tokens=1), "second")
    stream = sdk.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "x"}], stream=True, stream_options={"include_usage": True})
    decoder = oa.StreamDecoder("fake")
    # The SDK's chunk objects are the dicts the wire carried: feed_json takes them as they are.
    events = [e for chunk in stream for e in decoder.feed_json(chunk.model_dump(exclude_unset=True))]
    text = "".join(e.text for e in events if e.kind == "text")
    assert text == "first answer"
    assert [e.usage for e in events if e.kind == "usage"] == [Usage(9, 4, cached_tokens=2, reasoning_tokens=1)]
    assert sdk.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "y"}]).choices[0].message.content == "second"


@needs_spec
def test_the_fake_answers_follow_the_spec(upstream):
    with httpx.Client(base_url=upstream.base_url, headers={"authorization": "Bearer sk-test"}) as client:
        body = {"model": "gpt-fake", "messages": [{"role": "user", "content": "Oslo"}], "tools": TOOLS, "tool_choice": "required"}
        assert_valid(client.post("/chat/completions", json=body).json(), "CreateChatCompletionResponse")
        stream = client.post("/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}).content
        for chunk in sse_chunks(stream):
            assert_valid(chunk, "CreateChatCompletionStreamResponse")
        assert_valid(client.get("/models").json(), "ListModelsResponse")
        assert_valid(client.post("/embeddings", json={"model": "e", "input": "x"}).json(), "CreateEmbeddingResponse")
        assert_valid(client.get("/models/gpt-9").json(), "ErrorResponse")


def test_the_fake_models_and_embeddings(sdk):
    assert [m.id for m in sdk.models.list().data] == ["gpt-fake", "gpt-fake-mini"]
    # The SDK asks for base64 by default and decodes it itself.
    vectors = sdk.embeddings.create(model="e", input=["a", "b"], dimensions=4).data
    assert [v.embedding for v in vectors] == [fake_vector("a", 4), fake_vector("b", 4)]
    assert sdk.embeddings.create(model="e", input="a", encoding_format="float").data[0].embedding == fake_vector("a")


def test_the_fake_rejects_a_wrong_key_as_openai_does(upstream):
    bad = openai.OpenAI(base_url=upstream.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.code == "invalid_api_key"
    assert isinstance(oa.decode_error(401, caught.value.response.content, caught.value.response.headers, "fake"), errors.AuthenticationError)


def test_injected_openai_errors_reach_the_sdk_and_the_dialect(sdk, upstream):
    upstream.inject(rate_limited(0.25), openai_error(429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota"))
    with pytest.raises(openai.RateLimitError) as first:
        sdk.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "x"}])
    limited = oa.decode_error(429, first.value.response.content, first.value.response.headers, "fake")
    assert type(limited) is errors.RateLimitError and limited.retry_after == 0.25
    with pytest.raises(openai.RateLimitError) as second:
        sdk.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "x"}])
    assert type(oa.decode_error(429, second.value.response.content, {}, "fake")) is errors.QuotaExceededError
    assert upstream.request_count == 2 and upstream.pending_faults == 0


# ---------------------------------------------------------------------------------------
# The generic server's faults, seen by a plain HTTP client
# ---------------------------------------------------------------------------------------


@pytest.fixture
def server():
    with FakeServer() as srv:
        srv.route("POST", "/echo", lambda r: Reply.json({"got": r.body}))
        srv.route("GET", "/items/(?P<item>[^/]+)", lambda r: Reply.json({"item": r.params["item"], "q": r.query}))
        srv.route("GET", "/events", lambda r: Reply.stream([b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]))
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=2) as c:
        yield c


def test_requests_are_recorded_and_routes_see_path_params(server, client):
    assert client.post("/echo", json={"a": 1}, headers={"X-Trace": "t1"}).json() == {"got": {"a": 1}}
    assert client.get("/items/42", params={"v": "2"}).json() == {"item": "42", "q": {"v": "2"}}
    first = server.requests[0]
    assert (first.method, first.path, first.body, first.headers["x-trace"]) == ("POST", "/echo", {"a": 1}, "t1")
    assert server.request_count == 2 and server.last_request.query == {"v": "2"}
    assert client.get("/nowhere").status_code == 404


def test_status_faults_apply_to_the_next_requests_in_order(server, client):
    server.inject(http_error(503, "busy"), http_error(429, {"error": "slow"}, {"retry-after": "1"}), times=1)
    first, second, third = (client.post("/echo", json={}) for _ in range(3))
    assert (first.status_code, first.text) == (503, "busy")
    assert (second.status_code, second.headers["retry-after"], second.json()) == (429, "1", {"error": "slow"})
    assert third.status_code == 200


def test_the_same_fault_can_repeat(server, client):
    server.inject(http_error(500), times=2)
    assert [client.post("/echo", json={}).status_code for _ in range(3)] == [500, 500, 200]


def test_a_dropped_connection(server, client):
    server.inject(drop_connection())
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/echo", json={})
    assert client.post("/echo", json={}).status_code == 200


def test_a_malformed_json_body(server, client):
    server.inject(malformed_json())
    with pytest.raises(json.JSONDecodeError):
        client.post("/echo", json={}).json()


def test_a_stream_cut_midway(server, client):
    server.inject(cut_stream(after=2))
    received = []
    with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", "/events") as response:
        for chunk in response.iter_bytes():
            received.append(chunk)
    assert b"".join(received) == b"data: 1\n\ndata: 2\n\n"


def test_a_stream_that_stalls(server, client):
    server.inject(stall_stream(after=1))
    received = []
    with pytest.raises(httpx.ReadTimeout), client.stream("GET", "/events", timeout=0.3) as response:
        for chunk in response.iter_bytes():
            received.append(chunk)
    assert received == [b"data: 1\n\n"]


def test_latency_delays_every_answer(server, client):
    import time

    server.latency = 0.2
    started = time.perf_counter()
    client.post("/echo", json={})
    assert time.perf_counter() - started >= 0.2


def test_clear_forgets_requests_and_faults(server, client):
    client.post("/echo", json={})
    server.inject(http_error(500))
    server.clear()
    assert (server.request_count, len(server.requests), server.pending_faults) == (0, 0, 0)
    assert client.post("/echo", json={}).status_code == 200
