"""Prompt caching end to end through `modelport serve` (issue 21): cache breakpoints survive
every door on their way to an upstream that takes them, are dropped without a 400 where the
upstream has none, and cache reads and writes come back in every door's usage fields and
settle the key's spend at cache rates. Official SDKs as clients, fake upstreams behind.
"""

from __future__ import annotations

import copy
import time
from contextlib import ExitStack
from typing import Any, Iterator

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from modelport.prices import cost, price_for
from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from modelport.types import Usage
from tests.fakes.openai_upstream import Answer
from tests.server.test_gateway_sdks import UPSTREAM_KEYS
from tests.server.test_gateway_sdks import Upstreams as SdkUpstreams
CLAUDE = "anthropic/claude-sonnet-4-5"  # priced in the built-in table, with cache rates
CACHE_MARK = {"type": "ephemeral"}


class Upstreams(SdkUpstreams):
    """The three fakes of the SDK tests, routed to priced models and an auto_cache provider."""

    def config(self) -> dict[str, Any]:
        return {
            "aliases": {"claude-sonnet-4-5": CLAUDE, "gpt-4o-mini": "openai/gpt-4o-mini", "gemini-2.5-flash": "gemini/gemini-2.5-flash",
                        "auto-claude": "claudeauto/claude-sonnet-4-5"},
            "providers": {
                "openai": {"base_url": self.openai.base_url},
                "anthropic": {"base_url": self.anthropic.base_url},
                "gemini": {"base_url": self.gemini.base_url_for("v1beta")},
                # The same upstream again, with breakpoints placed for callers that set none.
                "claudeauto": {"base_url": self.anthropic.base_url, "dialect": "anthropic", "auth_header": "x-api-key",
                               "headers": {"anthropic-version": "2023-06-01"}, "key_env": "CLAUDEAUTO_KEY", "auto_cache": True},
            },
            "prices": {"claudeauto/*": {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0}},
        }


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with ExitStack() as stack:
        yield Upstreams(stack)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("keys") / "gateway.db")


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams, store: KeyStore, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[GatewayThread]:
    monkeypatch_module.setenv("CLAUDEAUTO_KEY", UPSTREAM_KEYS["anthropic"])
    settings = Settings(auth=True, log_calls=False, keys_path=str(store.path), max_tokens=256)
    with GatewayThread(settings, config=upstreams.config(), api_keys=UPSTREAM_KEYS) as gw:
        yield gw


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(autouse=True)
def _fresh(upstreams: Upstreams) -> None:
    for upstream in (upstreams.openai, upstreams.anthropic, upstreams.gemini):
        upstream.clear()
    upstreams.anthropic.cached_prefixes.clear()


@pytest.fixture()
def key(store: KeyStore, request: pytest.FixtureRequest) -> str:
    return store.create(request.node.name[:60], budget=10.0)


def an(gw: GatewayThread, key: str, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, default_headers=headers or None)


def oa(gw: GatewayThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def cache_marks(value: Any, path: str = "") -> dict[str, Any]:
    """Every cache_control in a JSON body, by where it stands."""
    found: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "cache_control":
                found[path or "."] = v
            else:
                found.update(cache_marks(v, f"{path}.{k}"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.update(cache_marks(v, f"{path}[{i}]"))
    return found


def saved_cost(store: KeyStore, name: str, requests: int, timeout: float = 10.0) -> float:
    """The key's spend once the gateway has saved ``requests`` requests (about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        record = next(r for r in store.records() if r.name == name)
        if record.requests >= requests or time.monotonic() > deadline:
            return record.cost
        time.sleep(0.1)


TOOLS = [
    {"name": f"tool_{i}", "description": f"Tool number {i}: {words('d', 20)}",
     "input_schema": {"type": "object", "properties": {"arg": {"type": "string"}}, "required": ["arg"]}}
    for i in range(24)
]


def claude_code_request(turns: int = 1) -> dict[str, Any]:
    """A request shaped like Claude Code's: two system blocks with cache_control (the second
    with a 1h lifetime), many tools with the last one marked, a conversation of tool calls
    and results whose last user block is marked."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "Fix the failing test in " + words("f", 40)}]}]
    for turn in range(turns - 1):
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": f"Reading file {turn}."},
            {"type": "tool_use", "id": f"toolu_{turn:02d}", "name": "tool_1", "input": {"arg": f"file{turn}.py"}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{turn:02d}", "content": [{"type": "text", "text": words(f"r{turn}x", 150)}]}]})
    last = messages[-1]["content"][-1]
    last["cache_control"] = dict(CACHE_MARK)
    tools = copy.deepcopy(TOOLS)
    tools[-1]["cache_control"] = dict(CACHE_MARK)
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": dict(CACHE_MARK)},
            {"type": "text", "text": words("s", 1500), "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "tools": tools,
        "messages": messages,
    }


# -- Anthropic door to an Anthropic upstream ------------------------------------------------------


def test_markers_on_system_tools_content_and_tool_results_arrive_intact(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    client = an(gateway, key)
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32,
        "system": [{"type": "text", "text": words("s", 300), "cache_control": {"type": "ephemeral", "ttl": "5m"}}],
        "tools": [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object", "properties": {}},
                   "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": words("doc", 200), "cache_control": CACHE_MARK},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}, "cache_control": CACHE_MARK},
            ]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}, "cache_control": CACHE_MARK}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "found", "cache_control": CACHE_MARK}]},
        ],
        "cache_control": CACHE_MARK,
    }
    client.messages.create(**body)
    sent = upstreams.anthropic.last_request.body
    assert cache_marks(sent) == cache_marks(body) and len(cache_marks(body)) == 7


