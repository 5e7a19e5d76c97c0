"""Asking for other than one answer per request (OpenAI's ``n``, Gemini's
``candidateCount``) is a 400 that names the field and the fix, in the caller's dialect:
never a 200 with one choice, for a count of 0, -1 or a million alike."""

from __future__ import annotations

from pathlib import Path

import httpx

from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream

KEY = "sk-upstream-choices-12345"
HI = [{"role": "user", "content": "hi"}]


def test_n_other_than_one_is_refused_naming_the_field_and_the_fix(tmp_path: Path) -> None:
    config = {"aliases": {"fake": "openai/gpt-fake"}}
    with OpenAIUpstream(api_key=KEY) as upstream, GatewayThread(
            Settings(log_calls=False, keys_path=str(tmp_path / "g.db")),
            config={**config, "providers": {"openai": {"base_url": upstream.base_url}}}, api_keys={"openai": KEY}) as gw:
        def post(path: str, body: dict) -> httpx.Response:
            return httpx.post(gw.url + path, json=body, timeout=30)

        assert post("/v1/chat/completions", {"model": "fake", "messages": HI, "n": 1}).status_code == 200
        for n in (0, -1, 2, 1_000_000):
            for path, body in (("/v1/chat/completions", {"model": "fake", "messages": HI, "n": n}),
                               ("/v1/completions", {"model": "fake", "prompt": "hi", "n": n})):
                refused = post(path, body)
                assert refused.status_code == 400, (path, n, refused.text)
                error = refused.json()["error"]
                assert error["param"] == "n" and error["message"].startswith("n: "), error
                assert ("leave n out" in error["message"]) and (n < 1 or f"send {n} requests" in error["message"]), error
        for bad in ("2", True, 1.5):
            refused = post("/v1/chat/completions", {"model": "fake", "messages": HI, "n": bad})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "n", (bad, refused.text)

        gemini = "/v1beta/models/fake:generateContent"
        contents = [{"role": "user", "parts": [{"text": "hi"}]}]
        assert post(gemini, {"contents": contents, "generationConfig": {"candidateCount": 0}}).status_code == 200
        for count in (-1, 3):
            refused = post(gemini, {"contents": contents, "generationConfig": {"candidateCount": count}})
            assert refused.status_code == 400 and "generationConfig.candidateCount" in refused.json()["error"]["message"], refused.text
