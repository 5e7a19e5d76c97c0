"""The providers' classic quickstart examples, run against the gateway with only the base
URL (and key) changed. The config's aliases give each example's model name a home."""

from __future__ import annotations

from typing import Iterator

import pytest

from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes.anthropic_upstream import AnthropicUpstream
from tests.fakes.openai_upstream import OpenAIUpstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    with OpenAIUpstream() as oa, AnthropicUpstream() as an:
        config = {
            "aliases": {
                "gpt-4o-mini": "openai/gpt-fake",
                "llama-3.3-70b-versatile": "anthropic/claude-fake",
                "gemini-2.5-flash": "openai/gpt-fake",
                "gemma-3-4b-it": "local/smollm2",
            },
            "providers": {"openai": {"base_url": oa.base_url}, "anthropic": {"base_url": an.base_url}},
        }
        # A small max_tokens cap keeps the embedded model's answer to the LM Studio example short.
        settings = Settings(log_calls=False, keys_path=str(tmp_path_factory.mktemp("k") / "g.db"), max_tokens=24)
        with GatewayThread(settings, config=config, api_keys={"openai": "sk-up", "anthropic": "sk-ant-up"}) as gw:
            yield gw


def test_openai_quickstart(gateway: GatewayThread) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=gateway.url + "/v1", api_key="sk-anything")
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}],
    )
    assert completion.choices[0].message.content == "echo: Hello!"


def test_groq_quickstart(gateway: GatewayThread) -> None:
    from groq import Groq

    client = Groq(base_url=gateway.url, api_key="gsk-anything")
    chat_completion = client.chat.completions.create(
        messages=[{"role": "user", "content": "Explain the importance of fast language models"}],
        model="llama-3.3-70b-versatile",
    )
    assert chat_completion.choices[0].message.content == "echo: Explain the importance of fast language models"


def test_lm_studio_quickstart(gateway: GatewayThread) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=gateway.url + "/v1", api_key="lm-studio")
    completion = client.chat.completions.create(
        model="gemma-3-4b-it",
        messages=[
            {"role": "system", "content": "Always answer in rhymes."},
            {"role": "user", "content": "Introduce yourself."},
        ],
        temperature=0.7,
    )
    assert completion.choices[0].message.content


def test_gemini_quickstart(gateway: GatewayThread) -> None:
    from google import genai

    client = genai.Client(api_key="anything", http_options={"base_url": gateway.url})
    response = client.models.generate_content(model="gemini-2.5-flash", contents="Explain how AI works in a few words")
    assert response.text == "echo: Explain how AI works in a few words"
