"""One key cannot freeze the gateway for the others with heavy bodies or stored chains.

Each attack runs from 8 threads at once while a probe measures, again and again, a
``GET /health`` and another key's small request; both must stay quick (median under
100 ms, worst under 500 ms) for as long as the attack lasts. Bounded: 8 requests per
attack, a few MiB each.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.responses_store import ResponseStore, Stored, default_responses_path
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream

UPSTREAM_KEY = "sk-upstream-freeze-secret-1234567"
ATTACKERS = 8
# Many small messages: the shape that costs the most Python per byte to decode.
MESSAGES = 40_000


@pytest.fixture()
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture()
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.db")


def gateway(upstream: OpenAIUpstream, store: KeyStore, **settings: Any) -> GatewayThread:
    config = {"aliases": {"fake": "openai/gpt-fake"}, "providers": {"openai": {"base_url": upstream.base_url}}}
    return GatewayThread(Settings(auth=True, log_calls=False, keys_path=str(store.path), **settings), config=config,
                         api_keys={"openai": UPSTREAM_KEY})


def small_messages(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"m{i}"} for i in range(n)]


def while_attacked(attack: Callable[[], Any], probes: list[Callable[[], None]]) -> tuple[list[Any], dict[int, list[float]]]:
    """Run ``attack`` from ATTACKERS threads; time every probe in turn until they are done."""
    timings: dict[int, list[float]] = {i: [] for i in range(len(probes))}
    with ThreadPoolExecutor(ATTACKERS) as pool:
        started = [pool.submit(attack) for _ in range(ATTACKERS)]
        while not all(f.done() for f in started) or not timings[0]:
            for i, probe in enumerate(probes):
                began = time.perf_counter()
                probe()
                timings[i].append(time.perf_counter() - began)
        return [f.result() for f in started], timings


def assert_responsive(timings: dict[int, list[float]]) -> None:
    for samples in timings.values():
        assert statistics.median(samples) < 0.1, f"median {statistics.median(samples):.3f} s over {len(samples)} probes"
        assert max(samples) < 0.5, f"worst {max(samples):.3f} s over {len(samples)} probes"


def probes(url: str, victim: str) -> list[Callable[[], None]]:
    client = httpx.Client(timeout=30)

    def health() -> None:
        assert client.get(url + "/health").status_code == 200

    def other_key() -> None:
        answer = client.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {victim}"},
                             json={"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
        assert answer.status_code == 200, answer.text

    return [health, other_key]


def test_heavy_bodies_from_a_key_over_its_tpm_do_not_freeze_the_others(upstream: OpenAIUpstream, store: KeyStore) -> None:
    attacker, victim = store.create("heavy", tpm=3000), store.create("victim")
    body = {"model": "fake", "messages": small_messages(MESSAGES), "max_tokens": 5}
    with gateway(upstream, store) as gw:
        client = httpx.Client(timeout=120)

        def attack() -> int:
            return client.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {attacker}"}).status_code

        statuses, timings = while_attacked(attack, probes(gw.url, victim))
    assert statuses == [429] * ATTACKERS
    assert_responsive(timings)


def test_continuations_of_a_large_stored_chain_do_not_freeze_the_others(upstream: OpenAIUpstream, store: KeyStore) -> None:
    attacker, victim = store.create("chains", tpm=3000), store.create("victim")
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
    with gateway(upstream, store) as gw:
        client = httpx.Client(timeout=120)

        def attack() -> int:
            return client.post(gw.url + "/v1/responses", headers={"authorization": f"Bearer {attacker}"},
                               json={"model": "fake", "input": "go on", "previous_response_id": "resp_3", "max_output_tokens": 16}).status_code

        statuses, timings = while_attacked(attack, probes(gw.url, victim))
    assert statuses == [429] * ATTACKERS
    assert_responsive(timings)


def test_a_chain_over_the_limit_is_refused_before_it_is_loaded(upstream: OpenAIUpstream, store: KeyStore) -> None:
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
    with gateway(upstream, store, max_chain_mb=1.0) as gw:
        answer = httpx.post(gw.url + "/v1/responses", headers={"authorization": f"Bearer {key}"},
                            json={"model": "fake", "input": "more", "previous_response_id": "resp_2"})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == "conversation_too_large" and "max_chain_mb" in error["message"]
        shorter = httpx.post(gw.url + "/v1/responses", headers={"authorization": f"Bearer {key}"},
                             json={"model": "fake", "input": "more", "previous_response_id": "resp_1", "max_output_tokens": 8})
        assert shorter.status_code == 200, shorter.text
        assert upstream.request_count == 1


def test_an_item_reference_flood_is_refused_at_once_and_slows_nobody(upstream: OpenAIUpstream, store: KeyStore) -> None:
    attacker, victim = store.create("refs"), store.create("victim")
    with gateway(upstream, store) as gw:
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
