"""A prompt (or an input to embed) the embedded model's context cannot hold is refused
before the engine tokenizes it (15 MiB used to cost ~100 s of a core for the same 400):
its text alone is more bytes than the context's tokens can stand for, at the
vocabulary's longest token."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from modelport.backends.local import LocalBackend
from modelport.errors import ContextLengthError
from modelport.local_model import default_model_path, longest_token_bytes
from modelport.server import Settings
from modelport.server.testing import GatewayThread
from modelport.types import ChatRequest, Message, TextPart


def never_loaded(*args: object, **kwargs: object) -> None:
    raise AssertionError("the engine was asked to tokenize a prompt that cannot fit")


def test_an_oversized_prompt_is_refused_before_the_engine_sees_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SmolLM2's vocabulary is byte-level BPE; its longest token is a newline and 80 spaces.
    assert longest_token_bytes(default_model_path()) == 81
    monkeypatch.setattr(LocalBackend, "engine", never_loaded)
    text = "hello world " * (1024 * 1024 // 12)  # 1 MiB: over 8192 tokens x 81 bytes
    with pytest.raises(ContextLengthError) as refused:
        LocalBackend().chat(ChatRequest("local/smollm2", [Message("user", [TextPart(text)])], max_tokens=5), "smollm2")
    assert "context of 8192 tokens" in refused.value.message and "n_ctx" in (refused.value.hint or "")
    with pytest.raises(ContextLengthError) as refused:  # the embedding engine's context is 2048 tokens
        LocalBackend().embed(["short", "x" * (200 * 1024)], "smollm2")
    assert refused.value.message.startswith("input[1] is at least") and "context of 2048 tokens" in refused.value.message

    with GatewayThread(Settings(log_calls=False, keys_path=str(tmp_path / "g.db"))) as gw:
        started = time.monotonic()
        answer = httpx.post(gw.url + "/v1/chat/completions", timeout=60, json={
            "model": "local/smollm2", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * (15 * 1024 * 1024)}]})
        seconds = time.monotonic() - started
    assert answer.status_code == 400, answer.text[:300]
    assert "context of 8192 tokens" in answer.json()["error"]["message"]
    assert seconds < 10, seconds
