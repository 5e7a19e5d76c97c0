"""The Gemini door takes the names and paths Gemini callers send: methods without a version
prefix (LiteLLM with the bare gateway URL as api_base) and model names without a provider."""

from __future__ import annotations

from typing import Iterator

import httpx
import pytest
from google import genai
from google.genai import types as gtypes

from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream

BODY = {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    with OpenAIUpstream() as up:
        config = {"providers": {
            "box": {"base_url": up.base_url, "models": ["gpt-fake", "twin"]},
            "other": {"base_url": up.base_url, "models": ["twin"]},
        }}
        settings = Settings(log_calls=False, keys_path=str(tmp_path_factory.mktemp("k") / "g.db"), max_tokens=4)
        with GatewayThread(settings, config=config) as gw:
            yield gw


def test_unversioned_gemini_method_reaches_the_gemini_door(gateway: GatewayThread) -> None:
    r = httpx.post(gateway.url + "/models/local/smollm2:generateContent", json=BODY, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["role"] == "model"


def test_get_models_id_is_still_openais(gateway: GatewayThread) -> None:
    r = httpx.get(gateway.url + "/models/local/smollm2", timeout=30)
    assert r.status_code == 200 and r.json()["object"] == "model"


def test_get_of_a_model_id_with_a_colon_is_not_taken_for_a_gemini_method(gateway: GatewayThread) -> None:
    r = httpx.get(gateway.url + "/v1/models/box/qwen:latest", timeout=30)
    assert r.status_code == 200 and r.json()["id"] == "box/qwen:latest"


@pytest.mark.parametrize("path", ["/v1beta/models/smollm2:generateContent", "/models/smollm2:generateContent",
                                  "/v1beta/models/gpt-fake:generateContent"])
def test_a_name_without_provider_finds_the_one_model_it_names(gateway: GatewayThread, path: str) -> None:
    r = httpx.post(gateway.url + path, json=BODY, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"]


def test_genai_sdk_with_a_gemini_style_name(gateway: GatewayThread) -> None:
    client = genai.Client(api_key="anything", http_options=gtypes.HttpOptions(base_url=gateway.url, api_version="v1beta"))
    answer = client.models.generate_content(model="models/smollm2", contents="Say hi")
    assert answer.text
    assert client.models.get(model="smollm2").name


def test_an_ambiguous_or_unknown_name_is_a_gemini_404_listing_the_models(gateway: GatewayThread) -> None:
    for name in ("twin", "nope"):
        r = httpx.post(gateway.url + f"/v1beta/models/{name}:generateContent", json=BODY, timeout=30)
        assert r.status_code == 404
        error = r.json()["error"]
        assert error["status"] == "NOT_FOUND" and "box/twin" in error["message"] and "other/twin" in error["message"]
