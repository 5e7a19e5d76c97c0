"""A real third-party OpenAI-compatible server stands in for LM Studio, Ollama and vLLM.

llama.cpp's own HTTP server (shipped inside xllamacpp) serves SmolLM2 on a free loopback
port; the `lmstudio`, `ollama` and `vllm` providers must work against it unchanged, streamed
or not, sync or async.
"""

from __future__ import annotations

import asyncio

import pytest

from modelport import AsyncClient, Client

PROMPT = [{"role": "user", "content": "Name one colour."}]
PARAMS = {"max_tokens": 12, "temperature": 0, "seed": 3}


@pytest.fixture(scope="module")
def llama_server_url():
    xlc = pytest.importorskip("xllamacpp")
    from modelport.local_model import resolve_model

    params = xlc.CommonParams()
    params.model.path = str(resolve_model("smollm2"))
    params.n_parallel = 2
    params.n_ctx = 2048
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.port = 0
    params.cache_ram_mib = 32
    params.verbosity = 0
    server = xlc.Server(params)
    yield server.listening_address.rstrip("/") + "/v1"
    del server


# Ollama speaks its native API by default; its OpenAI-compatible layer is one config line away.
@pytest.mark.parametrize("provider, config", [("lmstudio", {}), ("ollama", {"providers": {"ollama": {"dialect": "openai"}}}), ("vllm", {})])
def test_local_server_providers_answer_without_a_key(llama_server_url, provider, config):
    with Client(base_urls={provider: llama_server_url}, config=config) as client:
        answer = client.chat(f"{provider}/smollm2", PROMPT, **PARAMS)
    assert answer.text.strip()
    assert answer.provider == provider
    assert answer.finish_reason in ("stop", "length")
    assert answer.usage.input_tokens > 0 and 0 < answer.usage.output_tokens <= 12


def test_streamed_answer_equals_the_plain_one_on_a_real_server(llama_server_url):
    with Client(base_urls={"lmstudio": llama_server_url}) as client:
        plain = client.chat("lmstudio/smollm2", PROMPT, **PARAMS)
        stream = client.stream("lmstudio/smollm2", PROMPT, **PARAMS)
        pieces = [event.text for event in stream if event.kind == "text"]
    assert "".join(pieces) == plain.text
    assert stream.response.text == plain.text
    assert stream.response.finish_reason == plain.finish_reason


def test_async_client_on_a_real_server(llama_server_url):
    async def ask_twice():
        async with AsyncClient(base_urls={"lmstudio": llama_server_url}) as client:
            return await asyncio.gather(*(client.chat("lmstudio/smollm2", PROMPT, **PARAMS) for _ in range(2)))

    first, second = asyncio.run(ask_twice())
    assert first.text == second.text != ""
