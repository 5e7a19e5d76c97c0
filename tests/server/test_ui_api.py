"""The console's JSON endpoints and static pages, against a live gateway."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from modelport.types import ChatRequest, ChatResponse, Message, Usage
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.paths import ROOT

UPSTREAM_KEY = "sk-upstream-console-secret-123456"
STATIC = ROOT / "modelport" / "server" / "ui" / "static"


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


def _config(upstream: OpenAIUpstream) -> dict:
    return {"aliases": {"fake": "openai/gpt-fake"}, "providers": {"openai": {"base_url": upstream.base_url}}}


@pytest.fixture()
def open_gw(upstream: OpenAIUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    settings = Settings(log_calls=True, keys_path=str(tmp_path / "keys.db"), batch_dir=str(tmp_path / "batches"))
    with GatewayThread(settings, config=_config(upstream), api_keys={"openai": UPSTREAM_KEY}) as gw:
        yield gw


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, str]:
    store = KeyStore(tmp_path / "keys.db")
    made = {"admin": store.create("boss", admin=True), "normal": store.create("alice"), "bob": store.create("bob")}
    store.close()
    return made


@pytest.fixture()
def auth_gw(upstream: OpenAIUpstream, tmp_path: Path, keys: dict[str, str]) -> Iterator[GatewayThread]:
    settings = Settings(auth=True, log_calls=True, keys_path=str(tmp_path / "keys.db"), batch_dir=str(tmp_path / "batches"))
    with GatewayThread(settings, config=_config(upstream), api_keys={"openai": UPSTREAM_KEY}) as gw:
        yield gw


def key_id(key: str) -> str:
    """The public id part of a gateway key (mpk_<id>_<secret>)."""
    return key.split("_")[1]


def client(gw: GatewayThread, key: str | None = None) -> httpx.Client:
    # As the console's own script: its header on every call (console changes need it).
    headers = {"x-modelport-console": "1", **({"authorization": f"Bearer {key}"} if key else {})}
    return httpx.Client(base_url=gw.url, timeout=60, headers=headers)


def seed(gw: GatewayThread, n: int, ids: dict[str, str] | None = None) -> None:
    """n calls in the gateway's own log: alternating models, keys (by name, and by id when
    ``ids`` gives them), sources; every 10th failed."""
    ids = ids or {}
    log = gw.app.call_log
    assert log is not None
    for i in range(n):
        model = ("gpt-fake", "gpt-fake-mini")[i % 2]
        request = ChatRequest(f"openai/{model}", [Message.user(f"question number {i} about {'zebras' if i % 3 == 0 else 'lions'}")])
        if i % 10 == 9:
            log.record(request, error="upstream broke", provider="openai", model=model, source="gateway", key_name="alice",
                       key_id=ids.get("alice"))
        else:
            response = ChatResponse(f"r{i}", model, Message.assistant(f"answer {i}"), usage=Usage(10, 5), provider="openai")
            log.record(request, response, provider="openai", model=model, source=("gateway", "batch")[i % 2 == 0 and i % 4 == 0],
                       key_name=("alice", "bob")[i % 2], key_id=ids.get(("alice", "bob")[i % 2]), latency=0.1)
    assert log.flush(10)


# -- static pages ----------------------------------------------------------------------------


def test_pages_are_served_with_a_strict_policy_and_cache_headers(open_gw: GatewayThread) -> None:
    with client(open_gw) as c:
        page = c.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-cache"
        again = c.get("/ui/", headers={"if-none-match": page.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        script = c.get("/ui/app.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert "max-age" in script.headers["cache-control"]
        for bad in ("/ui/../pyproject.toml", "/ui/nope.js", "/ui/%2e%2e/app.py", "/ui/api.py"):
            assert c.get(bad).status_code == 404, bad
        assert c.post("/ui", content=b"x").status_code == 405


def test_no_inline_script_and_no_third_party_origin() -> None:
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert not re.search(r"\son[a-z]+=", html)
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path.name
        assert "innerHTML" not in text and "eval(" not in text, path.name


# -- open gateway (loopback, auth off): everything open ----------------------------------------


def test_models_group_by_provider_and_never_show_a_key(open_gw: GatewayThread) -> None:
    with client(open_gw) as c:
        body = c.get("/ui/api/models")
    assert body.status_code == 200
    data = body.json()
    providers = {p["provider"]: p for p in data["providers"]}
    assert "fake" in providers["openai"]["models"] and providers["openai"]["key_set"] is True
    assert providers["local"]["models"] == ["local/smollm2"]
    assert providers["anthropic"]["key_set"] is False
    assert data["prices"]["local/smollm2"] == {"input": 0.0, "output": 0.0}
    assert UPSTREAM_KEY not in body.text and "upstream-console" not in body.text


def test_logs_paginate_and_filter(open_gw: GatewayThread) -> None:
    seed(open_gw, 120)
    with client(open_gw) as c:
        first = c.get("/ui/api/logs", params={"limit": 50}).json()
        assert len(first["calls"]) == 50 and first["next"] is not None
        second = c.get("/ui/api/logs", params={"limit": 50, "before": first["next"]}).json()
        third = c.get("/ui/api/logs", params={"limit": 50, "before": second["next"]}).json()
        assert len(third["calls"]) == 20 and third["next"] is None
        seqs = [x["seq"] for page in (first, second, third) for x in page["calls"]]
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 120

        def count(**params: str) -> int:
            response = c.get("/ui/api/logs", params={"limit": 500, **params})
            assert response.status_code == 200, response.text
            return len(response.json()["calls"])

        assert count(q="zebras") == 40
        assert count(q="zebras", model="gpt-fake-mini") == 20
        assert count(model="openai/gpt-fake") == 60
        assert count(provider="openai") == 120 and count(provider="gemini") == 0
        assert count(status="error") == 12 and count(status="ok") == 108
        assert count(key="bob") == 48  # odd rows, less the failed ones (alice's)
        assert count(source="batch") == 30
        assert count(since="1h") == 120 and count(until="2000-01-01") == 0
        call = c.get("/ui/api/logs", params={"q": "number 7 lions"}).json()["calls"][0]
        full = c.get(f"/ui/api/logs/{call['id']}").json()
        assert full["request"]["messages"][0]["content"][0]["text"].startswith("question number 7") or "question number 7" in full["prompt"]
        assert full["response_text"] == "answer 7" and full["usage"]["input_tokens"] == 10


@pytest.mark.parametrize("path", [
    "/ui/api/logs?limit=0", "/ui/api/logs?limit=abc", "/ui/api/logs?before=-1", "/ui/api/logs?since=yesterday-ish",
    "/ui/api/logs?status=maybe", "/ui/api/logs/not-an-id", "/ui/api/usage?by=colour", "/ui/api/usage?bucket=week",
    "/ui/api/batches/nope/cancel", "/ui/api/nothing-here", "/ui/api/logs/01ARZ3NDEKTSV4RRFFQ69G5FAV",
])
def test_bad_input_is_a_4xx_never_a_500(open_gw: GatewayThread, path: str) -> None:
    with client(open_gw) as c:
        method = "POST" if path.endswith("/cancel") else "GET"
        response = c.request(method, path)
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
    assert response.json()["error"]["message"]


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b'{"name": ""}', b'{"name": "x", "rpm": -3}',
                                  b'{"name": "x", "budget": "lots"}', b'{"name": "x", "models": 7}', b'{"name": "x", "admin": "yes"}'])
def test_bad_key_bodies_are_400(open_gw: GatewayThread, body: bytes) -> None:
    with client(open_gw) as c:
        response = c.post("/ui/api/keys", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text


def test_usage_groups_over_time_and_exports_csv(open_gw: GatewayThread) -> None:
    seed(open_gw, 40)
    with client(open_gw) as c:
        by_model = c.get("/ui/api/usage", params={"by": "model"}).json()
        totals = {t["group"]: t for t in by_model["totals"]}
        assert set(totals) == {"openai/gpt-fake", "openai/gpt-fake-mini"}
        assert totals["openai/gpt-fake"]["calls"] == 20 and totals["openai/gpt-fake-mini"]["errors"] == 4
        # Failed calls cost nothing: 16 answered calls of 10 input tokens each.
        assert totals["openai/gpt-fake-mini"]["input_tokens"] == 160
        assert all(row["time"] == time.strftime("%Y-%m-%d", time.gmtime()) for row in by_model["series"])
        by_key = {t["group"]: t["calls"] for t in c.get("/ui/api/usage", params={"by": "key", "bucket": "hour"}).json()["totals"]}
        assert by_key == {"alice": 24, "bob": 16}
        exported = c.get("/ui/api/usage", params={"by": "source", "format": "csv"})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        assert "attachment" in exported.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert {r["group"] for r in rows} == {"gateway", "batch"} and sum(int(r["calls"]) for r in rows) == 40


def test_usage_shows_cached_input_and_what_caching_saved(open_gw: GatewayThread) -> None:
    log = open_gw.app.call_log
    assert log is not None
    request = ChatRequest("anthropic/claude-sonnet-4-5", [Message.user("a long prompt")])
    response = ChatResponse("r", "claude-sonnet-4-5", Message.assistant("ok"), usage=Usage(10_000, 5, cached_tokens=9_000))
    log.record(request, response, provider="anthropic", model="claude-sonnet-4-5", source="gateway", key_name="alice")
    assert log.flush(10)
    with client(open_gw) as c:
        totals = {t["group"]: t for t in c.get("/ui/api/usage", params={"by": "model"}).json()["totals"]}
    # 9,000 tokens read at $0.30 instead of $3 per million.
    claude = totals["anthropic/claude-sonnet-4-5"]
    assert claude["cached_tokens"] == 9_000 and claude["cache_saved"] == pytest.approx(0.0243)


def test_batch_upload_dry_run_then_start(open_gw: GatewayThread, upstream: OpenAIUpstream) -> None:
    content = "city\n" + "\n".join(f"town{i}" for i in range(20)) + "\n"
    job = {"filename": "towns.csv", "content": content, "prompt": "Describe {city}", "model": "fake", "max_tokens": 16}
    with client(open_gw) as c:
        estimate = c.post("/ui/api/batches/estimate", json=job).json()
        assert estimate["rows"] == 20 and estimate["output_tokens"] == 320 and estimate["sample_prompt"] == "Describe town0"
        assert c.post("/ui/api/batches/estimate", json={**job, "prompt": "Describe {country}"}).status_code == 400
        assert c.post("/ui/api/batches/estimate", json={**job, "filename": "towns.exe"}).status_code == 400
        assert c.post("/ui/api/batches/estimate", json={**job, "model": "nosuch/model"}).status_code == 404
        started = c.post("/ui/api/batches", json=job)
        assert started.status_code == 200, started.text
        batch_id = started.json()["id"]
        deadline = time.monotonic() + 60
        while True:
            [row] = [b for b in c.get("/ui/api/batches").json()["batches"] if b["id"] == batch_id]
            if row["status"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert row["status"] == "completed" and row["done"] == 20 and row["total"] == 20 and row["failed"] == 0
        output = c.get(f"/ui/api/batches/{batch_id}/output")
        assert output.status_code == 200
        lines = output.text.splitlines()
        assert len(lines) == 20 and "echo: Describe town" in output.text


# -- auth on: no key, a normal key, an admin key -----------------------------------------------


def test_access_by_key(auth_gw: GatewayThread, keys: dict[str, str]) -> None:
    with client(auth_gw) as anonymous:
        assert anonymous.get("/ui").status_code == 200  # the page itself asks for the key
        for path in ("me", "models", "logs", "usage", "keys", "batches"):
            assert anonymous.get(f"/ui/api/{path}").status_code == 401, path
    with client(auth_gw, "mpk_000000000000_" + "x" * 43) as forged:
        assert forged.get("/ui/api/me").status_code == 401
    seed(auth_gw, 20, {"alice": key_id(keys["normal"]), "bob": key_id(keys["bob"])})
    with client(auth_gw, keys["normal"]) as alice:
        assert alice.get("/ui/api/me").json() == {"auth": True, "admin": False, "key": "alice"}
        assert alice.get("/ui/api/models").status_code == 200
        own = alice.get("/ui/api/usage", params={"by": "key"}).json()["totals"]
        assert [t["group"] for t in own] == ["alice"]
        assert alice.get("/ui/api/usage", params={"key": "bob"}).status_code == 403
        for method, path in (("GET", "logs"), ("GET", "keys"), ("POST", "keys"), ("GET", "batches"), ("DELETE", "keys/bob"),
                             ("POST", "batches/estimate")):
            response = alice.request(method, f"/ui/api/{path}", json={"name": "sneaky"} if method == "POST" else None)
            assert response.status_code == 403, (method, path, response.text)
    with client(auth_gw, keys["admin"]) as boss:
        assert boss.get("/ui/api/me").json()["admin"] is True
        assert len(boss.get("/ui/api/logs").json()["calls"]) == 20
        listed = boss.get("/ui/api/keys")
        assert {k["name"] for k in listed.json()["keys"]} == {"boss", "alice", "bob"}
        for secret in keys.values():
            assert secret.split("_", 2)[2] not in listed.text
        assert "salt" not in listed.text and "hash" not in listed.text


def test_create_and_revoke_a_key(auth_gw: GatewayThread, keys: dict[str, str], upstream: OpenAIUpstream) -> None:
    with client(auth_gw, keys["admin"]) as boss:
        made = boss.post("/ui/api/keys", json={"name": "carol", "rpm": 100, "tpm": 5000, "models": ["fake"]})
        assert made.status_code == 200, made.text
        secret = made.json()["key"]
        assert secret.startswith("mpk_") and made.json()["rpm"] == 100
        assert boss.post("/ui/api/keys", json={"name": "carol"}).status_code == 400  # names are unique
        listed = boss.get("/ui/api/keys").text
        assert secret not in listed and secret.split("_", 2)[2] not in listed
        [carol] = [k for k in boss.get("/ui/api/keys").json()["keys"] if k["name"] == "carol"]
        assert carol["models"] == ["fake"] and carol["tpm"] == 5000 and carol["budget"] is None
        with client(auth_gw, secret) as c:
            chat = c.post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20})
            assert chat.status_code == 200, chat.text
            assert boss.delete("/ui/api/keys/carol").json() == {"name": "carol", "revoked": True}
            assert boss.delete("/ui/api/keys/carol").status_code == 404
            assert c.get("/ui/api/me").status_code == 401


def test_a_new_key_given_a_revoked_keys_name_sees_none_of_its_calls(auth_gw: GatewayThread, keys: dict[str, str]) -> None:
    chat = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    with client(auth_gw, keys["admin"]) as boss:
        first = boss.post("/ui/api/keys", json={"name": "ana"}).json()["key"]
        with client(auth_gw, first) as ana:
            for _ in range(3):
                assert ana.post("/v1/chat/completions", json=chat).status_code == 200
            assert sum(t["calls"] for t in ana.get("/ui/api/usage").json()["totals"]) == 3
        assert boss.delete("/ui/api/keys/ana").status_code == 200
        second = boss.post("/ui/api/keys", json={"name": "ana"}).json()["key"]
        with client(auth_gw, second) as new_ana:
            assert new_ana.get("/ui/api/me").json()["key"] == "ana"
            for params in ({}, {"by": "key"}, {"key": "ana"}):
                usage = new_ana.get("/ui/api/usage", params=params)
                assert usage.status_code == 200 and usage.json()["totals"] == [], (params, usage.text)
            assert len(new_ana.get("/ui/api/usage", params={"format": "csv"}).text.splitlines()) == 1  # the header alone
            assert new_ana.get("/ui/api/logs").status_code == 403  # the call list is an admin's page
            assert new_ana.post("/v1/chat/completions", json=chat).status_code == 200
            [own] = new_ana.get("/ui/api/usage", params={"by": "key"}).json()["totals"]
            assert own["group"] == "ana" and own["calls"] == 1
        # The admin reads names, but the two keys' calls stay apart, each named with its id.
        by_key = {t["group"]: t["calls"] for t in boss.get("/ui/api/usage", params={"by": "key"}).json()["totals"]}
        assert by_key == {f"ana (key {key_id(first)})": 3, f"ana (key {key_id(second)})": 1}
        logged = boss.get("/ui/api/logs", params={"key": "ana"}).json()["calls"]
        assert sorted(c["key_id"] for c in logged) == sorted([key_id(first)] * 3 + [key_id(second)])


def test_modelport_ui_serves_the_console_without_opening_a_browser(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # No browser on this machine is fine: --no-open never asks for one.
    env = {**os.environ, "BROWSER": str(tmp_path / "no-browser-here")}
    process = subprocess.Popen([sys.executable, "-m", "modelport", "ui", "--no-open", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"console: http://127.0.0.1:{port}/ui"
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/ui", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "modelport ui did not start"
                time.sleep(0.1)
        assert page.status_code == 200 and "modelport console" in page.text
        assert httpx.get(f"http://127.0.0.1:{port}/ui/api/me", timeout=5).json()["admin"] is True
    finally:
        process.terminate()
        process.wait(timeout=30)
