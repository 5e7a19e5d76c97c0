"""A key sees only its own on the Ollama door's listings, and an outage of a shared store
writes a few log lines, not one per refused request."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from modelport import throttle
from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from modelport.throttle import ThrottledLog
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.servers import free_port

UPSTREAM_KEY = "sk-upstream-scoping-secret-12345"


@pytest.fixture()
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


def gateway(upstream: OpenAIUpstream, tmp_path: Path, **settings: object) -> GatewayThread:
    config = {"aliases": {"fake": "openai/gpt-fake", "other": "openai/gpt-fake-mini"}, "providers": {"openai": {"base_url": upstream.base_url}},
              "server": {"models": ["fake", "other"]}}
    return GatewayThread(Settings(auth=True, log_calls=False, keys_path=str(tmp_path / "keys.db"), **settings),  # type: ignore[arg-type]
                         config=config, api_keys={"openai": UPSTREAM_KEY})


def test_ollama_listings_show_a_key_only_its_models_and_its_own_recent_use(upstream: OpenAIUpstream, tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    narrow, wide = store.create("narrow", models=["fake"]), store.create("wide")
    with gateway(upstream, tmp_path) as gw:
        def call(key: str, path: str, body: dict[str, object] | None = None) -> httpx.Response:
            headers = {"authorization": f"Bearer {key}"}
            return httpx.post(gw.url + path, json=body, headers=headers) if body is not None else httpx.get(gw.url + path, headers=headers)

        assert [m["name"] for m in call(narrow, "/api/tags").json()["models"]] == ["fake"]
        assert sorted(m["name"] for m in call(wide, "/api/tags").json()["models"]) == ["fake", "other"]
        hidden = call(narrow, "/api/show", {"model": "other"})
        assert hidden.status_code == 404 and "GET /api/tags" in hidden.json()["error"]  # Ollama's list, not OpenAI's
        for key, model in ((narrow, "fake"), (wide, "other")):
            assert call(key, "/api/chat", {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}).status_code == 200
        assert [m["name"] for m in call(narrow, "/api/ps").json()["models"]] == ["fake"]
        assert [m["name"] for m in call(wide, "/api/ps").json()["models"]] == ["other"]


def test_a_counters_outage_logs_a_few_lines_not_one_per_request(upstream: OpenAIUpstream, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key = store.create("limited", rpm=1000)
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: every booking fails
    caplog.set_level(logging.WARNING, logger="modelport")
    with gateway(upstream, tmp_path, counters=closed) as gw:
        statuses = [httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                               json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]}).status_code for _ in range(40)]
    assert statuses == [503] * 40
    lines = [r for r in caplog.records if r.name.startswith("modelport")]
    assert 1 <= len(lines) <= 6, [r.getMessage() for r in lines]
    assert all("\n" not in r.getMessage() for r in lines)


def test_a_throttled_line_comes_back_with_its_count(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    monkeypatch.setattr(throttle.time, "monotonic", lambda: now[0])
    logger = logging.getLogger("modelport.test-throttle")
    caplog.set_level(logging.WARNING, logger=logger.name)
    lines = ThrottledLog(logger, every=30.0)
    for _ in range(5):
        lines.warning("redis", "store %s is away", "redis")
    now[0] += 31
    lines.warning("redis", "store %s is away", "redis")
    lines.warning("postgres", "store %s is away", "postgres")
    assert [r.getMessage() for r in caplog.records] == [
        "store redis is away", "store redis is away (and 4 more like it in the last 31 s)", "store postgres is away"]
