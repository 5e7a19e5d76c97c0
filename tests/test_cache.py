"""The response cache on real SQLite files: same answer back, streamed or not, and never
an answer across different requests."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from modelport.cache import ResponseCache, cache_for, replay
from modelport.types import (
    ChatRequest,
    ChatResponse,
    Message,
    ReasoningPart,
    ResponseFormat,
    StreamAccumulator,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)


def base_request(**changes) -> ChatRequest:
    request = ChatRequest("openai/gpt-4o-mini", [Message.system("Be brief."), Message.user("Name a colour.")],
                          temperature=0.0, max_tokens=20)
    return dataclasses.replace(request, **changes)


def answer() -> ChatResponse:
    return ChatResponse(
        "resp_1", "gpt-4o-mini",
        Message("assistant", [ReasoningPart("they want one word", "sig"), TextPart("Blue.")],
                [ToolCall("call_1", "paint", '{"colour":"blue"}'), ToolCall("call_2", "log", "{}")]),
        finish_reason="tool_calls", usage=Usage(20, 8, cached_tokens=4, reasoning_tokens=3), provider="openai",
        created=1_700_000_000, latency=0.4,
    )


@pytest.fixture
def cache(tmp_path: Path):
    cache = ResponseCache(tmp_path / "cache.db")
    yield cache
    cache.close()


def test_a_cached_response_comes_back_identical(cache: ResponseCache) -> None:
    assert cache.get(base_request()) is None
    cache.put(base_request(), answer())
    assert cache.get(base_request()) == answer()


def test_entries_are_shared_through_the_file(tmp_path: Path) -> None:
    # The SDK, CLI, batch engine and gateway each open their own ResponseCache on one file.
    ResponseCache(tmp_path / "cache.db").put(base_request(), answer())
    assert ResponseCache(tmp_path / "cache.db").get(base_request()) == answer()


def test_streamed_and_plain_calls_share_an_entry(cache: ResponseCache) -> None:
    assert cache.key(base_request(stream=True)) == cache.key(base_request())
    cache.put(base_request(stream=True), answer())
    assert cache.get(base_request()) == answer()


def test_replayed_events_assemble_into_the_identical_response(cache: ResponseCache) -> None:
    cache.put(base_request(stream=True), answer())
    cached = cache.get(base_request(stream=True))
    accumulator = StreamAccumulator(provider=cached.provider)
    for event in replay(cached):
        accumulator.add(event)
    rebuilt = accumulator.response(latency=cached.latency)
    rebuilt.created = cached.created
    assert rebuilt == answer()


def test_replay_of_a_plain_text_answer() -> None:
    plain = ChatResponse("r", "m", Message.assistant("Hi"), usage=Usage(3, 1))
    accumulator = StreamAccumulator()
    for event in replay(plain):
        accumulator.add(event)
    assert accumulator.response() == plain


@pytest.mark.parametrize("change", [
    {"model": "openai/gpt-4o"},
    {"messages": [Message.system("Be brief."), Message.user("Name a color.")]},
    {"messages": [Message.user("Name a colour.")]},
    {"temperature": 0.7},
    {"temperature": None},
    {"top_p": 0.5},
    {"top_k": 5},
    {"max_tokens": 21},
    {"stop": ["."]},
    {"seed": 1},
    {"presence_penalty": 0.1},
    {"frequency_penalty": 0.1},
    {"response_format": ResponseFormat("json_object")},
    {"tools": [Tool("paint")]},
    {"tool_choice": ToolChoice("none")},
    {"parallel_tool_calls": False},
    {"reasoning_effort": "high"},
    {"metadata": {"user": "u2"}},
    {"extra": {"logprobs": True}},
])
def test_never_serves_an_answer_across_different_parameters(cache: ResponseCache, change: dict) -> None:
    cache.put(base_request(), answer())
    other = base_request(**change)
    assert cache.key(other) != cache.key(base_request())
    assert cache.get(other) is None


def test_numerically_equal_parameters_share_an_entry(cache: ResponseCache) -> None:
    cache.put(base_request(temperature=1), answer())
    assert cache.get(base_request(temperature=1.0)) == answer()


def test_entries_expire_after_the_ttl(tmp_path: Path) -> None:
    ResponseCache(tmp_path / "cache.db").put(base_request(), answer())
    assert ResponseCache(tmp_path / "cache.db", ttl=60).get(base_request()) == answer()
    time.sleep(0.05)
    assert ResponseCache(tmp_path / "cache.db", ttl=0.01).get(base_request()) is None
    # The expired entry is gone for everyone.
    assert ResponseCache(tmp_path / "cache.db").get(base_request()) is None


def test_failed_answers_are_not_cached(cache: ResponseCache) -> None:
    cache.put(base_request(), dataclasses.replace(answer(), finish_reason="error"))
    assert cache.get(base_request()) is None


def test_stats_and_clear(cache: ResponseCache) -> None:
    cache.put(base_request(), answer())
    cache.put(base_request(seed=2), answer())
    cache.get(base_request())
    cache.get(base_request())
    stats = cache.stats()
    assert (stats["entries"], stats["hits"]) == (2, 2)
    assert stats["bytes"] > 0 and stats["path"] == str(cache.path)
    assert cache.clear() == 2
    assert cache.get(base_request()) is None and cache.stats()["entries"] == 0


def test_switches(monkeypatch: pytest.MonkeyPatch, isolated_home) -> None:
    assert cache_for() is None
    assert cache_for(True).ttl is None
    assert cache_for(30).ttl == 30.0
    assert cache_for(True).path == isolated_home / "cache.db"
    monkeypatch.setenv("MODELPORT_CACHE", "3600")
    assert cache_for().ttl == 3600.0
    monkeypatch.setenv("MODELPORT_CACHE", "0")
    assert cache_for(True) is None


def test_config_turns_the_cache_on(isolated_home) -> None:
    config = isolated_home / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[cache]\nenabled = true\nttl = 120\n")
    assert cache_for().ttl == 120.0
