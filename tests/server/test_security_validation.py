"""Security issue #9 items 12, 15, 16, 17 and 18: input is validated once, in the canonical
layer, with a 400 naming the field; upstream JSON of the wrong shape is a 502 (an error
event mid-stream, an error row in the call log, an UpstreamProtocolError in the SDK); one
odd call never costs other calls their log rows; errors never show the internal upstream URL.

Everything runs for real: the gateway on a loopback port (``GatewayThread``), the fake
upstreams of tests/fakes, SQLite call logs in the test's own directory.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Iterator

import httpx
import pytest

from modelport import Client
from modelport.calllog import CallLog
from modelport.errors import BadRequestError, ConnectionError, UpstreamProtocolError
from modelport.server import Settings
from modelport.server.testing import GatewayThread
from modelport.types import ChatRequest, ChatResponse, Message, TextPart, Usage
from tests.fakes.anthropic_upstream import AnthropicUpstream
from tests.fakes.gemini_upstream import GeminiUpstream
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.fakes.server import FakeServer, bad_stream, malformed_json, wrong_shape

KEYS = {"openai": "sk-oa-0123456789", "anthropic": "sk-ant-0123456789", "gemini": "g-0123456789abcdef"}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, FakeServer]]:
    with OpenAIUpstream() as oa, AnthropicUpstream() as an, GeminiUpstream() as gm:
        yield {"openai": oa, "anthropic": an, "gemini": gm}


def _base_urls(upstreams: dict[str, Any]) -> dict[str, str]:
    return {"openai": upstreams["openai"].base_url, "anthropic": upstreams["anthropic"].base_url,
            "gemini": upstreams["gemini"].base_url_for("v1beta")}


def _config(upstreams: dict[str, Any]) -> dict[str, Any]:
    return {
        "aliases": {"oa": "openai/gpt-fake", "an": "anthropic/claude-fake", "gm": "gemini/gemini-fake",
                    "emb": "openai/text-embedding-fake", "gemb": "gemini/gemini-fake"},
        "providers": {name: {"base_url": url} for name, url in _base_urls(upstreams).items()},
    }


@pytest.fixture()
def gateway(upstreams: dict[str, FakeServer]) -> Iterator[GatewayThread]:
    """Per test, so its call log is the test's own (conftest isolates MODELPORT_LOG_PATH)."""
    for fake in upstreams.values():
        fake.clear()
    settings = Settings(log_calls=True, max_tokens=256)
    with GatewayThread(settings, config=_config(upstreams), api_keys=KEYS) as gw:
        yield gw


