"""The official openai SDK's ``responses.*`` against a live gateway, over every backend kind:
the embedded model, fake Anthropic and Gemini upstreams, and a fake Responses upstream
reached through modelport's own openai-responses client dialect.

Every response object and stream event the gateway sends in these tests is also checked
against OpenAI's spec (when the spec is present).
"""

from __future__ import annotations

import json
import os
import stat
import time
from contextlib import ExitStack
from typing import Any, Iterator, Literal

import httpx
import openai
import pydantic
import pytest

from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.responses_door import ResponsesDoor
from modelport.server.testing import GatewayThread
from modelport.sse import SSEParser
from tests.fakes import anthropic_upstream
from tests.fakes.anthropic_upstream import AnthropicUpstream
from tests.fakes.gemini_upstream import GeminiUpstream, fake_signature
from tests.fakes.openai_upstream import Answer
from tests.fakes.responses_upstream import ResponsesUpstream
from tests.dialects.test_contract_openai import SPEC_PATH, assert_valid

LOCAL = "local/smollm2"
KEYS = {"anthropic": "sk-ant-upstream", "gemini": "gm-upstream-key", "respup": "sk-resp-upstream"}
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
           "strict": True}


class Upstreams:
    def __init__(self, stack: ExitStack) -> None:
        self.anthropic = stack.enter_context(AnthropicUpstream(api_key=KEYS["anthropic"]))
        self.gemini = stack.enter_context(GeminiUpstream(api_key=KEYS["gemini"]))
        self.responses = stack.enter_context(ResponsesUpstream(api_key=KEYS["respup"]))

    def config(self) -> dict[str, Any]:
        return {
            "default_model": LOCAL,
            "aliases": {"claude-fake": "anthropic/claude-fake", "gemini-fake": "gemini/gemini-fake", "resp-fake": "respup/gpt-fake"},
            "providers": {
                "anthropic": {"base_url": self.anthropic.base_url},
                "gemini": {"base_url": self.gemini.base_url_for("v1beta")},
                "respup": {"base_url": self.responses.base_url, "dialect": "openai-responses", "key_env": "RESPUP_KEY"},
            },
        }

    def clear(self) -> None:
        for upstream in (self.anthropic, self.gemini, self.responses):
            upstream.clear()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with ExitStack() as stack:
        yield Upstreams(stack)


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    settings = Settings(log_calls=False, keys_path=str(tmp_path_factory.mktemp("keys") / "gateway.db"), max_tokens=256)
    with GatewayThread(settings, config=upstreams.config(), api_keys=KEYS) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _fresh_upstreams(upstreams: Upstreams) -> None:
    upstreams.clear()


def oa(gw: GatewayThread, key: str = "anything") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def checked(obj: Any) -> dict[str, Any]:
    """The object as the wire had it, checked against the spec's Response schema."""
    data = obj.model_dump(mode="json", exclude_unset=True, by_alias=True) if hasattr(obj, "model_dump") else obj
    if SPEC_PATH.exists():
        assert_valid(data, "Response")
    return data


def raw_events(gw: GatewayThread, body: dict[str, Any], key: str = "anything") -> list[dict[str, Any]]:
    """POST a streamed request with plain httpx; every event checked against the spec."""
    with httpx.stream("POST", gw.url + "/v1/responses", json={**body, "stream": True}, headers={"authorization": f"Bearer {key}"}, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read()
    parser = SSEParser()
    events = []
    for name, data in parser.feed(raw) + parser.close():
        assert data != "[DONE]"
        event = json.loads(data)
        assert name == event["type"]
        if SPEC_PATH.exists():
            assert_valid(event, "ResponseStreamEvent")
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    terminals = [e for e in events if e["type"] in ("response.completed", "response.incomplete", "response.failed")]
    assert len(terminals) == 1 and terminals[0] is events[-1]
    return events


class YesNo(pydantic.BaseModel):
    answer: Literal["yes", "no"]


# -- the embedded model ------------------------------------------------------------------------


def test_local_text_and_echoed_fields(gateway: GatewayThread) -> None:
    response = oa(gateway).responses.create(model=LOCAL, input="Say hi", instructions="Be brief.", max_output_tokens=16,
                                            metadata={"run": "1"}, temperature=0.2, user="u-1", prompt_cache_key="k")
    data = checked(response)
    assert response.output_text and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete") and response.usage.output_tokens <= 16
    assert data["instructions"] == "Be brief." and data["metadata"] == {"run": "1"} and data["temperature"] == 0.2
    assert data["store"] is True and data["user"] == "u-1" and data["prompt_cache_key"] == "k" and data["max_output_tokens"] == 16
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens"


def test_local_tool_round_trip_by_previous_response_id_and_by_history(gateway: GatewayThread) -> None:
    client = oa(gateway)
    first = client.responses.create(model=LOCAL, input="Weather in Paris?", tools=[WEATHER],
                                    tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=40)
    checked(first)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments), dict) and call.call_id != call.id
    result = {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}
    # tool_choice none: the tiny model must answer in words rather than call again.
    chained = client.responses.create(model=LOCAL, previous_response_id=first.id, input=[result], tools=[WEATHER], tool_choice="none",
                                      max_output_tokens=16)
    assert checked(chained)["previous_response_id"] == first.id and chained.output_text


