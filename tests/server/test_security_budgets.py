"""Budgets, tpm and metrics hold against upstreams without usage, dropped streams, CJK
prompts, floods of model names, and a --config file given to `modelport serve` (issue #9,
items 4, 5, 11 and 14). Real gateways, fake upstreams, real SDK and HTTP clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import httpx
import openai
import pytest

from modelport.server import Settings
from modelport.server.auth import KeyRecord, KeyStore
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import Answer, OpenAIUpstream
from tests.fakes.server import stall_stream

UPSTREAM_KEY = "sk-upstream-secret"
# gpt-4o-mini list prices, USD per million tokens (modelport/data/prices.json).
INPUT_PRICE, OUTPUT_PRICE = 0.15, 0.60


@contextlib.contextmanager
def gateway_for(upstream: OpenAIUpstream, store: KeyStore, max_tokens: int = 4096) -> Iterator[GatewayThread]:
    config = {"aliases": {"gpt-4o-mini": "openai/gpt-4o-mini"}, "providers": {"openai": {"base_url": upstream.base_url}}}
    settings = Settings(auth=True, log_calls=False, keys_path=str(store.path), max_tokens=max_tokens)
    with GatewayThread(settings, config=config, api_keys={"openai": UPSTREAM_KEY}) as gw:
        yield gw


@pytest.fixture()
def store(tmp_path) -> KeyStore:
    return KeyStore(tmp_path / "gateway.db")


def saved_record(store: KeyStore, name: str, requests: int, timeout: float = 10.0) -> KeyRecord:
    """The key's row once the gateway has saved ``requests`` requests (it saves about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        record = next(r for r in store.records() if r.name == name)
        if record.requests >= requests or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


# -- item 4: usage that never arrives --------------------------------------------------------


def test_upstream_without_usage_is_charged_until_the_budget_stops_the_key(store: KeyStore) -> None:
    with OpenAIUpstream(api_key=UPSTREAM_KEY, send_usage=False) as upstream, gateway_for(upstream, store, max_tokens=100) as gw:
        key = store.create("no-usage", budget=0.001)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
        prompt = words(200)
        answered = 0
        with pytest.raises(openai.RateLimitError, match="budget exhausted"):
            for _ in range(40):  # before the fix every call cost $0 and all 40 were answered
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
                answered += 1
        assert 1 <= answered < 40
        record = saved_record(store, "no-usage", answered)
        assert record.requests == answered
        assert 0 < record.cost <= 0.001
        assert record.input_tokens >= answered * len(prompt.split())  # at least a token per word sent


