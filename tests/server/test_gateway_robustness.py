"""Bad input, load, limits and shutdown: the gateway answers every request in the caller's
dialect, never with a 500 it could have avoided, and never loses a stream."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import anthropic
import httpx
import openai
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.fakes.server import cut_stream
from tests.paths import ROOT

SPEC = ROOT / "../shared/specs/openai/openapi.yaml"
MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as fake:
        yield fake


def _config(upstream: OpenAIUpstream) -> dict[str, Any]:
    return {"aliases": {MODEL: "openai/gpt-fake"}, "providers": {"openai": {"base_url": upstream.base_url}}}


@pytest.fixture(scope="module")
def gateway(upstream: OpenAIUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    settings = Settings(log_calls=False, keys_path=str(tmp_path_factory.mktemp("k") / "g.db"), max_body_bytes=64 * 1024, max_tokens=64)
    with GatewayThread(settings, config=_config(upstream), api_keys={"openai": "sk-x"}) as gw:
        yield gw


# -- fuzzing: bodies shaped by the OpenAI spec, then damaged ----------------------------------------


def _request_properties() -> dict[str, list[str]]:
    """Property names of the chat, completions and embeddings request schemas in the spec."""
    spec = yaml.load(SPEC.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schemas = spec["components"]["schemas"]

    def names(schema: dict[str, Any]) -> list[str]:
        out = list(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            if "$ref" in part:
                out += names(schemas[part["$ref"].rsplit("/", 1)[1]])
            else:
                out += names(part)
        return out

    return {
        "/v1/chat/completions": names(schemas["CreateChatCompletionRequest"]),
        "/v1/completions": names(schemas["CreateCompletionRequest"]),
        "/v1/embeddings": names(schemas["CreateEmbeddingRequest"]),
    }


PROPERTIES = _request_properties() if SPEC.exists() else {}
VALID = {
    "/v1/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": MODEL, "prompt": "hi"},
    "/v1/embeddings": {"model": MODEL, "input": "hi"},
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def damaged_bodies(draw: st.DrawFn) -> tuple[str, Any]:
    path = draw(st.sampled_from(sorted(VALID)))
    if draw(st.integers(0, 9)) == 0:
        return path, draw(json_values)  # not even an object, sometimes
    body = json.loads(json.dumps(VALID[path]))
    for name in draw(st.lists(st.sampled_from(PROPERTIES[path]), min_size=1, max_size=4)):
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(json_values)
    if path == "/v1/chat/completions" and isinstance(body.get("messages"), list) and draw(st.booleans()):
        body["messages"] = [{"role": draw(st.sampled_from(["user", "assistant", "tool", "system", "x"])), "content": draw(json_values)}]
    body.pop("stream", None)  # streams are fuzzed below with a plain validity check
    return path, body


@pytest.mark.skipif(not SPEC.exists(), reason="the OpenAI spec is not checked out beside the repo")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=damaged_bodies())
def test_fuzzed_openai_bodies_never_get_a_500(gateway: GatewayThread, case: tuple[str, Any]) -> None:
    path, body = case
    response = httpx.post(gateway.url + path, content=json.dumps(body), timeout=10)
    assert response.status_code < 500, response.text
    assert response.headers["x-request-id"]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens", f"/v1beta/models/{MODEL}:generateContent",
                             f"/v1beta/models/{MODEL}:countTokens", f"/v1/models/{MODEL}:embedContent"]),
       body=json_values | st.dictionaries(st.sampled_from(["model", "messages", "max_tokens", "system", "contents", "tools",
                                                          "generationConfig", "content", "stop_sequences", "tool_choice"]),
                                          json_values, max_size=5))
def test_fuzzed_anthropic_and_gemini_bodies_never_get_a_500(gateway: GatewayThread, path: str, body: Any) -> None:
    response = httpx.post(gateway.url + path, content=json.dumps(body), timeout=10)
    assert response.status_code < 500, response.text


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2", b"\xff\xfe", b"null", b'"text"', b"{}" * 10, b'{"model": 1e999}'])
def test_malformed_json_is_a_400_naming_the_body(gateway: GatewayThread, raw: bytes) -> None:
    response = httpx.post(gateway.url + "/v1/chat/completions", content=raw)
    assert response.status_code == 400
    assert response.json()["error"]["param"] in ("body", "model", "messages")


def test_limits_and_routing_errors(gateway: GatewayThread) -> None:
    big = httpx.post(gateway.url + "/v1/chat/completions", content=b"{" + b" " * 70_000 + b"}")
    assert big.status_code == 413
    chunked = httpx.post(gateway.url + "/v1/chat/completions", content=iter([b" " * 40_000, b" " * 40_000]))
    assert chunked.status_code == 413
    assert httpx.post(gateway.url + "/v1/nowhere", json={}).status_code == 404
    assert httpx.get(gateway.url + "/v1/chat/completions").status_code in (404, 405)
    assert httpx.post(gateway.url + "/v1/models/x").status_code == 405
    echoed = httpx.get(gateway.url + "/health", headers={"x-request-id": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    hostile = httpx.get(gateway.url + "/health", headers={"x-request-id": "a b;" * 30})
    assert hostile.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("model", ["local//etc/passwd", "local/../../x.gguf", "openai/../../admin", "http://evil.example/v1", "mybox/x"])
def test_callers_cannot_choose_where_the_gateway_connects(gateway: GatewayThread, model: str, upstream: OpenAIUpstream) -> None:
    before = upstream.request_count
    response = httpx.post(gateway.url + "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 404
    assert upstream.request_count == before


# -- streams: load, failures, shutdown ------------------------------------------------------------------


def test_64_concurrent_streams_all_complete(gateway: GatewayThread) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="-", max_retries=0)

    async def one(i: int) -> str:
        words = " ".join(f"w{i}_{k}" for k in range(20))
        stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": words}], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == f"echo: {words}"
        return text

    async def run() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(64)))

    assert len(set(asyncio.run(run()))) == 64


def test_upstream_cut_mid_stream_ends_with_error_event_per_dialect(gateway: GatewayThread, upstream: OpenAIUpstream) -> None:
    upstream.inject(cut_stream(after=2))
    stream = openai.OpenAI(base_url=gateway.url + "/v1", api_key="-", max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a b c d e f"}], stream=True)
    with pytest.raises(openai.APIError):
        list(stream)
    upstream.inject(cut_stream(after=2))
    raw = httpx.post(gateway.url + "/v1/messages", json={"model": MODEL, "max_tokens": 20, "stream": True,
                                                         "messages": [{"role": "user", "content": "a b c d e f"}]})
    assert raw.status_code == 200 and "event: error" in raw.text and "message_stop" not in raw.text
    upstream.inject(cut_stream(after=2))
    raw = httpx.post(f"{gateway.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", json={"contents": [{"parts": [{"text": "a b c d"}]}]})
    assert raw.status_code == 200 and '"error"' in raw.text


def test_request_timeout_is_a_504_in_the_callers_dialect(tmp_path: Path) -> None:
    with OpenAIUpstream(latency=2.0) as slow:
        settings = Settings(log_calls=False, keys_path=str(tmp_path / "g.db"), request_timeout=0.3)
        with GatewayThread(settings, config=_config(slow), api_keys={"openai": "sk-x"}) as gw:
            started = time.monotonic()
            with pytest.raises(anthropic.APIStatusError) as timed_out:
                anthropic.Anthropic(base_url=gw.url, api_key="-", max_retries=0).messages.create(
                    model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}])
            assert timed_out.value.status_code == 504 and time.monotonic() - started < 1.5
            stream = httpx.post(gw.url + "/v1/chat/completions", json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]})
            assert stream.status_code == 504


def test_shutdown_lets_in_flight_streams_finish(tmp_path: Path) -> None:
    with OpenAIUpstream(latency=0.8) as slow:
        gw = GatewayThread(Settings(log_calls=False, keys_path=str(tmp_path / "g.db"), graceful_timeout=10), config=_config(slow), api_keys={"openai": "sk-x"}).start()
        result: dict[str, Any] = {}

        def call() -> None:
            stream = openai.OpenAI(base_url=gw.url + "/v1", api_key="-", max_retries=0).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "still here"}], stream=True)
            result["text"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 30  # a fresh process's first SDK import can take seconds
        while not slow.requests:  # the request is in flight, waiting for the slow upstream
            assert time.monotonic() < deadline, "the call never reached the upstream"
            time.sleep(0.01)
        gw.stop()
        caller.join(timeout=10)
        assert result.get("text") == "echo: still here"