def test_stateless_tool_round_trip_stores_nothing(gateway: GatewayThread, upstreams: Upstreams) -> None:
    """The same turn without state: the caller replays the output items as the SDK returned them."""
    client = oa(gateway)
    first = client.responses.create(model="claude-fake", input="Paris", tools=[WEATHER], tool_choice="required", store=False)
    call = first.output[-1]
    history = [{"role": "user", "content": "Paris"}, *[i.model_dump(exclude_none=True) for i in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}, {"role": "user", "content": "thanks"}]
    stateless = client.responses.create(model="claude-fake", input=history, tools=[WEATHER], store=False)
    assert stateless.output_text == "echo: thanks" and stateless.store is False
    assert upstreams.anthropic.last_request.body["messages"][1]["content"][-1]["id"] == call.call_id
    for response_id in (first.id, stateless.id):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response_id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="claude-fake", input=[{"type": "item_reference", "id": call.id}])


def test_local_parse_with_json_schema(gateway: GatewayThread) -> None:
    parsed = oa(gateway).responses.parse(model=LOCAL, input="Is the sky blue?", text_format=YesNo, max_output_tokens=30)
    assert parsed.output_parsed.answer in ("yes", "no")
    assert checked(parsed)["text"]["format"]["name"] == "YesNo"


def test_local_stream_with_the_sdk_helpers(gateway: GatewayThread) -> None:
    client = oa(gateway)
    with client.responses.stream(model=LOCAL, input="Weather in Rome?", tools=[WEATHER], tool_choice="required", max_output_tokens=40) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    call = final.output[-1]
    assert call.type == "function_call" and json.loads(call.arguments) is not None
    assert client.responses.retrieve(final.id).output[-1].arguments == call.arguments
    events = raw_events(gateway, {"model": LOCAL, "input": "Say hi", "max_output_tokens": 16})
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text and events[-1]["response"]["output"][0]["content"][0]["text"] == text


def test_stored_responses_get_delete_input_items_and_replay(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = oa(gateway)
    created = client.responses.create(model="claude-fake", input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}])
    assert created.output_text == "echo: two"
    assert checked(client.responses.retrieve(created.id)) == checked(created)
    items = client.responses.input_items.list(created.id)
    assert [i.content[0].text for i in items.data] == ["two", "one"]  # newest first by default
    assert [i.content[0].text for i in client.responses.input_items.list(created.id, order="asc", limit=1).data] == ["one"]
    with client.responses.stream(response_id=created.id) as replay:
        assert replay.get_final_response().output_text == "echo: two"
    # Vercel's second turn: earlier items by reference.
    client.responses.create(model="claude-fake", input=[{"type": "item_reference", "id": items.data[1].id},
                                                        {"type": "item_reference", "id": created.output[0].id}, {"role": "user", "content": "three"}])
    assert [(m["role"], m["content"]) for m in upstreams.anthropic.last_request.body["messages"]][:2] == [
        ("user", "one"), ("assistant", [{"type": "text", "text": "echo: two"}])]
    count = client.responses.input_tokens.count(model="claude-fake", input="a b c d")
    assert count.input_tokens > 0
    assert client.responses.delete(created.id) is None
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.retrieve(created.id)
    assert "not found" in gone.value.message and gone.value.body["type"] == "invalid_request_error"


# -- fake Anthropic and Gemini upstreams ----------------------------------------------------------


