"""The gateway's pure parts: limit arithmetic, key ring, routing, metrics text (the limit
windows themselves: test_state_counters.py)."""

from __future__ import annotations

import time

import pytest

from modelport.client import AsyncClient
from modelport.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from modelport.server.auth import KeyRing, KeyStore
from modelport.server.limits import charged_usage, estimate_tokens, prompt_token_bound
from modelport.server.metrics import Metrics
from modelport.server.router import Router
from modelport.types import ChatRequest, Message, Usage


def test_estimate_tokens_grows_with_text() -> None:
    short = estimate_tokens(ChatRequest("m", [Message.user("hi")]))
    long = estimate_tokens(ChatRequest("m", [Message.user("hi " * 400)]))
    assert 0 < short < long and long >= 300


def test_prompt_bound_holds_for_cjk_where_the_estimate_does_not() -> None:
    request = ChatRequest("m", [Message.user("漢字" * 500)])  # ~1,000 tokens with any tokenizer
    assert estimate_tokens(request) < 1000 <= 3000 < prompt_token_bound(request)


def test_charged_usage_trusts_final_counts_and_bounds_missing_ones() -> None:
    reported = Usage(40, 7, cached_tokens=10)
    assert charged_usage(reported, 100, 30, complete=True) is reported
    assert charged_usage(None, 100, 30, complete=True) == Usage(100, 30)  # no usage at all
    assert charged_usage(Usage(), 100, 0, complete=True) == Usage(100, 0)
    # A stream dropped after Anthropic's message_start (input known, output "1" so far).
    assert charged_usage(Usage(40, 1), 100, 30, complete=False) == Usage(40, 30)


def test_key_ring_authenticates_expires_and_limits_models(tmp_path) -> None:
    store = KeyStore(tmp_path / "g.db")
    key = store.create("a", models=["openai/*"])
    old = store.create("old", expires=time.time() - 5)
    ring = KeyRing(store)
    ring.load(store.records())
    caller = ring.authenticate(key)
    ring.check_model(caller, "gpt-4o-mini", "openai/gpt-4o-mini")
    with pytest.raises(PermissionDeniedError):
        ring.check_model(caller, "local/smollm2", "local/smollm2")
    for bad in (None, "", "mpk_nothex_x", key[:-1] + ("x" if key[-1] != "x" else "y")):
        with pytest.raises(AuthenticationError):
            ring.authenticate(bad)
    with pytest.raises(AuthenticationError, match="expired"):
        ring.authenticate(old)
    ring.record_usage(caller, 10, 5, 0.25)
    store.add_usage(ring.take_usage())
    ring.load(store.records())
    assert ring.counters.spent(caller.record.id) == pytest.approx(0.25)


def router(config: dict) -> Router:
    return Router(AsyncClient(config=config, max_retries=0), api_keys={"openai": "sk-x", "groq": "gsk-x"})


def test_router_aliases_fallbacks_and_unknown_models() -> None:
    r = router({"aliases": {"fast": "groq/llama-3.1-8b-instant", "tiny": "local/smollm2"},
                "fallbacks": {"fast": ["openai/gpt-4o-mini", "tiny"]}})
    assert [t.name for t in r.targets("fast")] == ["groq/llama-3.1-8b-instant", "openai/gpt-4o-mini", "local/smollm2"]
    assert r.targets("default")[0].name == "local/smollm2"
    with pytest.raises(NotFoundError) as unknown:
        r.targets("gpt-5-imaginary")
    assert "fast" in unknown.value.message and "local/smollm2" in unknown.value.message
    with pytest.raises(NotFoundError, match="no anthropic API key"):
        r.targets("anthropic/claude-haiku-4-5")
    for hostile in ("local//etc/passwd.gguf", "openai/../x", "local/x.gguf"):
        with pytest.raises(NotFoundError):
            r.targets(hostile)


def test_router_allow_list_limits_what_is_offered() -> None:
    r = router({"aliases": {"fast": "groq/llama-3.1-8b-instant"}, "server": {"models": ["fast"]}})
    assert [m.id for m in r.list_models()] == ["fast"]
    with pytest.raises(NotFoundError):
        r.targets("openai/gpt-4o-mini")


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.request("openai", "fast", "alice", 200, 0.03)
    metrics.request("openai", "fast", "alice", 429, 0.001)
    metrics.error("fast", "alice", "rate_limit")
    metrics.usage("fast", "alice", 10, 4, 0.002)
    metrics.time_to_first_token("fast", 0.01)
    text = metrics.render().decode()
    assert 'modelport_requests_total{door="openai",model="fast",key="alice",status="200"} 1' in text
    assert 'modelport_tokens_total{model="fast",key="alice",direction="output"} 4' in text
    assert 'modelport_request_duration_seconds_bucket{model="fast",le="+Inf"} 2' in text
    assert 'modelport_request_duration_seconds_bucket{model="fast",le="0.005"} 1' in text
    assert "modelport_requests_in_flight 0" in text