def test_stream_dropped_before_its_usage_chunk_is_charged_for_what_was_delivered(store: KeyStore) -> None:
    n_words = 600
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as upstream, gateway_for(upstream, store) as gw:
        key = store.create("dropper")
        upstream.script(Answer(text=words(n_words)))
        # The fake sends a role chunk, one chunk per word and the finish chunk, then would send
        # usage: it stalls instead, and the client hangs up having read the whole answer.
        upstream.inject(stall_stream(after=n_words + 2))
        body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 4000, "messages": [{"role": "user", "content": "talk"}]}
        delivered = []
        with httpx.Client(timeout=10) as client:
            with client.stream("POST", gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    delivered.append(line)
                    if '"finish_reason":"stop"' in line.replace(" ", ""):
                        break  # drop the stream just before the usage chunk
        assert sum('"content"' in line for line in delivered) >= n_words
        record = saved_record(store, "dropper", 1)
        assert record.requests == 1
        assert record.output_tokens >= n_words  # before the fix: 0
        assert record.input_tokens > 0


def test_tpm_key_streaming_without_usage_is_held_to_its_tpm(store: KeyStore) -> None:
    tpm, n_words = 2000, 300
    with OpenAIUpstream(api_key=UPSTREAM_KEY, send_usage=False) as upstream, gateway_for(upstream, store) as gw:
        key = store.create("tpm-no-usage", tpm=tpm)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
        delivered_tokens = 0  # in the fake's own count: one token per word
        with pytest.raises(openai.RateLimitError, match="tokens per minute"):
            for _ in range(20):  # before the fix all 20 streams (6,000 tokens) went through
                upstream.script(Answer(text=words(n_words)))
                stream = client.chat.completions.create(model="gpt-4o-mini", stream=True, max_tokens=400,
                                                        messages=[{"role": "user", "content": "go"}])
                text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
                delivered_tokens += len(text.split())
        assert 0 < delivered_tokens <= tpm
        upstream.clear()


# -- item 5: reservations that bound the real cost --------------------------------------------


def test_concurrent_cjk_prompts_never_overshoot_a_budget(store: KeyStore) -> None:
    # 1,000 CJK characters are about 1,000 tokens (the fake reports exactly that), but only
    # 250 by a four-characters-per-token estimate: booked that way, all 40 requests fit the
    # budget at once and then cost 3.5 times it. Booked by UTF-8 bytes (3 per character),
    # only as many are admitted as the budget can pay for at their worst.
    budget, n, chars, max_tokens = 0.002, 40, 1000, 10
    prompt = "漢字" * (chars // 2)
    with OpenAIUpstream(api_key=UPSTREAM_KEY, latency=1.0) as upstream, gateway_for(upstream, store) as gw:
        upstream.script(*(Answer(text="好", prompt_tokens=chars + 10, completion_tokens=max_tokens) for _ in range(n)))
        key = store.create("cjk", budget=budget)
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=60)

        async def one() -> str:
            try:
                await client.chat.completions.create(model="gpt-4o-mini", max_tokens=max_tokens,
                                                     messages=[{"role": "user", "content": prompt}])
                return "ok"
            except openai.RateLimitError as exc:
                assert exc.code == "insufficient_quota"
                return "refused"

        async def burst() -> list[str]:
            return await asyncio.gather(*(one() for _ in range(n)))

        outcomes = asyncio.run(burst())
        admitted = outcomes.count("ok")
        assert admitted >= 1 and "refused" in outcomes
        record = saved_record(store, "cjk", admitted)
        assert record.requests == admitted
        real_cost = ((chars + 10) * INPUT_PRICE + max_tokens * OUTPUT_PRICE) / 1e6
        assert record.cost == pytest.approx(admitted * real_cost)
        # The README's bound: requests are booked at a cost they cannot exceed, so the spend
        # stays within the budget (before the fix: about 3.2 times it).
        assert record.cost <= budget


# -- item 11: /metrics stays small -------------------------------------------------------------


def _pipelined(port: int, requests: list[bytes]) -> list[int]:
    """Send the requests back to back on one keep-alive connection; the statuses, in order.
    (A client that waits for each answer would make 20,000 requests take minutes.)"""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        writer = threading.Thread(target=lambda: [sock.sendall(r) for r in requests], daemon=True)
        writer.start()
        received = b""
        while received.count(b"HTTP/1.1 ") < len(requests):
            data = sock.recv(1 << 20)
            assert data, "the gateway closed the connection"
            received += data
        writer.join(timeout=60)
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


def test_a_flood_of_model_names_leaves_metrics_small(store: KeyStore) -> None:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as upstream, gateway_for(upstream, store) as gw:
        key = store.create("narrow", models=["gpt-4o-mini"])
        names, connections = 20_000, 8
        batches: list[list[bytes]] = [[] for _ in range(connections)]
        for i in range(names):
            # Every name routes (openai/<anything> is a valid target) and is then refused for
            # this key; every fourth request carries no key at all.
            body = b'{"model":"openai/bogus-%d","messages":[{"role":"user","content":"x"}]}' % i
            auth = f"authorization: Bearer {key}\r\n".encode() if i % 4 else b""
            batches[i % connections].append(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n%s"
                b"content-length: %d\r\n\r\n%s" % (auth, len(body), body))
        results: list[list[int]] = []
        threads = [threading.Thread(target=lambda b=b: results.append(_pipelined(gw.port, b))) for b in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        statuses = [status for result in results for status in result]
        assert len(statuses) == names and set(statuses) == {401, 403}
        metrics = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {key}"})
        assert metrics.status_code == 200
        text = metrics.text
        series = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert "bogus" not in text
        assert len(series) < 200, len(series)  # before the fix: one per name, 98 MB for 20,000
        assert len(metrics.content) < 64 * 1024
        assert 'model="other"' in text


# -- item 14: `serve --config` reaches prices ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_config_file_prices_make_budget_keys_work(tmp_path, store: KeyStore) -> None:
    with OpenAIUpstream() as upstream:
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'[providers.mybox]\nbase_url = "{upstream.base_url}"\n\n'
            '[prices]\n"mybox/*" = { input = 1.0, output = 2.0 }\n\n'
            "[server]\nmax_tokens = 50\n",
            encoding="utf-8",
        )
        key = store.create("budgeted", budget=1.0)
        port = _free_port()
        env = {**os.environ, "MODELPORT_GATEWAY_KEYS": str(store.path), "MODELPORT_LOG": "0"}
        process = subprocess.Popen(
            [sys.executable, "-m", "modelport", "serve", "--config", str(config), "--port", str(port), "--auth"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stdout.read()
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.2)
            client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            # Before the fix: 403 "model 'mybox/anything' has no known price" despite [prices].
            answer = client.chat.completions.create(model="mybox/anything", messages=[{"role": "user", "content": "priced"}])
            assert answer.choices[0].message.content == "echo: priced"
            assert upstream.last_request.body["max_tokens"] == 50  # [server] of the same file
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        record = next(r for r in store.records() if r.name == "budgeted")
        # One input word and two output words at $1 and $2 per million tokens.
        assert record.requests == 1 and record.cost == pytest.approx((1 * 1.0 + 2 * 2.0) / 1e6)


def test_a_clients_own_config_reaches_its_cache_and_its_logged_prices(openai_upstream: OpenAIUpstream) -> None:
    # The gateway's client is built the same way: one loaded config for routing, [cache],
    # [log] and the [prices] its call log costs calls at, not the default file for some of them.
    from modelport import Client
    from modelport.calllog import log_for

    config = {
        "providers": {"mybox": {"base_url": openai_upstream.base_url}},
        "prices": {"mybox/*": {"input": 1.0, "output": 2.0}},
        "cache": {"enabled": True},
    }
    client = Client(config=config, log=True)
    first = client.chat("mybox/m", "cached prompt")
    second = client.chat("mybox/m", "cached prompt")
    assert second.text == first.text == "echo: cached prompt"
    assert openai_upstream.request_count == 1  # the second answer came from [cache]
    log = log_for("sdk", True)
    assert log is not None and log.flush(10)
    calls = log.query(provider="mybox", oldest_first=True)
    assert calls[0].cost == pytest.approx((2 * 1.0 + 3 * 2.0) / 1e6)  # two words in, three out