def test_anthropic_text_stream_and_tools(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = oa(gateway)
    response = client.responses.create(model="claude-fake", input="hello there", instructions="be brief")
    assert response.output_text == "echo: hello there" and response.model == "claude-fake"
    assert upstreams.anthropic.last_request.body["system"] in ("be brief", [{"type": "text", "text": "be brief"}])
    with client.responses.stream(model="claude-fake", input="a b c") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        assert stream.get_final_response().output_text == "echo: a b c" == "".join(deltas)
    first = client.responses.create(model="claude-fake", input="Paris", tools=[WEATHER], tool_choice="required")
    call = first.output[-1]
    assert call.type == "function_call" and json.loads(call.arguments) == {"echo": "Paris"}
    final = client.responses.create(model="claude-fake", previous_response_id=first.id, tools=[WEATHER],
                                    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
                                           {"role": "user", "content": "thanks"}])
    assert final.output_text == "echo: thanks"
    sent = upstreams.anthropic.last_request.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][-1]["type"] == "tool_use" and sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.call_id, "content": "sunny"}


def test_anthropic_thinking_signature_round_trips_through_encrypted_content(gateway: GatewayThread, upstreams: Upstreams) -> None:
    upstreams.anthropic.script(Answer(text="ok", reasoning="deep thought"))
    client = oa(gateway)
    first = client.responses.create(model="claude-fake", input="think", store=False, include=["reasoning.encrypted_content"])
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "deep thought" and reasoning.encrypted_content
    client.responses.create(model="claude-fake", store=False,
                            input=[{"role": "user", "content": "think"}, *[i.model_dump(exclude_none=True) for i in first.output],
                                   {"role": "user", "content": "again"}])
    replayed = upstreams.anthropic.last_request.body["messages"][1]["content"][0]
    assert replayed == {"type": "thinking", "thinking": "deep thought", "signature": "fake-signature"}