def test_second_identical_call_reads_the_cache_and_the_key_pays_cache_rates(gateway: GatewayThread, upstreams: Upstreams,
                                                                            store: KeyStore, key: str) -> None:
    client = an(gateway, key)
    body = claude_code_request()
    first = client.messages.create(**body)
    second = client.messages.create(**body)
    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens > 0
    with client.messages.stream(**body) as stream:
        streamed = stream.get_final_message()
    assert streamed.usage.cache_read_input_tokens == second.usage.cache_read_input_tokens
    assert streamed.usage.input_tokens == second.usage.input_tokens
    price = price_for("anthropic", "claude-sonnet-4-5")
    expected = 0.0
    for usage in (first.usage, second.usage, streamed.usage):
        canonical = Usage(usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens, usage.output_tokens,
                          usage.cache_read_input_tokens, usage.cache_creation_input_tokens)
        expected += cost(canonical, price)
    name = next(r.name for r in store.records() if r.name.startswith("test_second_identical"))
    assert saved_cost(store, name, 3) == pytest.approx(expected)
    # Cheaper than the same three calls at the full input rate.
    assert expected < 3 * cost(Usage(first.usage.input_tokens + first.usage.cache_creation_input_tokens, first.usage.output_tokens), price)


def test_claude_code_shaped_request_keeps_every_marker_and_its_beta_header(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    beta = "claude-code-20250219,interleaved-thinking-2025-05-14,extended-cache-ttl-2025-04-11"
    body = claude_code_request(turns=4)
    an(gateway, key, **{"anthropic-beta": beta}).messages.create(**body)
    recorded = upstreams.anthropic.last_request
    assert recorded.headers["anthropic-beta"] == beta
    assert recorded.body["system"] == body["system"]
    assert recorded.body["tools"] == body["tools"]
    assert cache_marks(recorded.body) == cache_marks(body)


def test_anthropic_beta_goes_to_anthropic_upstreams_only(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    an(gateway, key, **{"anthropic-beta": "extended-cache-ttl-2025-04-11"}).messages.create(
        model="gpt-4o-mini", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert "anthropic-beta" not in upstreams.openai.last_request.headers


def test_a_malformed_marker_is_a_clear_400(gateway: GatewayThread, key: str) -> None:
    with pytest.raises(anthropic.BadRequestError, match="ttl"):
        an(gateway, key).messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": "2h"}}]}])


# -- Anthropic door to upstreams without breakpoints ---------------------------------------------------


def test_anthropic_door_to_openai_drops_markers_and_maps_cached_usage_back(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    upstreams.openai.script(Answer(text="ok", prompt_tokens=1600, completion_tokens=2, cached_tokens=1500))
    body = {**claude_code_request(), "model": "gpt-4o-mini"}
    reply = an(gateway, key, **{"anthropic-beta": "prompt-caching-2024-07-31"}).messages.create(**body)
    sent = upstreams.openai.last_request.body
    assert cache_marks(sent) == {}
    assert reply.usage.cache_read_input_tokens == 1500 and reply.usage.input_tokens == 100
    assert reply.usage.cache_creation_input_tokens == 0


def test_anthropic_door_to_gemini_drops_markers_and_maps_cached_usage_back(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    upstreams.gemini.script(Answer(text="ok", prompt_tokens=1600, completion_tokens=2, cached_tokens=1200))
    body = {**claude_code_request(), "model": "gemini-2.5-flash"}
    reply = an(gateway, key).messages.create(**body)
    assert cache_marks(upstreams.gemini.last_request.body) == {}
    assert reply.usage.cache_read_input_tokens == 1200 and reply.usage.input_tokens == 400


# -- other doors to an Anthropic upstream with auto_cache --------------------------------------------


def _conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": words("sys", 1500)},
        {"role": "user", "content": "first question " + words("q", 50)},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]


def test_openai_chat_door_to_anthropic_with_auto_cache(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    client = oa(gateway, key)
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look up", "parameters": {"type": "object", "properties": {}}}}]
    first = client.chat.completions.create(model="auto-claude", messages=_conversation(), tools=tools, max_tokens=16)
    sent = upstreams.anthropic.last_request.body
    # The last tool, the system prompt and the conversation before its newest turn.
    assert set(cache_marks(sent)) == {".tools[0]", ".system[0]", ".messages[1].content[0]"}
    second = client.chat.completions.create(model="auto-claude", messages=_conversation(), tools=tools, max_tokens=16)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens > 1500
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    stream = client.chat.completions.create(model="auto-claude", messages=_conversation(), tools=tools, max_tokens=16, stream=True,
                                            stream_options={"include_usage": True})
    usage = [chunk.usage for chunk in stream if chunk.usage][-1]
    assert usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens_details.cached_tokens


def test_responses_door_to_anthropic_with_auto_cache(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    client = oa(gateway, key)
    kwargs = {"model": "auto-claude", "instructions": words("sys", 1500), "input": "a question", "max_output_tokens": 16, "store": False}
    client.responses.create(**kwargs)
    assert set(cache_marks(upstreams.anthropic.last_request.body)) == {".system[0]"}
    again = client.responses.create(**kwargs)
    assert again.usage.input_tokens_details.cached_tokens == 1500


def test_a_request_with_its_own_markers_is_left_alone_by_auto_cache(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    body = {**claude_code_request(turns=2), "model": "auto-claude"}
    an(gateway, key).messages.create(**body)
    assert cache_marks(upstreams.anthropic.last_request.body) == cache_marks(body)


def test_gemini_sdk_to_anthropic_with_auto_cache_reports_cached_content(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    client = genai.Client(api_key=key, http_options=gtypes.HttpOptions(base_url=gateway.url, api_version="v1beta"))
    config = gtypes.GenerateContentConfig(system_instruction=words("sys", 1500), max_output_tokens=16)
    client.models.generate_content(model="auto-claude", contents="a question", config=config)
    again = client.models.generate_content(model="auto-claude", contents="a question", config=config)
    assert again.usage_metadata.cached_content_token_count == 1500


# -- OpenAI's cache key ----------------------------------------------------------------------------


def test_prompt_cache_key_and_retention_pass_through_to_openai(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    client = oa(gateway, key)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                   prompt_cache_key="tenant-7", prompt_cache_retention="24h")
    sent = upstreams.openai.last_request.body
    assert sent["prompt_cache_key"] == "tenant-7" and sent["prompt_cache_retention"] == "24h"
    upstreams.openai.script(Answer(text="ok", prompt_tokens=40, completion_tokens=1, cached_tokens=32))
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], prompt_cache_key="tenant-7")
    assert reply.usage.prompt_tokens_details.cached_tokens == 32


def test_prompt_cache_key_is_dropped_for_anthropic(gateway: GatewayThread, upstreams: Upstreams, key: str) -> None:
    oa(gateway, key).chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}],
                                             prompt_cache_key="tenant-7", max_tokens=16)
    assert "prompt_cache_key" not in upstreams.anthropic.last_request.body


def test_a_marked_prompt_is_booked_at_the_cache_write_rate(gateway: GatewayThread, store: KeyStore) -> None:
    from modelport.dialects import anthropic as dialect
    from modelport.server.limits import prompt_token_bound

    marked = {"model": "claude-sonnet-4-5", "max_tokens": 32,
              "system": [{"type": "text", "text": words("s", 2000), "cache_control": CACHE_MARK}],
              "messages": [{"role": "user", "content": "hi"}]}
    plain = {**marked, "system": words("s", 2000)}
    tokens = prompt_token_bound(dialect.decode_request(marked))
    price = price_for("anthropic", "claude-sonnet-4-5")
    at_input_rate, at_write_rate = cost(Usage(tokens, 32), price), cost(Usage(tokens, 32, cache_write_tokens=tokens), price)
    budget = (at_input_rate + at_write_rate) / 2
    # The budget covers the prompt at the input rate, not at the rate a cache write is billed.
    with pytest.raises(anthropic.RateLimitError, match="budget"):
        an(gateway, store.create("write-rate-marked", budget=budget)).messages.create(**marked)
    an(gateway, store.create("write-rate-plain", budget=budget)).messages.create(**plain)
