"""Gateway keys end to end: every way an SDK sends a key, limits, budgets, revocation."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Iterator

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import Answer, OpenAIUpstream
from tests.waiting import wait_for

UPSTREAM_KEY = "sk-upstream-secret"


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("keys") / "gateway.db")


@pytest.fixture(scope="module")
def gateway(upstream: OpenAIUpstream, store: KeyStore) -> Iterator[GatewayThread]:
    config = {
        "aliases": {"gpt-4o-mini": "openai/gpt-4o-mini", "cheap": "openai/gpt-4o-mini"},
        "providers": {"openai": {"base_url": upstream.base_url}},
    }
    settings = Settings(auth=True, log_calls=False, keys_path=str(store.path), max_tokens=100)
    with GatewayThread(settings, config=config, api_keys={"openai": UPSTREAM_KEY}) as gw:
        yield gw


def chat(gw: GatewayThread, key: str, model: str = "gpt-4o-mini", **kw) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi there"}], **kw)


def test_store_keeps_only_salted_hashes(store: KeyStore) -> None:
    key = store.create("hash-check")
    secret = key.split("_", 2)[2]
    with sqlite3.connect(store.path) as db:
        dump = "\n".join(db.iterdump())
    assert secret not in dump and key not in dump
    salts = {row[0] for row in sqlite3.connect(store.path).execute("SELECT salt FROM gateway_keys")}
    assert len(salts) == len(store.records())


def test_every_key_carrier_is_accepted(gateway: GatewayThread, store: KeyStore) -> None:
    key = store.create("carriers")
    assert chat(gateway, key).choices[0].message.content == "echo: hi there"
    message = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0).messages.create(
        model="gpt-4o-mini", max_tokens=20, messages=[{"role": "user", "content": "yo"}])
    assert message.content[0].text == "echo: yo"
    raw = httpx.post(gateway.url + "/v1/messages", headers={"x-api-key": key},
                     json={"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "a"}]})
    assert raw.status_code == 200
    gemini = genai.Client(api_key=key, http_options=gtypes.HttpOptions(base_url=gateway.url, api_version="v1beta"))
    assert gemini.models.generate_content(model="gpt-4o-mini", contents="g").text == "echo: g"
    query = httpx.post(f"{gateway.url}/v1beta/models/gpt-4o-mini:generateContent?key={key}", json={"contents": [{"parts": [{"text": "q"}]}]})
    assert query.status_code == 200


def test_missing_and_wrong_keys_get_401_in_each_dialect(gateway: GatewayThread, store: KeyStore) -> None:
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, "lm-studio")
    real = store.create("tamper")
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, real[:-2] + ("AA" if not real.endswith("AA") else "BB"))
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.url, api_key="nope", max_retries=0).messages.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "a"}])
    response = httpx.post(gateway.url + "/v1beta/models/gpt-4o-mini:generateContent", json={"contents": []})
    assert response.status_code == 401 and response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert response.headers["x-request-id"]
    assert httpx.get(gateway.url + "/health").status_code == 200  # probes need no key
    assert httpx.get(gateway.url + "/metrics").status_code == 401


def test_provider_key_never_reaches_the_caller(gateway: GatewayThread, store: KeyStore, upstream: OpenAIUpstream) -> None:
    key = store.create("leak-check")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert UPSTREAM_KEY not in raw.http_response.text and UPSTREAM_KEY not in str(raw.headers)
    assert upstream.last_request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_rpm_limit_answers_429_with_retry_after(gateway: GatewayThread, store: KeyStore) -> None:
    key = store.create("rpm", rpm=2)
    chat(gateway, key)
    chat(gateway, key)
    with pytest.raises(openai.RateLimitError) as limited:
        chat(gateway, key)
    assert 0 < float(limited.value.response.headers["retry-after"]) <= 60


def test_model_restriction_and_expiry(gateway: GatewayThread, store: KeyStore) -> None:
    key = store.create("only-cheap", models=["cheap"])
    assert chat(gateway, key, model="cheap").choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError):
        chat(gateway, key, model="gpt-4o-mini")
    expired = store.create("expired", expires=time.time() - 1)
    with pytest.raises(openai.AuthenticationError, match="expired"):
        chat(gateway, expired)


def test_revoked_key_is_refused_within_a_second(gateway: GatewayThread, store: KeyStore) -> None:
    key = store.create("short-lived")
    chat(gateway, key)
    assert store.revoke("short-lived")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            chat(gateway, key)
        except openai.AuthenticationError:
            return
        time.sleep(0.1)
    pytest.fail("a revoked key was still accepted after 3 s")


def test_budget_is_never_overshot_under_concurrency(gateway: GatewayThread, store: KeyStore) -> None:
    # gpt-4o-mini costs $0.60 per million output tokens; max_tokens 100 books $0.00006 per call
    # (plus the prompt), so a $0.0003 budget admits at most four calls in flight at once;
    # settled calls cost far less (the fake answers in a few tokens) and free room again.
    key = store.create("budget", budget=0.0003)
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)

    async def one() -> str:
        try:
            await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=100)
            return "ok"
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota"
            assert exc.response.headers["x-should-retry"] == "false"
            return "refused"

    async def burst() -> list[str]:
        return await asyncio.gather(*(one() for _ in range(20)))

    outcomes = asyncio.run(burst())
    assert outcomes.count("ok") >= 4 and "refused" in outcomes
    # The gateway saves usage about once a second.
    record = wait_for(lambda: next((r for r in store.records() if r.name == "budget" and r.requests == outcomes.count("ok")), None),
                      10, "the budget key's usage was not saved")
    assert record.cost <= 0.0003


def test_tpm_limit_counts_real_usage_and_books_max_tokens(gateway: GatewayThread, store: KeyStore, upstream: OpenAIUpstream) -> None:
    key = store.create("tpm", tpm=150)
    upstream.script(Answer(text="long answer", prompt_tokens=3, completion_tokens=90))
    chat(gateway, key, max_tokens=100)  # books ~105 tokens, settles at the 93 used
    with pytest.raises(openai.RateLimitError):
        chat(gateway, key, max_tokens=100)
    with pytest.raises(openai.RateLimitError, match="more than the key's limit") as never:
        chat(gateway, store.create("tpm-small", tpm=50), max_tokens=100)
    assert never.value.response.headers["x-should-retry"] == "false"


def test_keys_cli_create_usage_revoke(tmp_path) -> None:
    from click.testing import CliRunner

    from modelport.cli import main

    db = str(tmp_path / "k.db")
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "ci", "--rpm", "10", "--budget", "5", "--models", "local/*,openai/*", "--expires", "7d", "--store", db])
    assert created.exit_code == 0, created.output
    assert created.stdout.strip().startswith("mpk_")
    usage = runner.invoke(main, ["keys", "usage", "--store", db])
    assert "ci" in usage.output and "10 rpm" in usage.output and "local/*" in usage.output
    assert runner.invoke(main, ["keys", "revoke", "ci", "--store", db]).exit_code == 0
    assert runner.invoke(main, ["keys", "revoke", "ci", "--store", db]).exit_code != 0
