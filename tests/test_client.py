"""The client as a user meets it: chat, stream, async, messages, routing, keys, the facade.

Every test talks to a real loopback server (the fake OpenAI upstream) and checks what the
server received as well as what the caller got back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from modelport import AsyncClient, ChatResponse, Client, Message, OpenAI, AsyncOpenAI, Usage
from modelport.keys import keys_path, set_key
from tests.fakes.openai_upstream import Answer, OpenAIUpstream

KEY = "sk-test-client-0123456789"
MODEL = "openai/gpt-fake"


@pytest.fixture()
def client(openai_upstream: OpenAIUpstream):
    with Client(api_keys={"openai": KEY}, base_urls={"openai": openai_upstream.base_url}) as c:
        yield c


def aclient(upstream: OpenAIUpstream) -> AsyncClient:
    return AsyncClient(api_keys={"openai": KEY}, base_urls={"openai": upstream.base_url})


def comparable(response: ChatResponse) -> ChatResponse:
    """A response without what differs between two deliveries of the same answer (the fake
    derives its id from the request body, which differs by `stream`)."""
    return dataclasses.replace(response, id="", latency=0.0, created=0)


# -- the canonical request on the wire -------------------------------------------------------


def test_a_canonical_request_goes_on_the_wire_exactly_like_this(client, openai_upstream):
    client.chat(MODEL, "What is 2+2?", system="Be brief.", temperature=0.2, max_tokens=50, stop="\n\n", seed=7)
    sent = openai_upstream.last_request
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.raw) == {
        "model": "gpt-fake",  # the provider's own id: "openai/" only chose the provider
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "temperature": 0.2,
        "max_tokens": 50,
        "stop": ["\n\n"],
        "seed": 7,
    }


def test_a_stream_asks_for_usage_on_the_wire(client, openai_upstream):
    client.stream(MODEL, "hi").until_done()
    body = openai_upstream.last_request.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


# -- chat, stream, async -----------------------------------------------------------------------


def test_chat_returns_text_usage_and_provider(client, openai_upstream):
    answer = client.chat(MODEL, "hello world")
    assert answer.text == "echo: hello world"
    assert str(answer) == "echo: hello world"
    assert answer.usage == Usage(input_tokens=2, output_tokens=3)
    assert (answer.provider, answer.model, answer.finish_reason) == ("openai", "gpt-fake", "stop")
    assert openai_upstream.request_count == 1


def test_stream_yields_text_as_it_comes_and_assembles_the_same_response_as_chat(client, openai_upstream):
    whole = client.chat(MODEL, "one two three")
    stream = client.stream(MODEL, "one two three")
    pieces = [e.text for e in stream if e.kind == "text"]
    assert pieces == ["echo: ", "one ", "two ", "three"]
    assert comparable(stream.response) == comparable(whole)
    assert stream.response.usage == Usage(input_tokens=3, output_tokens=4)


def test_text_stream_then_until_done_sends_one_request_and_keeps_the_text_once(client, openai_upstream):
    stream = client.stream(MODEL, "one two")
    assert "".join(stream.text_stream()) == "echo: one two"
    assert stream.until_done().text == "echo: one two"
    assert openai_upstream.request_count == 1


def test_async_chat_and_stream_match_sync(client, openai_upstream):
    sync_answer = client.chat(MODEL, "one two")

    async def run():
        async with aclient(openai_upstream) as c:
            answer = await c.chat(MODEL, "one two")
            stream = c.stream(MODEL, "one two")
            texts = [t async for t in stream.text_stream()]
            return answer, texts, stream.response

    answer, texts, streamed = asyncio.run(run())
    assert comparable(answer) == comparable(sync_answer)
    assert "".join(texts) == "echo: one two"
    assert comparable(streamed) == comparable(sync_answer)
    assert openai_upstream.request_count == 3


def test_async_stream_until_done_after_text_stream_sends_one_request(openai_upstream):
    async def run():
        async with aclient(openai_upstream) as c:
            stream = c.stream(MODEL, "one two")
            text = "".join([t async for t in stream.text_stream()])
            return text, await stream.until_done()

    text, response = asyncio.run(run())
    assert text == response.text == "echo: one two"
    assert openai_upstream.request_count == 1


def test_async_client_survives_a_change_of_event_loop(openai_upstream):
    # A notebook or a script may call asyncio.run more than once with the same client.
    client = aclient(openai_upstream)

    async def ask(prompt: str) -> str:
        return (await client.chat(MODEL, prompt)).text

    assert asyncio.run(ask("first")) == "echo: first"
    assert asyncio.run(ask("second")) == "echo: second"
    assert asyncio.run(client.aclose()) is None
    assert openai_upstream.request_count == 2


def test_many_async_calls_in_flight_at_once(openai_upstream):
    async def run():
        async with aclient(openai_upstream) as c:
            return await asyncio.gather(*(c.chat(MODEL, f"n{i}") for i in range(20)))

    answers = asyncio.run(run())
    assert [a.text for a in answers] == [f"echo: n{i}" for i in range(20)]


def test_tool_calls_survive_the_stream_like_the_whole_answer(client, openai_upstream):
    call = ("call_1", "get_weather", '{"city": "Paris"}')
    openai_upstream.script(Answer(tool_calls=[call]), Answer(tool_calls=[call]))
    whole = client.chat(MODEL, "weather?")
    streamed = client.stream(MODEL, "weather?").until_done()
    assert comparable(streamed) == comparable(whole)
    assert whole.tool_calls[0].name == "get_weather" and whole.tool_calls[0].args == {"city": "Paris"}
    assert whole.finish_reason == "tool_calls"


# -- messages and parameters -------------------------------------------------------------------


def test_messages_as_openai_dicts(client, openai_upstream):
    history = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "echo: first"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    assert client.chat(MODEL, messages=history).text == "echo: second"
    sent = openai_upstream.last_request.body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0]["content"] == "You are terse."


def test_messages_as_message_objects_give_the_same_wire_body(client, openai_upstream):
    client.chat(MODEL, messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}])
    as_dicts = openai_upstream.last_request.body
    client.chat(MODEL, [Message.system("S"), Message.user("Q")])
    assert openai_upstream.last_request.body == as_dicts


def test_a_single_message_object_is_a_prompt(client):
    assert client.chat(MODEL, Message.user("solo")).text == "echo: solo"


def test_system_replaces_any_system_message_in_the_history(client, openai_upstream):
    client.chat(MODEL, messages=[{"role": "system", "content": "old"}, {"role": "user", "content": "Q"}], system="new")
    assert openai_upstream.last_request.body["messages"] == [
        {"role": "system", "content": "new"},
        {"role": "user", "content": "Q"},
    ]


def test_stop_as_a_string_or_a_list(client, openai_upstream):
    client.chat(MODEL, "x", stop="END")
    assert openai_upstream.last_request.body["stop"] == ["END"]
    client.chat(MODEL, "x", stop=["A", "B"])
    assert openai_upstream.last_request.body["stop"] == ["A", "B"]


def test_request_builds_without_sending(client, openai_upstream):
    request = client.request(MODEL, "hi", temperature=0.5)
    assert request.model == MODEL and request.temperature == 0.5 and request.messages[0].text == "hi"
    assert openai_upstream.request_count == 0


# -- routing: base URLs, config providers, aliases ------------------------------------------------


def test_modelport_base_url_env_points_a_provider_elsewhere(openai_upstream, monkeypatch):
    monkeypatch.setenv("MODELPORT_OPENAI_BASE_URL", openai_upstream.base_url)
    with Client(api_keys={"openai": KEY}) as client:
        assert client.chat(MODEL, "via env").text == "echo: via env"
    assert openai_upstream.request_count == 1


def test_openai_sdk_base_url_env_is_honoured_and_modelport_env_wins(openai_upstream, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_upstream.base_url)
    with Client(api_keys={"openai": KEY}) as client:
        assert client.chat(MODEL, "sdk env").text == "echo: sdk env"
    with OpenAIUpstream() as other:
        monkeypatch.setenv("MODELPORT_OPENAI_BASE_URL", other.base_url)
        with Client(api_keys={"openai": KEY}) as client:
            client.chat(MODEL, "which")
        assert other.request_count == 1
    assert openai_upstream.request_count == 1


def test_explicit_base_url_wins_over_env(openai_upstream, monkeypatch):
    monkeypatch.setenv("MODELPORT_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    with Client(api_keys={"openai": KEY}, base_urls={"openai": openai_upstream.base_url + "/"}) as client:
        assert client.chat(MODEL, "explicit").text == "echo: explicit"


def write_config(home: Path, text: str) -> None:
    config = home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.toml").write_text(text, encoding="utf-8")


def test_a_config_declared_openai_compatible_provider(isolated_home, openai_upstream):
    write_config(isolated_home, f'[providers.mybox]\nbase_url = "{openai_upstream.base_url}"\n')
    with Client() as client:  # no key: a declared provider does not require one
        assert client.chat("mybox/some/model", "hi box").text == "echo: hi box"
    sent = openai_upstream.last_request
    assert sent.body["model"] == "some/model"
    assert "authorization" not in sent.headers


def test_a_config_declared_provider_with_a_key_variable(isolated_home, openai_upstream, monkeypatch):
    write_config(isolated_home, f'[providers.mybox]\nbase_url = "{openai_upstream.base_url}"\nkey_env = "MYBOX_TOKEN"\n')
    monkeypatch.setenv("MYBOX_TOKEN", "box-secret")
    with Client() as client:
        client.chat("mybox/m", "hi")
    assert openai_upstream.last_request.headers["authorization"] == "Bearer box-secret"


def test_aliases_from_config_name_a_provider_model(isolated_home, openai_upstream):
    write_config(
        isolated_home,
        f'[aliases]\nfast = "mybox/tiny"\nquick = "fast"\n[providers.mybox]\nbase_url = "{openai_upstream.base_url}"\n',
    )
    with Client() as client:
        assert client.chat("fast", "a").text == "echo: a"
        assert openai_upstream.last_request.body["model"] == "tiny"
        client.chat("quick", "b")  # an alias of an alias
        assert openai_upstream.last_request.body["model"] == "tiny"


def test_default_model_comes_from_the_environment(isolated_home, openai_upstream, monkeypatch):
    write_config(isolated_home, f'default_model = "mybox/from-config"\n[providers.mybox]\nbase_url = "{openai_upstream.base_url}"\n')
    with Client() as client:
        client.chat(prompt="hi")
        assert openai_upstream.last_request.body["model"] == "from-config"
        monkeypatch.setenv("MODELPORT_MODEL", "mybox/from-env")
        client.chat(prompt="hi")
        assert openai_upstream.last_request.body["model"] == "from-env"


# -- keys --------------------------------------------------------------------------------------


def sent_key(upstream: OpenAIUpstream, **client_options) -> str:
    with Client(base_urls={"openai": upstream.base_url}, **client_options) as client:
        client.chat(MODEL, "k")
    return upstream.last_request.headers["authorization"].removeprefix("Bearer ")


def test_keys_explicit_beats_env_beats_file(openai_upstream, monkeypatch):
    set_key("openai", "sk-from-file")
    assert sent_key(openai_upstream) == "sk-from-file"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert sent_key(openai_upstream) == "sk-from-env"
    assert sent_key(openai_upstream, api_keys={"openai": "sk-explicit"}) == "sk-explicit"


def test_the_modelport_key_variable_is_a_fallback_for_the_standard_one(openai_upstream, monkeypatch):
    monkeypatch.setenv("MODELPORT_OPENAI_API_KEY", "sk-modelport-env")
    assert sent_key(openai_upstream) == "sk-modelport-env"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-standard-env")
    assert sent_key(openai_upstream) == "sk-standard-env"


def test_the_keys_file_is_private(isolated_home):
    set_key("openai", "sk-private")
    path = keys_path()
    assert path == isolated_home / "config" / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"openai": "sk-private"}


# -- the module-level API and the OpenAI facade ---------------------------------------------------


def test_module_level_chat_with_env_configured_base_url(openai_upstream):
    # A fresh interpreter, as a user's script would be: configuration only through the env.
    env = {**os.environ, "MODELPORT_OPENAI_BASE_URL": openai_upstream.base_url, "OPENAI_API_KEY": KEY}
    code = "import modelport; print(modelport.chat('openai/gpt-fake', 'from a script').text)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "echo: from a script"
    assert openai_upstream.last_request.headers["authorization"] == f"Bearer {KEY}"


def test_openai_facade_returns_the_sdk_shape(openai_upstream):
    client = OpenAI(api_key=KEY, base_url=openai_upstream.base_url)
    completion = client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "hello sdk"}])
    assert completion.choices[0].message.content == "echo: hello sdk"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 2 and completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == 5
    assert openai_upstream.last_request.body["model"] == "gpt-fake"
    client.close()


def test_openai_facade_streams_chunks(openai_upstream):
    client = OpenAI(api_key=KEY, base_url=openai_upstream.base_url)
    chunks = list(client.chat.completions.create(
        model="gpt-fake", messages=[{"role": "user", "content": "a b"}], stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: a b"
    assert chunks[-1].usage.total_tokens == 5
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    client.close()


def test_async_openai_facade(openai_upstream):
    async def run():
        client = AsyncOpenAI(api_key=KEY, base_url=openai_upstream.base_url)
        completion = await client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": "hey"}])
        chunks = [c async for c in await client.chat.completions.create(
            model="gpt-fake", messages=[{"role": "user", "content": "hey"}], stream=True)]
        await client.close()
        return completion, chunks

    completion, chunks = asyncio.run(run())
    assert completion.choices[0].message.content == "echo: hey"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hey"


def test_sync_and_async_calls_say_who_is_calling(openai_upstream):
    import asyncio

    from modelport import AsyncClient, Client, __version__

    options = dict(base_urls={"openai": openai_upstream.base_url}, api_keys={"openai": "sk-test"})
    Client(**options).chat("openai/gpt-fake", "sync")
    sync_agent = openai_upstream.last_request.headers["user-agent"]

    async def call() -> None:
        async with AsyncClient(**options) as client:
            await client.chat("openai/gpt-fake", "async")

    asyncio.run(call())
    assert sync_agent == openai_upstream.last_request.headers["user-agent"] == f"modelport/{__version__}"


def test_the_openai_facade_embeds_like_the_sdk(openai_upstream):
    from modelport import OpenAI
    from tests.fakes.openai_upstream import fake_vector

    client = OpenAI(base_url=openai_upstream.base_url, api_key="sk-test")
    result = client.embeddings.create(model="text-embedding-fake", input=["alpha", "beta"])
    assert [item.index for item in result.data] == [0, 1]
    assert result.data[1].embedding == pytest.approx(fake_vector("beta"))
    assert openai_upstream.last_request.body["model"] == "text-embedding-fake"


def test_a_key_set_after_the_first_missing_key_error_is_used(openai_upstream, monkeypatch):
    """Notebook flow: the first call fails for want of a key, the user sets it, the next call works."""
    from modelport import Client, ConfigError

    client = Client(base_urls={"openai": openai_upstream.base_url})
    with pytest.raises(ConfigError, match="no API key"):
        client.chat("openai/gpt-fake", "hi")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-set-later")
    assert client.chat("openai/gpt-fake", "hi").text == "echo: hi"
    assert openai_upstream.last_request.headers["authorization"] == "Bearer sk-set-later"