def _post(gw: GatewayThread, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(gw.url + path, content=json.dumps(body), timeout=30, **kwargs)


def _logged(gw: GatewayThread) -> list[Any]:
    assert gw.app is not None and gw.app.call_log is not None
    assert gw.app.call_log.flush(10)
    return gw.app.call_log.query(limit=None)


def _logged_soon(gw: GatewayThread, n: int) -> list[Any]:
    """The log once it holds ``n`` rows: a stream's row is recorded just after its last
    byte is sent, so the caller may read the answer before the row is queued."""
    deadline = time.monotonic() + 10
    while len(rows := _logged(gw)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return rows


# -- item 12: parts are validated at the door; one bad row never costs the others theirs -------------


@pytest.mark.parametrize("text", [["a", "b"], 5, {"t": 1}])
def test_gemini_part_with_non_string_text_is_a_400_naming_the_field(gateway: GatewayThread, text: Any) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "ok"}, {"text": text}]}]}
    response = _post(gateway, "/v1beta/models/gm:generateContent", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert "contents[0].parts[1].text" in error["message"] and "string" in error["message"]
    assert _logged(gateway) == []  # refused at the door: nothing reached an upstream or the log


def test_gemini_part_fields_are_type_checked(gateway: GatewayThread) -> None:
    cases = {
        "thought": {"text": "x", "thought": "yes"},
        "inlineData": {"inlineData": "AAAA"},
        "inlineData.data": {"inlineData": {"mimeType": "image/png", "data": 7}},
        "fileData.fileUri": {"fileData": {"fileUri": ["u"]}},
        "thoughtSignature": {"text": "x", "thoughtSignature": 1},
    }
    for field, part in cases.items():
        body = {"contents": [{"role": "user", "parts": [part]}]}
        response = _post(gateway, "/v1beta/models/gm:generateContent", body)
        assert response.status_code == 400, (field, response.text)
        assert f"contents[0].parts[0].{field}" in response.json()["error"]["message"]
    body = {"contents": [{"parts": [{"text": "hi"}]}], "systemInstruction": {"parts": [{"text": ["a"]}]}}
    response = _post(gateway, "/v1beta/models/gm:generateContent", body)
    assert response.status_code == 400 and "systemInstruction.parts[0].text" in response.json()["error"]["message"], response.text


def _call(text: Any, usage: Usage | None = None) -> tuple[ChatRequest, ChatResponse]:
    request = ChatRequest("m", [Message("user", [TextPart(text)])])
    return request, ChatResponse("r", "m", Message.assistant("ok"), usage=usage or Usage(3, 1))


def test_call_log_writer_isolates_a_row_it_cannot_write(tmp_path: Any) -> None:
    log = CallLog(tmp_path / "calls.db")
    good = []
    try:
        for i in range(300):
            if i == 100:
                # A part whose text is no string: building its row fails.
                log.record(*_call(["a", "b"]), provider="openai", model="m", source="sdk")
            elif i == 200:
                # A count beyond SQLite's 64-bit INTEGER: the INSERT itself fails.
                log.record(*_call("huge", Usage(2**70, 1)), provider="openai", model="m", source="sdk")
            else:
                good.append(log.record(*_call(f"call {i}"), provider="openai", model="m", source="sdk"))
        assert log.flush(30)
        stored = {call.id for call in log.query(limit=None)}
    finally:
        log.close(5)
    assert len(stored) == len(good) == 298
    assert stored == set(good)


# -- item 15: upstream JSON of the wrong shape ---------------------------------------------------------


WRONG_SHAPES = {
    "openai": [{"choices": "nope"}, {"choices": [{"message": "x"}]}, {"choices": [{"message": {"content": [{"type": "text", "text": 5}]}}]},
               [1, 2], {"choices": [{"message": {"tool_calls": [{"function": {"name": 3}}]}}]}],
    "anthropic": [{"content": "nope"}, {"content": [{"type": "tool_use"}]}, {"content": [{"type": "text", "text": ["a"]}]},
                  {"content": [], "usage": {"input_tokens": "many"}}],
    "gemini": [{"candidates": "nope"}, {"candidates": [{"content": {"parts": [{"text": ["a", "b"]}]}}]},
               {"candidates": [{"content": {"parts": "abc"}}]}, {"candidates": [], "usageMetadata": {"promptTokenCount": "x1"}}],
}
MODELS = {"openai": "oa", "anthropic": "an", "gemini": "gm"}


@pytest.mark.parametrize("provider", sorted(WRONG_SHAPES))
def test_wrong_shaped_answer_is_a_502_in_the_callers_dialect_and_an_error_row(gateway: GatewayThread, upstreams: dict[str, Any], provider: str) -> None:
    fake = upstreams[provider]
    for shape in WRONG_SHAPES[provider]:
        fake.inject(wrong_shape(shape))
        response = _post(gateway, "/v1/chat/completions", {"model": MODELS[provider], "messages": HI})
        assert response.status_code == 502, (shape, response.text)
        error = response.json()["error"]
        assert error["type"] == "server_error" and provider in error["message"], error
        # The Anthropic door answers in its own shape, with the same status.
        fake.inject(wrong_shape(shape))
        response = _post(gateway, "/v1/messages", {"model": MODELS[provider], "max_tokens": 10, "messages": HI})
        assert response.status_code == 502 and response.json()["type"] == "error", response.text
    rows = _logged(gateway)
    assert len(rows) == 2 * len(WRONG_SHAPES[provider])
    assert all(row.error_kind == "server" and row.provider == provider and row.response is None for row in rows)


BAD_CHUNKS = {
    "openai": ({"id": "c1", "model": "gpt-fake", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}, [1, 2]),
    "anthropic": ({"type": "message_start", "message": {"id": "msg_1", "model": "claude-fake", "usage": {"input_tokens": 1}}}, [1, 2]),
    "gemini": ({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]}, {"candidates": [{"content": {"parts": [{"text": 5}]}}]}),
}