def test_gemini_thought_signature_round_trips_by_previous_response_id(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = oa(gateway)
    first = client.responses.create(model="gemini-fake", input="Paris", tools=[WEATHER], tool_choice="required")
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    with client.responses.stream(model="gemini-fake", input="Paris", tools=[WEATHER], tool_choice="required") as stream:
        assert stream.get_final_response().output[-1].name == "get_weather"
    client.responses.create(model="gemini-fake", previous_response_id=first.id, tools=[WEATHER],
                            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    contents = upstreams.gemini.last_request.body["contents"]
    model_parts = next(c["parts"] for c in contents if c["role"] == "model")
    assert model_parts[0]["functionCall"]["name"] == "get_weather" and model_parts[0]["thoughtSignature"] == fake_signature(0)


def test_structured_output_through_gemini(gateway: GatewayThread, upstreams: Upstreams) -> None:
    upstreams.gemini.script('{"answer": "yes"}')
    parsed = oa(gateway).responses.parse(model="gemini-fake", input="sky blue?", text_format=YesNo)
    assert parsed.output_parsed == YesNo(answer="yes")
    assert upstreams.gemini.last_request.body["generationConfig"]["responseMimeType"] == "application/json"


# -- a Responses upstream, through modelport's client dialect -----------------------------------------


def test_responses_upstream_text_stream_tools_and_reasoning(gateway: GatewayThread, upstreams: Upstreams) -> None:
    client = oa(gateway)
    response = client.responses.create(model="resp-fake", input="hello you", max_output_tokens=50)
    assert response.output_text == "echo: hello you" and not response.id.startswith("resp_fake")
    sent = upstreams.responses.last_request
    assert sent.headers["authorization"] == f"Bearer {KEYS['respup']}" and sent.body["store"] is False
    assert sent.body["max_output_tokens"] == 50
    with client.responses.stream(model="resp-fake", input="x y z") as stream:
        assert stream.get_final_response().output_text == "echo: x y z"
    first = client.responses.create(model="resp-fake", input="Paris", tools=[WEATHER], tool_choice="required", reasoning={"effort": "low"})
    assert [i.type for i in first.output] == ["reasoning", "function_call"]
    assert first.output[0].encrypted_content.startswith("gAAAA-fake")
    call = first.output[1]
    client.responses.create(model="resp-fake", previous_response_id=first.id, tools=[WEATHER],
                            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    # The upstream's own reasoning state went back to it, as it gave it.
    assert upstreams.responses.replayed_reasoning[-1]["encrypted_content"] == first.output[0].encrypted_content
    sent_input = upstreams.responses.last_request.body["input"]
    assert [i.get("type") for i in sent_input] == ["message", "reasoning", "function_call", "function_call_output"]


def test_responses_upstream_incomplete_and_failure_mid_stream(gateway: GatewayThread, upstreams: Upstreams) -> None:
    upstreams.responses.script(Answer(text="cut short", finish_reason="max_output_tokens"))
    events = raw_events(gateway, {"model": "resp-fake", "input": "long", "max_output_tokens": 16})
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    upstreams.responses.fail_mid_stream()
    events = raw_events(gateway, {"model": "resp-fake", "input": "hi"})
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert "crashed" in events[-1]["response"]["error"]["message"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "partial "


# -- errors ------------------------------------------------------------------------------------------


def test_bad_input_gets_openai_errors_never_500(gateway: GatewayThread) -> None:
    client = oa(gateway)
    cases: list[tuple[dict[str, Any], type[Exception], str | None]] = [
        ({"input": "hi", "temperature": "hot"}, openai.BadRequestError, "temperature"),
        ({"input": 3}, openai.BadRequestError, "input"),
        ({"input": [{"type": "nonsense"}]}, openai.BadRequestError, "input[0].type"),
        ({"input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, openai.BadRequestError, "tools[0].type"),
        ({"input": "hi", "background": True}, openai.BadRequestError, "background"),
        ({"input": "hi", "previous_response_id": "resp_unknown"}, openai.BadRequestError, "previous_response_id"),
        ({"input": [{"type": "item_reference", "id": "msg_unknown"}]}, openai.NotFoundError, "input[0].id"),
    ]
    for extra, error, param in cases:
        with pytest.raises(error) as caught:
            client.responses.create(model="claude-fake", **extra)
        assert caught.value.param == param, extra
        assert set(caught.value.body) >= {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as missing:
        client.responses.create(model="claude-fake", input="hi", previous_response_id="resp_unknown")
    assert missing.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="no-such-model", input="hi")
    assert unknown.value.code == "model_not_found"
    for body in (b"not json", b"[1, 2]", b"{}"):
        r = httpx.post(gateway.url + "/v1/responses", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.put(gateway.url + "/v1/responses/resp_x").status_code == 405


def test_web_search_from_codex_is_dropped(gateway: GatewayThread, upstreams: Upstreams) -> None:
    response = oa(gateway).responses.create(model="claude-fake", input="hi", tools=[{"type": "web_search"}, WEATHER],
                                            store=False, include=["reasoning.encrypted_content"], reasoning=None)
    assert response.output_text == "echo: hi"
    assert [t["name"] for t in upstreams.anthropic.last_request.body["tools"]] == ["get_weather"]


def test_backend_failure_mid_stream_ends_with_response_failed(gateway: GatewayThread, upstreams: Upstreams) -> None:
    upstreams.anthropic.inject(anthropic_upstream.error_mid_stream())
    events = raw_events(gateway, {"model": "claude-fake", "input": "hi"})
    assert events[-2]["type"] == "error" and "Overloaded" in events[-2]["message"]
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["status"] == "failed"
    upstreams.anthropic.inject(anthropic_upstream.error_mid_stream())
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(oa(gateway).responses.create(model="claude-fake", input="hi", stream=True))


# -- keys, storage, expiry -------------------------------------------------------------------------


def test_a_stored_response_belongs_to_its_key(upstreams: Upstreams, tmp_path) -> None:
    keys = KeyStore(tmp_path / "gateway.db")
    alice, bob = keys.create("alice"), keys.create("bob")
    settings = Settings(log_calls=True, keys_path=str(tmp_path / "gateway.db"), auth=True, responses_ttl_days=1.5 / 86400)
    with GatewayThread(settings, config=upstreams.config(), api_keys=KEYS) as gw:
        mine = oa(gw, alice).responses.create(model="claude-fake", input="secret")
        assert oa(gw, alice).responses.retrieve(mine.id).output_text == "echo: secret"
        for call in (lambda c: c.responses.retrieve(mine.id), lambda c: c.responses.input_items.list(mine.id),
                     lambda c: c.responses.delete(mine.id),
                     lambda c: c.responses.create(model="claude-fake", input="x", previous_response_id=mine.id)):
            with pytest.raises((openai.NotFoundError, openai.BadRequestError)):
                call(oa(gw, bob))
        with pytest.raises(openai.AuthenticationError):
            oa(gw, "mpk_wrong").responses.create(model="claude-fake", input="x")
        db = gw.app.find_door(ResponsesDoor).store.path
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
        time.sleep(2.0)
        with pytest.raises(openai.NotFoundError):
            oa(gw, alice).responses.retrieve(mine.id)
        metrics = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {alice}"}).text
        assert 'door="responses"' in metrics
        log = gw.app.call_log
    log.flush(5)
    calls = log.query(limit=10)
    assert any(c.model == "claude-fake" and "secret" in json.dumps(c.to_dict()) for c in calls)


def test_a_key_at_its_stored_responses_limit_is_refused_before_the_model_is_called(upstreams: Upstreams, tmp_path) -> None:
    keys = KeyStore(tmp_path / "gateway.db")
    alice, bob = keys.create("alice"), keys.create("bob")
    settings = Settings(log_calls=False, keys_path=str(tmp_path / "gateway.db"), auth=True, max_stored_responses=2)
    with GatewayThread(settings, config=upstreams.config(), api_keys=KEYS) as gw:
        kept = [oa(gw, alice).responses.create(model="claude-fake", input=f"turn {i}") for i in range(2)]
        asked = len(upstreams.anthropic.requests)
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as refused:
                oa(gw, alice).responses.create(model="claude-fake", input="one more", stream=stream)
            assert refused.value.status_code == 400 and refused.value.code == "stored_responses_limit"
            message = str(refused.value)
            assert "max_stored_responses" in message and "DELETE /v1/responses/{id}" in message and "store: false" in message
        assert len(upstreams.anthropic.requests) == asked  # refused before the model cost anything
        # The way out the error names, each of them; and the limit is per key.
        assert oa(gw, alice).responses.create(model="claude-fake", input="unkept", store=False).output_text == "echo: unkept"
        assert oa(gw, bob).responses.create(model="claude-fake", input="bob's").output_text == "echo: bob's"
        oa(gw, alice).responses.delete(kept[0].id)
        assert oa(gw, alice).responses.create(model="claude-fake", input="again").output_text == "echo: again"
    tiny = Settings(log_calls=False, keys_path=str(tmp_path / "gateway.db"), auth=True, max_stored_mb=0.0001)
    with GatewayThread(tiny, config=upstreams.config(), api_keys=KEYS) as gw:
        with pytest.raises(openai.BadRequestError, match="max_stored_mb"):
            oa(gw, alice).responses.create(model="claude-fake", input="too much")  # alice keeps 2 responses over 100 bytes


def test_a_codex_turn_as_codex_sends_it(gateway: GatewayThread, upstreams: Upstreams) -> None:
    """Codex's stateless second turn, as Codex sends it: store false, a reasoning item with no id
    and ``content: null``, a call with no id, web_search among the tools, always streamed."""
    body = {
        "model": "claude-fake", "instructions": "You are Codex.", "store": False, "tool_choice": "auto", "parallel_tool_calls": False,
        "reasoning": None, "include": [], "prompt_cache_key": "019a7be4-e711-7321-bd0e-4da047d93414",
        "tools": [{"type": "function", "name": "shell", "description": "Runs a shell command", "strict": False,
                   "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                                  "required": ["command"], "additionalProperties": False}},
                  {"type": "web_search", "external_web_access": False}],
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sandbox: read-only"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what time is it?"}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "**Checking the clock**"}], "content": None, "encrypted_content": "gAAAABp-foreign"},
            {"type": "function_call", "name": "shell", "arguments": "{\"command\":[\"date\"]}", "call_id": "call_Zl5v"},
            {"type": "function_call_output", "call_id": "call_Zl5v", "output": "Fri Aug 21 10:00:00 UTC 2026"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
        ],
    }
    events = raw_events(gateway, body)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert done == events[-1]["response"]["output"] and done[0]["content"][0]["text"] == "echo: thanks"
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["store"] is False
    sent = upstreams.anthropic.last_request.body
    system = json.dumps(sent["system"])
    assert system.index("You are Codex.") < system.index("sandbox: read-only")
    assert [t["name"] for t in sent["tools"]] == ["shell"]
    # Another provider's reasoning (OpenAI's blob) is not sent to Anthropic as a thinking block.
    assert all(b.get("type") != "thinking" for m in sent["messages"] for b in (m["content"] if isinstance(m["content"], list) else []))
