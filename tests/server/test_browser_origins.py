"""No web page drives or reads an open local gateway unless the user allowed its origin.

An attacker page is served from another loopback origin (127.0.0.2) and loaded in a real
headless Chromium; it tries every way a page has to reach http://127.0.0.1:PORT: form posts,
``fetch`` with and without ``no-cors``, a console key creation and batch start, reads of the
console's keys and logs. Nothing may reach the upstream, create a key or be read. With
``[server] allowed_origins`` naming that page, its calls work and carry CORS headers.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from tests.browser import CHROMIUM_ARGS, install_chromium
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.servers import free_port

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")

UPSTREAM_KEY = "sk-upstream-origin-secret-123456"
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hello from a page"}], "max_tokens": 5}

ATTACK = """<!doctype html><meta charset="utf-8"><title>attacker</title>
<iframe name="sink" style="display:none"></iframe>
<script>
const G = "%(gateway)s";
const chat = %(chat)s;
window.results = {};
async function attempt(name, run) {
  try { window.results[name] = await run(); } catch (e) { window.results[name] = "blocked: " + e.name; }
}
function formPost(path, enctype, field, value) {
  const form = document.createElement("form");
  form.method = "POST"; form.action = G + path; form.enctype = enctype; form.target = "sink";
  const input = document.createElement("input");
  input.name = field; input.value = value; form.append(input);
  document.body.append(form); form.submit();
}
(async () => {
  const body = JSON.stringify(chat);
  // A text/plain form whose field name and value join into a JSON body.
  formPost("/v1/chat/completions", "text/plain", body.slice(0, -1) + ',"x":"', '"}');
  formPost("/api/chat", "text/plain", body.slice(0, -1) + ',"x":"', '"}');
  formPost("/ui/api/keys", "application/x-www-form-urlencoded", "name", "csrf-form");
  await attempt("no-cors chat", async () => (await fetch(G + "/v1/chat/completions", {method: "POST", mode: "no-cors",
    headers: {"content-type": "text/plain"}, body})).type);
  await attempt("no-cors ollama", async () => (await fetch(G + "/api/chat", {method: "POST", mode: "no-cors", body})).type);
  await attempt("cors chat", async () => (await (await fetch(G + "/v1/chat/completions", {method: "POST",
    headers: {"content-type": "application/json"}, body})).json()).choices[0].message.content);
  await attempt("no-cors key", async () => (await fetch(G + "/ui/api/keys", {method: "POST", mode: "no-cors",
    body: JSON.stringify({name: "csrf", admin: true})})).type);
  await attempt("cors key", async () => JSON.stringify(await (await fetch(G + "/ui/api/keys", {method: "POST",
    headers: {"content-type": "application/json", "x-modelport-console": "1"}, body: JSON.stringify({name: "csrf2", admin: true})})).json()));
  await attempt("no-cors batch", async () => (await fetch(G + "/ui/api/batches", {method: "POST", mode: "no-cors",
    body: JSON.stringify({model: "fake", prompt: "{text}", rows: [{text: "x"}]})})).type);
  await attempt("read keys", async () => JSON.stringify(await (await fetch(G + "/ui/api/keys")).json()));
  await attempt("read logs", async () => JSON.stringify(await (await fetch(G + "/ui/api/logs")).json()));
  await new Promise(r => setTimeout(r, 300));  // let the form posts land before the test looks
  window.done = true;
})();
</script>"""


class _Page(http.server.BaseHTTPRequestHandler):
    html = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(self.html)))
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args: Any) -> None:
        pass


class AttackerSite:
    """One page on 127.0.0.2: another origin than the gateway's, still on loopback."""

    def __init__(self) -> None:
        self.port = free_port()
        self.origin = f"http://127.0.0.2:{self.port}"
        handler = type("Handler", (_Page,), {})
        self.handler = handler
        self.server = http.server.ThreadingHTTPServer(("127.0.0.2", self.port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def serve(self, gateway_url: str) -> None:
        self.handler.html = (ATTACK % {"gateway": gateway_url, "chat": json.dumps(CHAT)}).encode()

    def __enter__(self) -> AttackerSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture()
def site() -> Iterator[AttackerSite]:
    with AttackerSite() as attacker:
        yield attacker


def open_gateway(upstream: OpenAIUpstream, tmp_path: Path, **settings: Any) -> GatewayThread:
    config = {"aliases": {"fake": "openai/gpt-fake"}, "providers": {"openai": {"base_url": upstream.base_url}}}
    return GatewayThread(Settings(log_calls=True, keys_path=str(tmp_path / "keys.db"), batch_dir=str(tmp_path / "batches"), **settings),
                         config=config, api_keys={"openai": UPSTREAM_KEY})


def run_attack(site: AttackerSite, gateway_url: str) -> dict[str, str]:
    site.serve(gateway_url)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=install_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(site.origin + "/")
            page.wait_for_function("window.done === true", timeout=60_000)
            return page.evaluate("window.results")
        finally:
            browser.close()


def test_a_page_of_another_origin_can_neither_drive_nor_read_the_open_gateway(upstream: OpenAIUpstream, site: AttackerSite,
                                                                                tmp_path: Path) -> None:
    with open_gateway(upstream, tmp_path) as gw:
        results = run_attack(site, gw.url)
        assert upstream.request_count == 0, "a page made an upstream call through the gateway"
        assert KeyStore(tmp_path / "keys.db").records() == [], "a page created a gateway key"
        for name in ("cors chat", "cors key", "read keys", "read logs"):
            assert results[name].startswith("blocked"), (name, results[name])
        # The SDKs' way in is unchanged: no Origin, a loopback Host.
        answer = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"].startswith("echo:")


def test_an_allowed_origin_may_call_on_purpose_with_cors_headers(upstream: OpenAIUpstream, site: AttackerSite, tmp_path: Path) -> None:
    with open_gateway(upstream, tmp_path, allowed_origins=(site.origin,)) as gw:
        results = run_attack(site, gw.url)
        assert results["cors chat"] == "echo: hello from a page"
        assert "csrf2" in results["cors key"]  # the user allowed this page, so it may use the console's calls
        preflight = httpx.request("OPTIONS", gw.url + "/v1/chat/completions", headers={
            "origin": site.origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == site.origin
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-allow-headers"] == "content-type"
        answer = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers={"origin": site.origin}, timeout=30)
        assert answer.headers["access-control-allow-origin"] == site.origin
        assert answer.headers["vary"] == "Origin"
        other = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers={"origin": "http://127.0.0.3:1"}, timeout=30)
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


# -- Host: DNS rebinding ---------------------------------------------------------------------


def test_a_foreign_host_is_refused_on_loopback_and_loopback_names_work(upstream: OpenAIUpstream, tmp_path: Path) -> None:
    with open_gateway(upstream, tmp_path, allowed_hosts=("gateway.internal.example",)) as gw:
        port = gw.port
        rebinding = httpx.post(gw.url + "/ui/api/keys", headers={"host": f"evil.example:{port}", "origin": f"http://evil.example:{port}",
                                                                 "content-type": "text/plain"}, content='{"name":"csrf","admin":true}')
        assert rebinding.status_code == 403 and "evil.example" in rebinding.json()["error"]["message"]
        assert httpx.get(gw.url + "/ui/api/logs", headers={"host": f"evil.example:{port}"}).status_code == 403
        assert KeyStore(tmp_path / "keys.db").records() == []
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1", f"app.localhost:{port}",
                     f"gateway.internal.example:{port}"):
            assert httpx.get(gw.url + "/v1/models", headers={"host": host}).status_code == 200, host


def test_the_console_refuses_changes_without_its_header_whatever_the_origin(upstream: OpenAIUpstream, tmp_path: Path) -> None:
    with open_gateway(upstream, tmp_path) as gw:
        plain = httpx.post(gw.url + "/ui/api/keys", json={"name": "nope"})
        assert plain.status_code == 403 and "x-modelport-console" in plain.json()["error"]["message"]
        made = httpx.post(gw.url + "/ui/api/keys", json={"name": "mine"}, headers={"x-modelport-console": "1", "origin": gw.url})
        assert made.status_code == 200 and made.json()["key"].startswith("mpk_")


def test_json_doors_refuse_bodies_labelled_as_forms_or_text(upstream: OpenAIUpstream, tmp_path: Path) -> None:
    with open_gateway(upstream, tmp_path) as gw:
        for content_type in ("text/plain", "text/plain;charset=UTF-8", "multipart/form-data; boundary=x"):
            answer = httpx.post(gw.url + "/v1/chat/completions", content=json.dumps(CHAT), headers={"content-type": content_type})
            assert answer.status_code == 415, content_type
            assert "application/json" in answer.json()["error"]["message"]
        # curl -d sends a form type: Ollama's own examples do, so it stays accepted.
        curl = httpx.post(gw.url + "/api/chat", content=json.dumps({**CHAT, "stream": False}),
                          headers={"content-type": "application/x-www-form-urlencoded"})
        assert curl.status_code == 200
        assert upstream.request_count == 1


def test_embedded_requests_from_other_sites_are_refused_but_navigations_are_not(upstream: OpenAIUpstream, tmp_path: Path) -> None:
    with open_gateway(upstream, tmp_path) as gw:
        image = httpx.get(gw.url + "/v1/models", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"})
        assert image.status_code == 403
        link = httpx.get(gw.url + "/ui", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})
        assert link.status_code == 200


def test_a_keyed_loopback_gateway_answers_any_host_as_behind_a_reverse_proxy(upstream: OpenAIUpstream, tmp_path: Path) -> None:
    with open_gateway(upstream, tmp_path, auth=True) as gw:
        key = KeyStore(tmp_path / "keys.db").create("proxied")
        answer = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers={"host": "api.internal.example", "authorization": f"Bearer {key}"})
        assert answer.status_code == 200  # nginx on the same machine forwards its own Host
        assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers={"host": "api.internal.example"}).status_code == 401
