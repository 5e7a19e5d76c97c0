"""The embedded model reuses its KV cache for a prompt prefix it has seen (issue 21): the
second request with the same long system prompt evaluates only its new suffix, by the
engine's own counters, and the reused tokens come back as cached tokens in usage, through
the gateway too."""

from __future__ import annotations


import anthropic
import pytest

from modelport import local_model
from modelport.backends.local import LocalBackend
from modelport.server import Settings
from modelport.server.testing import GatewayThread
from modelport.types import ChatRequest, Message

MODEL = "smollm2"
# About 700 tokens, unlike any other test's prompt, so no earlier call has cached it.
PREFIX = " ".join(f"Reuse rule {i}: answer briefly." for i in range(100))


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    local_model.pull(progress=False)
    return LocalBackend()


def ask(question: str) -> ChatRequest:
    return ChatRequest("local/smollm2", [Message.system(PREFIX), Message.user(question)], max_tokens=2)


def test_a_shared_prefix_is_evaluated_once_and_reported_as_cached(backend: LocalBackend, tmp_path_factory) -> None:
    first = backend.chat(ask("What is two plus two?"), MODEL)
    second = backend.chat(ask("Name a colour."), MODEL)
    timings = second.raw["timings"]
    assert first.usage.input_tokens > 600
    # The engine evaluated only what follows the shared prefix, and says it reused the rest.
    assert timings["cache_n"] == second.usage.cached_tokens > 600
    assert timings["prompt_n"] == second.usage.input_tokens - second.usage.cached_tokens < 40
    settings = Settings(log_calls=False, keys_path=str(tmp_path_factory.mktemp("keys") / "gateway.db"), max_tokens=2)
    with GatewayThread(settings, config={}) as gw:
        client = anthropic.Anthropic(base_url=gw.url, api_key="anything", max_retries=0)
        reply = client.messages.create(model="local/smollm2", max_tokens=2, system=PREFIX,
                                       messages=[{"role": "user", "content": "Name a fruit."}])
    assert reply.usage.cache_read_input_tokens > 600
