"""The official ``ollama`` Python client against a live gateway's Ollama door.

Each call goes to the embedded model and to a fake upstream of another dialect behind the
Ollama-style alias ``llama3.2:latest``, so every call crosses two translations; a fake
native Ollama upstream shows num_ctx and keep_alive reaching an Ollama backend and nothing
else. The embedded model is slow on CI: its calls are few, with small num_predict.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any, Iterator

import httpx
import ollama
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from tests.fakes import openai_upstream
from tests.fakes.ollama_upstream import OllamaUpstream
from tests.fakes.openai_upstream import Answer, OpenAIUpstream
from tests.fakes.server import cut_stream

LOCAL = "local/smollm2"
REMOTE = "llama3.2:latest"
UPSTREAM_KEY = "sk-upstream-openai"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
YES_NO = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}}, "required": ["answer"]}
NUMBER = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
SMALL = {"num_predict": 6}


class Upstreams:
    def __init__(self, stack: ExitStack) -> None:
        self.openai = stack.enter_context(OpenAIUpstream(api_key=UPSTREAM_KEY))
        self.ollama = stack.enter_context(OllamaUpstream())

    def config(self) -> dict[str, Any]:
        return {
            "default_model": LOCAL,
            # The name an Ollama app would use, mapped onto a remote model of another dialect.
            "aliases": {"llama3.2": "openai/gpt-fake", "qwen3": "ollama/qwen3:8b", "smol": LOCAL, "tagged:latest": "openai/gpt-fake"},
            "providers": {"openai": {"base_url": self.openai.base_url}, "ollama": {"base_url": self.ollama.base_url}},
        }


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with ExitStack() as stack:
        yield Upstreams(stack)


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    settings = Settings(log_calls=False, keys_path=str(tmp_path_factory.mktemp("keys") / "gateway.db"), max_tokens=64)
    with GatewayThread(settings, config=upstreams.config(), api_keys={"openai": UPSTREAM_KEY}) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _fresh(upstreams: Upstreams) -> None:
    upstreams.openai.clear()
    upstreams.ollama.clear()


@pytest.fixture()
def client(gateway: GatewayThread) -> ollama.Client:
    return ollama.Client(host=gateway.url)


# -- chat -------------------------------------------------------------------------------------


def test_chat_with_the_embedded_model(client: ollama.Client) -> None:
    reply = client.chat(model=LOCAL, messages=[{"role": "user", "content": "Say hi"}], options=SMALL)
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.model == LOCAL
    assert 0 < reply.eval_count <= 6 and reply.prompt_eval_count > 0
    assert reply.total_duration >= reply.eval_duration > 0


def test_chat_through_a_remote_upstream_of_another_dialect(client: ollama.Client, upstreams: Upstreams) -> None:
    reply = client.chat(model=REMOTE, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
                        options={"temperature": 0.3, "top_p": 0.8, "seed": 3, "num_predict": 20, "stop": ["END"], "num_ctx": 8192},
                        keep_alive="5m")
    assert reply.message.content == "echo: hello there"
    assert reply.model == REMOTE and reply.done_reason == "stop"
    assert (reply.prompt_eval_count, reply.eval_count) == (4, 3)
    sent = upstreams.openai.last_request.body
    assert (sent["model"], sent["temperature"], sent["top_p"], sent["seed"], sent["max_tokens"], sent["stop"]) == ("gpt-fake", 0.3, 0.8, 3, 20, ["END"])
    # Ollama's own options mean nothing to an OpenAI upstream, which would refuse them.
    assert not {"num_ctx", "keep_alive", "options"} & set(sent)


def test_streamed_chat_local_and_remote(client: ollama.Client) -> None:
    parts = list(client.chat(model="smol", messages=[{"role": "user", "content": "Say hi"}], options=SMALL, stream=True))
    assert "".join(p.message.content for p in parts) and parts[-1].done and not any(p.done for p in parts[:-1])
    assert parts[-1].eval_count > 0
    parts = list(client.chat(model=REMOTE, messages=[{"role": "user", "content": "a b c"}], stream=True))
    assert "".join(p.message.content for p in parts) == "echo: a b c"
    final = parts[-1]
    assert final.done_reason == "stop" and final.eval_count == 4 and final.total_duration > 0


def test_the_ndjson_stream_on_the_wire(gateway: GatewayThread) -> None:
    # No "stream" field: Ollama streams by default.
    response = httpx.post(gateway.url + "/api/chat", json={"model": REMOTE, "messages": [{"role": "user", "content": "x y"}]})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert set(lines[-1]) >= {"done_reason", "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"}


def test_generate_local_and_remote(client: ollama.Client, upstreams: Upstreams) -> None:
    reply = client.generate(model=LOCAL, prompt="Say hi", options=SMALL)
    assert reply.response and reply.done
    reply = client.generate(model=REMOTE, prompt="tell me", system="be brief")
    assert reply.response == "echo: tell me" and reply.done_reason == "stop"
    assert upstreams.openai.last_request.body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "tell me"}]
    chunks = list(client.generate(model=REMOTE, prompt="one two", stream=True))
    assert "".join(c.response for c in chunks) == "echo: one two" and chunks[-1].done


def test_tools_with_the_embedded_model(client: ollama.Client) -> None:
    reply = client.chat(model=LOCAL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER], options={"num_predict": 40})
    for call in reply.message.tool_calls or ():
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    assert reply.message.tool_calls or reply.message.content


def test_tools_through_a_remote_upstream_and_the_result_going_back(client: ollama.Client, upstreams: Upstreams) -> None:
    upstreams.openai.script(Answer(tool_calls=[("call_up1", "get_weather", '{"city":"Paris"}')]))
    messages: list[Any] = [{"role": "user", "content": "Paris"}]
    reply = client.chat(model=REMOTE, messages=messages, tools=[WEATHER])
    call = reply.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert upstreams.openai.last_request.body["tools"][0]["function"]["name"] == "get_weather"
    messages += [reply.message, {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    final = client.chat(model=REMOTE, messages=messages + [{"role": "user", "content": "thanks"}], tools=[WEATHER])
    assert final.message.content == "echo: thanks"
    sent = upstreams.openai.last_request.body["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": sent[1]["tool_calls"][0]["id"], "content": "sunny"}
    # streamed: the call arrives whole, with object arguments
    upstreams.openai.script(Answer(tool_calls=[("call_up2", "get_weather", '{"city":"Oslo"}')]))
    parts = list(client.chat(model=REMOTE, messages=[{"role": "user", "content": "Oslo"}], tools=[WEATHER], stream=True))
    calls = [c for p in parts for c in (p.message.tool_calls or ())]
    assert len(calls) == 1 and calls[0].function.arguments == {"city": "Oslo"}


def test_structured_output_by_schema(client: ollama.Client, upstreams: Upstreams) -> None:
    reply = client.chat(model=LOCAL, messages=[{"role": "user", "content": "Is the sky blue?"}], format=YES_NO, options={"num_predict": 30})
    assert json.loads(reply.message.content)["answer"] in ("yes", "no")
    upstreams.openai.script('{"n": 7}')
    reply = client.chat(model=REMOTE, messages=[{"role": "user", "content": "a number"}], format=NUMBER)
    assert json.loads(reply.message.content) == {"n": 7}
    assert upstreams.openai.last_request.body["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": NUMBER}}
    client.chat(model=REMOTE, messages=[{"role": "user", "content": "json"}], format="json")
    assert upstreams.openai.last_request.body["response_format"] == {"type": "json_object"}


def test_embeddings_local_and_remote(client: ollama.Client) -> None:
    local = client.embed(model=LOCAL, input=["hello", "world"])
    assert len(local.embeddings) == 2 and len(local.embeddings[0]) > 16
    remote = client.embed(model=REMOTE, input="one")
    assert remote.embeddings[0] == pytest.approx(openai_upstream.fake_vector("one"), rel=1e-6)
    assert remote.model == REMOTE and remote.prompt_eval_count == 1
    legacy = client.embeddings(model=REMOTE, prompt="one")
    assert legacy.embedding == pytest.approx(remote.embeddings[0], rel=1e-6)


def test_list_and_show(client: ollama.Client) -> None:
    names = [m.model for m in client.list().models]
    assert {LOCAL, "llama3.2", "qwen3", "smol"} <= set(names)
    entry = next(m for m in client.list().models if m.model == "llama3.2")
    assert entry.digest and entry.modified_at is not None and entry.details.family == "openai"
    shown = client.show(REMOTE)
    assert "completion" in shown.capabilities and shown.details.family == "openai"
    assert client.show(LOCAL).details.family == "local"
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("nothing-here")
    assert caught.value.status_code == 404 and "nothing-here" in caught.value.error


def test_ps_version_and_the_root(client: ollama.Client, gateway: GatewayThread) -> None:
    client.chat(model=REMOTE, messages=[{"role": "user", "content": "hi"}])
    assert REMOTE in [m.model for m in client.ps().models]
    assert httpx.get(gateway.url + "/api/version").json()["version"]
    root = httpx.get(gateway.url + "/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert httpx.head(gateway.url + "/").status_code == 200


def test_num_ctx_and_keep_alive_reach_an_ollama_upstream(client: ollama.Client, upstreams: Upstreams) -> None:
    reply = client.chat(model="qwen3", messages=[{"role": "user", "content": "hi"}], options={"num_ctx": 8192, "repeat_penalty": 1.2, "num_predict": 9},
                        keep_alive="10m", think=True)
    assert reply.message.content == "echo: hi"
    sent = upstreams.ollama.last_request.body
    assert sent["model"] == "qwen3:8b" and sent["keep_alive"] == "10m" and sent["think"] == "medium"
    assert sent["options"] == {"num_predict": 9, "num_ctx": 8192, "repeat_penalty": 1.2}
    parts = list(client.chat(model="ollama/qwen3:8b", messages=[{"role": "user", "content": "a b"}], options={"num_ctx": 4096}, stream=True))
    assert "".join(p.message.content for p in parts) == "echo: a b"
    assert upstreams.ollama.last_request.body["options"]["num_ctx"] == 4096


def test_model_management_answers_in_ollamas_shape(client: ollama.Client) -> None:
    assert client.pull(LOCAL).status == "success"  # the embedded model is installed
    for call in (lambda: client.pull(REMOTE), lambda: client.delete(REMOTE), lambda: client.copy(REMOTE, "x"),
                 lambda: client.push(REMOTE), lambda: client.create(model="x", from_=REMOTE)):
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 400 and "not available on this gateway" in caught.value.error


@pytest.mark.parametrize("path, body", [
    ("/api/chat", b"{not json"),
    ("/api/chat", b"[]"),
    ("/api/chat", b'{"messages": []}'),
    ("/api/chat", b'{"model": "smol", "messages": "hi"}'),
    ("/api/chat", b'{"model": "smol", "messages": [{"role": "robot", "content": "x"}]}'),
    ("/api/chat", b'{"model": "smol", "messages": [{"role": "user", "content": 5}]}'),
    ("/api/chat", b'{"model": "smol", "messages": [{"role": "user", "content": "x", "images": [1]}]}'),
    ("/api/chat", b'{"model": "smol", "messages": [{"role": "user", "content": "x"}], "options": {"temperature": "hot"}}'),
    ("/api/chat", b'{"model": "smol", "messages": [{"role": "user", "content": "x"}], "options": []}'),
    ("/api/chat", b'{"model": "smol", "messages": [{"role": "user", "content": "x"}], "format": 3}'),
    ("/api/chat", b'{"model": "smol", "messages": [{"role": "user", "content": "x"}], "think": "lots"}'),
    ("/api/chat", b'{"model": "smol", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}'),
    ("/api/chat", b'{"model": "smol", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}'),
    ("/api/chat", b'{"model": "smol", "messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {}}]}]}'),
    ("/api/generate", b'{"model": "smol", "prompt": 7}'),
    ("/api/generate", b'{"model": "smol", "prompt": "x", "suffix": "y"}'),
    ("/api/embed", b'{"model": "smol", "input": [1, 2]}'),
    ("/api/embed", b'{"model": "smol"}'),
    ("/api/embeddings", b'{"model": "smol"}'),
    ("/api/show", b'{}'),
    ("/api/pull", b'"x"'),
])
def test_bad_input_gets_4xx_in_ollamas_shape(gateway: GatewayThread, path: str, body: bytes) -> None:
    response = httpx.post(gateway.url + path, content=body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and error


def test_names_route_as_given_else_without_latest(client: ollama.Client, upstreams: Upstreams) -> None:
    for name in ("tagged:latest", "llama3.2", "llama3.2:latest", "ollama/llama3.2:latest"):
        reply = client.chat(model=name, messages=[{"role": "user", "content": "hi"}])
        assert reply.message.content == "echo: hi" and reply.model == name
    assert upstreams.ollama.last_request.body["model"] == "llama3.2:latest"  # a provider's own name keeps its tag


def test_unknown_paths_methods_and_models(gateway: GatewayThread, client: ollama.Client) -> None:
    response = httpx.get(gateway.url + "/api/nothing")
    assert response.status_code == 404 and "no such endpoint" in response.json()["error"]
    response = httpx.get(gateway.url + "/api/chat")
    assert response.status_code == 405 and "use POST" in response.json()["error"]
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="mystery:7b", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404 and "mystery:7b" in caught.value.error


def test_empty_chat_and_generate_load_the_model(gateway: GatewayThread) -> None:
    loaded = httpx.post(gateway.url + "/api/generate", json={"model": REMOTE}).json()
    assert loaded["done"] and loaded["done_reason"] == "load"
    unloaded = httpx.post(gateway.url + "/api/chat", json={"model": REMOTE, "messages": [], "keep_alive": 0}).json()
    assert unloaded["done_reason"] == "unload"


def test_gateway_keys_travel_as_bearer(upstreams: Upstreams, tmp_path) -> None:
    store = KeyStore(tmp_path / "gateway.db")
    key = store.create("ollama-app")
    settings = Settings(auth=True, log_calls=False, keys_path=str(store.path), max_tokens=64)
    with GatewayThread(settings, config=upstreams.config(), api_keys={"openai": UPSTREAM_KEY}) as gw:
        with pytest.raises(ollama.ResponseError) as caught:
            ollama.Client(host=gw.url).chat(model=REMOTE, messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 401
        authed = ollama.Client(host=gw.url, headers={"Authorization": f"Bearer {key}"})
        assert authed.chat(model=REMOTE, messages=[{"role": "user", "content": "hi"}]).message.content == "echo: hi"
        assert httpx.get(gw.url + "/").status_code == 200  # the liveness probe needs no key
        metrics = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {key}"}).text
        assert 'door="ollama"' in metrics


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
OLLAMA_KEYS = ["messages", "prompt", "system", "images", "tools", "format", "options", "think", "keep_alive", "stream",
               "input", "suffix", "raw", "context", "logprobs", "name"]
damaged_messages = st.lists(st.fixed_dictionaries({}, optional={
    "role": st.sampled_from(["user", "assistant", "tool", "system", "x"]) | json_values, "content": json_values,
    "images": json_values, "tool_calls": json_values | st.just([{"function": {"name": "f", "arguments": "{"}}]),
    "tool_name": json_values, "thinking": json_values}), max_size=3)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show", "/api/pull"]),
       body=json_values | st.fixed_dictionaries({"model": st.sampled_from([REMOTE, "llama3.2", "qwen3", "zzz"]) | json_values},
                                                optional={k: json_values for k in OLLAMA_KEYS} | {"messages": damaged_messages}))
def test_fuzzed_ollama_bodies_never_get_a_500(gateway: GatewayThread, path: str, body: Any) -> None:
    response = httpx.post(gateway.url + path, content=json.dumps(body), timeout=30)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)
    elif response.headers["content-type"] == "application/x-ndjson":
        for line in response.text.splitlines():
            assert "error" not in json.loads(line), line


def test_upstream_cut_mid_stream_ends_with_an_error_line(gateway: GatewayThread, upstreams: Upstreams) -> None:
    upstreams.openai.inject(cut_stream(after=2))
    response = httpx.post(gateway.url + "/api/chat", json={"model": REMOTE, "messages": [{"role": "user", "content": "a b c d e f"}]})
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert response.status_code == 200 and "error" in lines[-1] and not any(line.get("done") for line in lines)
    with pytest.raises(ollama.ResponseError):
        upstreams.openai.inject(cut_stream(after=2))
        list(ollama.Client(host=gateway.url).chat(model=REMOTE, messages=[{"role": "user", "content": "a b c d"}], stream=True))
