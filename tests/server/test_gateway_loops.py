"""The gateway routes only to providers the config enables, and stops routing loops.

The built-in keyless providers (lmstudio, ollama, vllm) point at localhost ports; LM Studio's
port is also the gateway's default, so `lmstudio/...` once routed back into the gateway
itself, one request becoming 22."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import anthropic
import httpx
import openai
import pytest

from modelport.server import Settings
from modelport.server.testing import GatewayThread


def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(log_calls=False, keys_path=str(tmp_path_factory.mktemp("k") / "g.db"), max_tokens=4)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    with GatewayThread(settings(tmp_path_factory)) as gw:
        yield gw


@pytest.mark.parametrize("provider", ["lmstudio", "ollama", "vllm"])
def test_keyless_local_providers_are_refused_unless_the_config_enables_them(plain: GatewayThread, provider: str) -> None:
    r = httpx.post(plain.url + "/v1/chat/completions", json={"model": f"{provider}/x", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert f"add a [providers.{provider}] table to the config file" in message
    assert plain.app is not None and plain.app.metrics.in_flight == 0


def test_the_refusal_is_in_the_callers_dialect(plain: GatewayThread) -> None:
    client = anthropic.Anthropic(base_url=plain.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.NotFoundError, match=r"\[providers.lmstudio\]"):
        client.messages.create(model="lmstudio/x", max_tokens=4, messages=[{"role": "user", "content": "hi"}])


def requests_seen(gw: GatewayThread) -> int:
    assert gw.app is not None
    return sum(n for (door, *_), n in gw.app.metrics.requests.items() if door == "openai")


def test_a_provider_pointing_back_at_the_gateway_is_a_loop_error_after_two_hops(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The alias makes the loop endless: each hop asks the gateway for "x" again.
    config = {"providers": {"lmstudio": {}}, "aliases": {"x": "lmstudio/x"}}
    # A short deadline, so that without loop detection this fails instead of hanging.
    with GatewayThread(replace(settings(tmp_path_factory), request_timeout=10), config=config) as gw:
        # Enabled, and (as with the default ports) pointing at the gateway itself.
        monkeypatch.setenv("MODELPORT_LMSTUDIO_BASE_URL", gw.url + "/v1")
        # The SDK's own retries stay on: the answer tells it not to retry a loop.
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="lm-studio")
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 508
        assert "routing loop detected" in caught.value.message, caught.value.message
        # The caller's request and at most two hops back into the gateway.
        assert requests_seen(gw) <= 3


def test_a_hop_count_at_the_limit_is_refused_in_the_callers_dialect(plain: GatewayThread) -> None:
    r = httpx.post(plain.url + "/v1/messages", headers={"x-modelport-hops": "2"},
                   json={"model": "local/smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert r.status_code == 508 and r.headers["x-should-retry"] == "false"
    assert r.json()["type"] == "error" and "routing loop detected" in r.json()["error"]["message"]


def test_one_gateway_in_front_of_another_still_works(tmp_path_factory: pytest.TempPathFactory, plain: GatewayThread) -> None:
    config = {"providers": {"inner": {"base_url": plain.url + "/v1"}}}
    with GatewayThread(settings(tmp_path_factory), config=config) as outer:
        r = httpx.post(outer.url + "/v1/chat/completions", timeout=120,
                       json={"model": "inner/local/smollm2", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
