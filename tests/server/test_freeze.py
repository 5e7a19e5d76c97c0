"""One key cannot freeze the gateway for the others with heavy bodies or stored chains.

Each attack runs from 8 threads at once while a probe measures, again and again, a
``GET /health`` and another key's small request; both must stay quick (median under
100 ms, worst under 500 ms) for as long as the attack lasts. The gateway is a `modelport
serve` process of its own, as in use: in this process it would share the GIL with the
attacking threads, and the probes would time the test. Bounded: 8 requests per attack, a
few MiB each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from modelport.server.auth import KeyStore
from modelport.server.limits import message_floor, prompt_token_bound
from modelport.types import ChatRequest, Message
from modelport.server.responses_store import ResponseStore, Stored, default_responses_path
from tests.cluster import START_TIMEOUT, Instance
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.servers import free_port

UPSTREAM_KEY = "sk-upstream-freeze-secret-1234567"
ATTACKERS = 8
# Many small messages: the shape that costs the most Python per byte to decode.
MESSAGES = 40_000
# A limit the messages' framing alone (8 tokens each) stays under, so the gateway decodes the
# body before it can tell that the whole prompt (framing and text) is over it.
TPM_OVER_AFTER_DECODING = 400_000
MIN_PROBES = 10


@pytest.fixture()
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture()
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.db")


@contextlib.contextmanager
def gateway(upstream: OpenAIUpstream, store: KeyStore, tmp_path: Path, **server: Any) -> Iterator[Instance]:
    config = tmp_path / "gateway.toml"
    settings = {"auth": True, "log_calls": False, "keys_path": str(store.path), **server}
    config.write_text("[server]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
                      + f'[aliases]\nfake = "openai/gpt-fake"\n[providers.openai]\nbase_url = "{upstream.base_url}"\n')
    port = free_port()
    instance = Instance("gateway", port, [sys.executable, "-m", "modelport", "serve", "--port", str(port), "--config", str(config)],
                        {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY}, tmp_path / "gateway.log")
    instance.start()
    try:
        instance.wait_ready(time.monotonic() + START_TIMEOUT)
        yield instance
    finally:
        instance.stop()


def small_messages(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"m{i}"} for i in range(n)]


def while_attacked(attack: Callable[[], Any], probes: list[Callable[[], None]]) -> tuple[list[Any], dict[int, list[float]]]:
    """Run ``attack`` from ATTACKERS threads; time every probe in turn until they are done."""
    timings: dict[int, list[float]] = {i: [] for i in range(len(probes))}
    for probe in probes:
        probe()  # connections open and the victim's key known before the clock starts
    with ThreadPoolExecutor(ATTACKERS) as pool:
        started = [pool.submit(attack) for _ in range(ATTACKERS)]
        while not all(f.done() for f in started) or len(timings[0]) < MIN_PROBES:
            for i, probe in enumerate(probes):
                began = time.perf_counter()
                probe()
                timings[i].append(time.perf_counter() - began)
        return [f.result() for f in started], timings


def assert_responsive(timings: dict[int, list[float]]) -> None:
    for samples in timings.values():
        assert statistics.median(samples) < 0.1, f"median {statistics.median(samples):.3f} s over {len(samples)} probes"
        assert max(samples) < 0.5, f"worst {sorted(samples)[-5:]} s over {len(samples)} probes"


def probes(url: str, victim: str) -> list[Callable[[], None]]:
    client = httpx.Client(timeout=30)

    def health() -> None:
        assert client.get(url + "/health").status_code == 200

    def other_key() -> None:
        answer = client.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {victim}"},
                             json={"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
        assert answer.status_code == 200, answer.text

    return [health, other_key]


def test_heavy_bodies_from_a_key_over_its_tpm_do_not_freeze_the_others(upstream: OpenAIUpstream, store: KeyStore, tmp_path: Path) -> None:
    attacker, victim = store.create("heavy", tpm=TPM_OVER_AFTER_DECODING), store.create("victim")
    # Encoded once: eight client threads encoding megabytes of JSON would hold this process's
    # GIL, which the gateway thread shares, and the probes would time the test, not the gateway.
    body = json.dumps({"model": "fake", "messages": small_messages(MESSAGES), "max_tokens": 5}).encode()
    with gateway(upstream, store, tmp_path) as gw:
        client = httpx.Client(timeout=120)

        def attack() -> int:
            return client.post(gw.url + "/v1/chat/completions", content=body,
                               headers={"authorization": f"Bearer {attacker}", "content-type": "application/json"}).status_code

        statuses, timings = while_attacked(attack, probes(gw.url, victim))
    assert statuses == [429] * ATTACKERS
    assert_responsive(timings)


def test_continuations_of_a_large_stored_chain_do_not_freeze_the_others(upstream: OpenAIUpstream, store: KeyStore, tmp_path: Path) -> None:
    attacker, victim = store.create("chains", tpm=TPM_OVER_AFTER_DECODING), store.create("victim")
    owner = next(r.id for r in store.records() if r.name == "chains")
    items = [{"type": "message", "role": "user", "content": f"m{i}", "id": f"msg_{i}"} for i in range(MESSAGES // 4)]

    async def build_chain() -> None:
        responses = ResponseStore(default_responses_path({}))
        previous = None
        for turn in range(4):
            await responses.persist(owner, Stored({"id": f"resp_{turn}", "object": "response", "previous_response_id": previous,
                                                   "output": []}, items))
            previous = f"resp_{turn}"
        await responses.aclose()

    asyncio.run(build_chain())
    with gateway(upstream, store, tmp_path) as gw:
        client = httpx.Client(timeout=120)

        def attack() -> int:
            return client.post(gw.url + "/v1/responses", headers={"authorization": f"Bearer {attacker}"},
                               json={"model": "fake", "input": "go on", "previous_response_id": "resp_3", "max_output_tokens": 16}).status_code

        statuses, timings = while_attacked(attack, probes(gw.url, victim))
    assert statuses == [429] * ATTACKERS
    assert_responsive(timings)


def test_a_chain_over_the_limit_is_refused_before_it_is_loaded(upstream: OpenAIUpstream, store: KeyStore, tmp_path: Path) -> None:
    key = store.create("long")
    owner = next(r.id for r in store.records() if r.name == "long")
    big = [{"type": "message", "role": "user", "content": "x" * 400_000, "id": "msg_big"}]

    async def build_chain() -> None:
        responses = ResponseStore(default_responses_path({}))
        for turn in range(3):
            await responses.persist(owner, Stored({"id": f"resp_{turn}", "previous_response_id": f"resp_{turn - 1}" if turn else None,
                                                   "output": []}, big))
        await responses.aclose()

    asyncio.run(build_chain())
    with gateway(upstream, store, tmp_path, max_chain_mb=1.0) as gw:
        answer = httpx.post(gw.url + "/v1/responses", headers={"authorization": f"Bearer {key}"},
                            json={"model": "fake", "input": "more", "previous_response_id": "resp_2"})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == "conversation_too_large" and "max_chain_mb" in error["message"]
        shorter = httpx.post(gw.url + "/v1/responses", headers={"authorization": f"Bearer {key}"},
                             json={"model": "fake", "input": "more", "previous_response_id": "resp_1", "max_output_tokens": 8})
        assert shorter.status_code == 200, shorter.text
        assert upstream.request_count == 1


def test_an_item_reference_flood_is_refused_at_once_and_slows_nobody(upstream: OpenAIUpstream, store: KeyStore, tmp_path: Path) -> None:
    attacker, victim = store.create("refs"), store.create("victim")
    with gateway(upstream, store, tmp_path) as gw:
        client = httpx.Client(timeout=60)
        made = client.post(gw.url + "/v1/responses", headers={"authorization": f"Bearer {victim}"},
                           json={"model": "fake", "input": "keep me", "max_output_tokens": 8})
        stored_id = made.json()["id"]
        flood = [{"type": "item_reference", "id": f"msg_{i}"} for i in range(230_000)]
        too_many = client.post(gw.url + "/v1/responses", headers={"authorization": f"Bearer {attacker}"},
                               json={"model": "fake", "input": flood})
        assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "too_many_item_references"
        unknown = [{"type": "item_reference", "id": f"msg_{i}"} for i in range(1000)]

        def attack() -> int:
            return client.post(gw.url + "/v1/responses", headers={"authorization": f"Bearer {attacker}"},
                               json={"model": "fake", "input": unknown}).status_code

        def others_response() -> None:
            got = client.get(gw.url + f"/v1/responses/{stored_id}", headers={"authorization": f"Bearer {victim}"})
            assert got.status_code == 200

        statuses, timings = while_attacked(attack, [others_response])
    assert statuses == [404] * ATTACKERS
    assert_responsive(timings)


def test_a_key_whose_limit_the_messages_alone_exceed_is_refused_before_decoding(upstream: OpenAIUpstream, store: KeyStore,
                                                                                 tmp_path: Path) -> None:
    key = store.create("small", tpm=3000)
    body = {"model": "fake", "messages": small_messages(MESSAGES), "max_tokens": 5}
    with gateway(upstream, store, tmp_path) as gw:
        answer = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=60)
    assert answer.status_code == 429
    # The floor of the framing alone, not a decoded bound: the body was never decoded.
    assert f"may use {message_floor(MESSAGES)} tokens" in answer.json()["error"]["message"]


@pytest.mark.parametrize("messages", [0, 1, 3, 50])
def test_the_message_floor_never_exceeds_what_the_request_books(messages: int) -> None:
    request = ChatRequest("m", [Message("user" if i % 2 == 0 else "assistant", []) for i in range(messages)])
    assert message_floor(messages) <= prompt_token_bound(request)