@pytest.mark.parametrize("provider", sorted(BAD_CHUNKS))
def test_wrong_shaped_stream_chunk_ends_with_an_error_event_and_an_error_row(gateway: GatewayThread, upstreams: dict[str, Any], provider: str) -> None:
    good, bad = BAD_CHUNKS[provider]
    upstreams[provider].inject(bad_stream(good, bad, good))
    body = {"model": MODELS[provider], "messages": HI, "stream": True}
    response = _post(gateway, "/v1/chat/completions", body)
    assert response.status_code == 200
    payloads = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    errors = [json.loads(p)["error"] for p in payloads if p != "[DONE]" and "error" in json.loads(p)]
    assert len(errors) == 1 and "does not match its API" in errors[0]["message"], response.text
    assert payloads[-1] != "[DONE]"  # the answer did not end as if it were whole
    [row] = _logged_soon(gateway, 1)
    assert row.error_kind == "server" and row.response is None


@pytest.mark.parametrize("provider", sorted(BAD_CHUNKS))
def test_first_stream_chunk_of_the_wrong_shape_is_a_502(gateway: GatewayThread, upstreams: dict[str, Any], provider: str) -> None:
    upstreams[provider].inject(bad_stream([1, 2]))
    response = _post(gateway, "/v1/chat/completions", {"model": MODELS[provider], "messages": HI, "stream": True})
    assert response.status_code == 502, response.text


@pytest.mark.parametrize("provider", sorted(WRONG_SHAPES))
def test_sdk_raises_upstream_protocol_error_for_wrong_shapes(upstreams: dict[str, Any], provider: str) -> None:
    fake = upstreams[provider]
    good, bad = BAD_CHUNKS[provider]
    with Client(api_keys=KEYS, base_urls=_base_urls(upstreams), max_retries=0, config=_config(upstreams)) as client:
        fake.inject(wrong_shape(WRONG_SHAPES[provider][0]))
        with pytest.raises(UpstreamProtocolError) as caught:
            client.chat(MODELS[provider], "hi")
        assert caught.value.status == 502 and caught.value.provider == provider
        fake.inject(bad_stream(good, bad))
        with pytest.raises(UpstreamProtocolError):
            list(client.stream(MODELS[provider], "hi"))


EMBEDDING_SHAPES = {"openai": [{"data": "x"}, {"data": [{"embedding": ["a"]}]}, {"data": [{"embedding": 5}]}],
                    "gemini": [{"embeddings": "x"}, {"embeddings": [{"values": [{"x": 1}]}]}, {"embedding": []}]}
EMBEDDING_MODELS = {"openai": "emb", "gemini": "gemb"}


@pytest.mark.parametrize("provider", sorted(EMBEDDING_SHAPES))
def test_embeddings_of_the_wrong_shape_or_not_json_are_a_502_and_an_sdk_error(gateway: GatewayThread, upstreams: dict[str, Any], provider: str) -> None:
    fake = upstreams[provider]
    for fault in [wrong_shape(s) for s in EMBEDDING_SHAPES[provider]] + [malformed_json()]:
        fake.inject(fault)
        response = _post(gateway, "/v1/embeddings", {"model": EMBEDDING_MODELS[provider], "input": ["a", "b"]})
        assert response.status_code == 502, response.text
    with Client(api_keys=KEYS, base_urls=_base_urls(upstreams), max_retries=0, config=_config(upstreams)) as client:
        fake.inject(malformed_json())
        with pytest.raises(UpstreamProtocolError):
            client.embed(EMBEDDING_MODELS[provider], ["a"])
        fake.inject(wrong_shape(EMBEDDING_SHAPES[provider][1]))
        with pytest.raises(UpstreamProtocolError):
            client.embed(EMBEDDING_MODELS[provider], ["a"])


# -- item 16: 500s that must be 400s -------------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def test_deeply_nested_schemas_are_a_400_naming_the_field(gateway: GatewayThread) -> None:
    deep = _nested(400)  # 800 JSON levels: below the JSON parser's own limit, far beyond any real schema
    tool = {"type": "function", "function": {"name": "t", "parameters": deep}}
    cases = [
        ("/v1/chat/completions", {"model": "oa", "messages": HI, "tools": [tool]}, "tools[0].parameters"),
        ("/v1/chat/completions", {"model": "oa", "messages": HI, "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": deep}}},
         "response_format.schema"),
        ("/v1/messages/count_tokens", {"model": "an", "messages": HI, "tools": [{"name": "t", "input_schema": deep}]}, "tools[0].parameters"),
        ("/v1/messages", {"model": "an", "max_tokens": 5, "messages": HI, "tools": [{"name": "t", "input_schema": deep}]}, "tools[0].parameters"),
        ("/v1beta/models/gm:countTokens", {"contents": [{"parts": [{"text": "hi"}]}],
                                           "tools": [{"functionDeclarations": [{"name": "t", "parametersJsonSchema": deep}]}]}, "tools[0].parameters"),
    ]
    for path, body, field in cases:
        response = _post(gateway, path, body)
        assert response.status_code == 400, (path, response.text[:300])
        assert field in response.text and "64" in response.text
    # A schema of ordinary depth is fine.
    ok = _post(gateway, "/v1/chat/completions", {"model": "oa", "messages": HI, "tools": [{"type": "function", "function": {"name": "t", "parameters": _nested(20)}}]})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("model", ["an", "gm", "oa"])
def test_deeply_nested_json_in_history_is_no_500(gateway: GatewayThread, upstreams: dict[str, Any], model: str) -> None:
    """Tool arguments and a JSON tool result nested 300 deep: past the JSON encoders' limits
    (orjson stops at 255), so they travel to the upstream as text rather than failing."""
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    body = {"model": model, "max_tokens": 5, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": deep}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": json.dumps(deep)}]}]}
    response = _post(gateway, "/v1/messages", body)
    assert response.status_code == 200, response.text[:300]


@pytest.mark.parametrize("path", ["/v1/files", "/v1/batches"])
@pytest.mark.parametrize("limit", ["abc", "-1", "0", "1e3", "²", pytest.param("9" * 5000, id="5000-digits")])
def test_bad_limit_on_files_and_batches_is_a_400_naming_it(gateway: GatewayThread, path: str, limit: str) -> None:
    response = httpx.get(gateway.url + path, params={"limit": limit}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "limit" and "limit" in response.json()["error"]["message"]
    assert httpx.get(gateway.url + path, params={"limit": "5"}, timeout=30).status_code == 200


def test_non_utf8_upload_purpose_is_a_400(gateway: GatewayThread) -> None:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n").encode() + b"\xff\xfebatch" + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n"
        f"Content-Type: application/jsonl\r\n\r\n{{}}\r\n--{boundary}--\r\n").encode()
    response = httpx.post(gateway.url + "/v1/files", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "purpose"


# -- item 17: ranges and types, checked once for every entry point ------------------------------------------


OUT_OF_RANGE = [
    ({"max_tokens": 0}, "max_tokens", "at least 1"),
    ({"max_tokens": -5}, "max_tokens", "at least 1"),
    ({"max_completion_tokens": 0}, "max_tokens", "at least 1"),
    ({"temperature": 99}, "temperature", "from 0 to 2"),
    ({"temperature": -0.1}, "temperature", "from 0 to 2"),
    ({"top_p": 1.5}, "top_p", "from 0 to 1"),
    ({"top_k": 0}, "top_k", "at least 1"),
    ({"presence_penalty": 3}, "presence_penalty", "from -2 to 2"),
]


@pytest.mark.parametrize("fields,param,expected", OUT_OF_RANGE)
def test_openai_door_refuses_out_of_range_values(gateway: GatewayThread, fields: dict[str, Any], param: str, expected: str) -> None:
    response = _post(gateway, "/v1/chat/completions", {"model": "oa", "messages": HI, **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and expected in error["message"], error


def test_gemini_and_anthropic_doors_refuse_out_of_range_values(gateway: GatewayThread) -> None:
    contents = [{"parts": [{"text": "hi"}]}]
    for config, words in (({"maxOutputTokens": 0}, "max_tokens"), ({"temperature": 2.5}, "temperature"), ({"topK": 0}, "top_k")):
        response = _post(gateway, "/v1beta/models/gm:generateContent", {"contents": contents, "generationConfig": config})
        assert response.status_code == 400 and words in response.json()["error"]["message"], response.text
    for fields, words in (({"max_tokens": 0}, "max_tokens"), ({"temperature": 1.5}, "from 0 to 1"), ({"top_p": -1}, "top_p")):
        response = _post(gateway, "/v1/messages", {"model": "an", "messages": HI, "max_tokens": 5, **fields})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error" and words in response.json()["error"]["message"]


def test_max_tokens_over_the_cap_is_still_capped(gateway: GatewayThread, upstreams: dict[str, Any]) -> None:
    response = _post(gateway, "/v1/chat/completions", {"model": "oa", "messages": HI, "max_tokens": 10**6})
    assert response.status_code == 200, response.text
    assert upstreams["openai"].last_request.body["max_tokens"] == 256


@pytest.mark.parametrize("stream", ["false", "true", 0, 1])
def test_anthropic_stream_flag_must_be_a_boolean(gateway: GatewayThread, stream: Any) -> None:
    response = _post(gateway, "/v1/messages", {"model": "an", "max_tokens": 5, "messages": HI, "stream": stream})
    assert response.status_code == 400, response.text
    assert "stream" in response.json()["error"]["message"]
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("path,allow", [("/v1/chat/completions", "POST"), ("/v1/messages", "POST"), ("/v1/embeddings", "POST"),
                                        ("/v1/models", "GET"), ("/v1beta/models/gm:generateContent", "POST")])
def test_wrong_method_on_a_route_is_a_405_with_allow(gateway: GatewayThread, path: str, allow: str) -> None:
    method = "POST" if allow == "GET" else "GET"
    response = httpx.request(method, gateway.url + path, timeout=30)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow


def test_sdk_validates_ranges_before_sending(openai_upstream: OpenAIUpstream) -> None:
    with Client(api_keys=KEYS, base_urls={"openai": openai_upstream.base_url}) as client:
        for params, param in (({"temperature": 99}, "temperature"), ({"max_tokens": 0}, "max_tokens"), ({"top_p": 2}, "top_p"),
                              ({"temperature": "hot"}, "temperature"), ({"stop": [1]}, "stop")):
            with pytest.raises(BadRequestError) as caught:
                client.chat("openai/gpt-fake", "hi", **params)
            assert caught.value.param == param
            with pytest.raises(BadRequestError):
                client.request("openai/gpt-fake", "hi", **params)
    assert openai_upstream.request_count == 0


# -- item 18: no internal upstream URL in errors --------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_upstream_error_names_the_provider_not_the_url() -> None:
    port = _closed_port()
    config = {"aliases": {"oa": "openai/gpt-fake"}, "providers": {"openai": {"base_url": f"http://127.0.0.1:{port}/internal/v1"}}}
    with GatewayThread(Settings(log_calls=False), config=config, api_keys=KEYS) as gw:
        for path, body in (("/v1/chat/completions", {"model": "oa", "messages": HI}),
                           ("/v1/chat/completions", {"model": "oa", "messages": HI, "stream": True}),
                           ("/v1/messages", {"model": "oa", "max_tokens": 5, "messages": HI}),
                           ("/v1/embeddings", {"model": "oa", "input": "hi"})):
            response = _post(gw, path, body)
            assert response.status_code == 502, response.text
            assert str(port) not in response.text and "internal" not in response.text and "127.0.0.1" not in response.text
            assert "openai" in response.text
    # The SDK's own user still sees where the call went, in str() (not in .message).
    with Client(api_keys=KEYS, config=config, max_retries=0) as client, pytest.raises(ConnectionError) as caught:
        client.chat("oa", "hi")
    assert str(port) in str(caught.value) and str(port) not in caught.value.message


def test_timeout_error_names_the_provider_not_the_url(openai_upstream: OpenAIUpstream) -> None:
    from modelport.errors import TimeoutError
    from modelport.transport import Timeouts
    from tests.fakes.server import stall_stream

    port = str(openai_upstream.port)
    with Client(api_keys=KEYS, base_urls={"openai": openai_upstream.base_url}, timeout=Timeouts(read=0.5), max_retries=0) as client:
        for call in (lambda: client.chat("openai/gpt-fake", "hi"), lambda: list(client.stream("openai/gpt-fake", "hi"))):
            openai_upstream.inject(stall_stream(1))
            with pytest.raises(TimeoutError) as caught:
                call()
            assert port not in caught.value.message and "openai" in caught.value.message
            assert port in str(caught.value)  # the SDK's own user still sees where


def test_embeddings_on_a_provider_without_them_are_a_400(gateway: GatewayThread, upstreams: dict[str, Any]) -> None:
    """Found by the fuzz run (tests/server/test_fuzz_doors.py): Anthropic has no embeddings API."""
    response = _post(gateway, "/v1/embeddings", {"model": "an", "input": "hi"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "model", response.text
    response = _post(gateway, "/v1beta/models/an:batchEmbedContents", {"requests": [{"content": {"parts": [{"text": "hi"}]}}]})
    assert response.status_code == 400 and "no embeddings" in response.json()["error"]["message"], response.text
    with Client(api_keys=KEYS, config=_config(upstreams)) as client, pytest.raises(BadRequestError):
        client.embed("an", ["hi"])
