"""The console in a real headless Chromium (Debian's, driven by Playwright for Python).

Chromium comes from the system (`apt-get install -y chromium`), never `playwright install`:
the session fixture installs it when missing, and fails with the instruction if it cannot.
Screenshots of each page go to ``$MODELPORT_TEST_ARTIFACTS`` (else a temporary directory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from modelport.config import config_path
from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.browser import CHROMIUM_ARGS, install_chromium
from tests.fakes.openai_upstream import OpenAIUpstream

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")

UPSTREAM_KEY = "sk-upstream-browser-secret-123456"
# Generous: the embedded model shares 2 cores with other work.
TIMEOUT_MS = 300_000


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return install_chromium()


@pytest.fixture()
def artifacts(tmp_path: Path) -> Path:
    configured = os.environ.get("MODELPORT_TEST_ARTIFACTS")
    path = Path(configured) if configured else tmp_path / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[GatewayThread]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as upstream:
        # A config file (prices are read from the user's config file): the fake model has a price.
        config = config_path()
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[aliases]\nfake = "openai/gpt-fake"\n[providers.openai]\nbase_url = "{upstream.base_url}"\n'
                          '[prices."openai/gpt-fake"]\ninput = 0.15\noutput = 0.6\n')
        settings = Settings(log_calls=True, keys_path=str(tmp_path / "keys.db"), batch_dir=str(tmp_path / "batches"))
        with GatewayThread(settings, config=str(config), api_keys={"openai": UPSTREAM_KEY}) as gw:
            yield gw


@pytest.fixture()
def page(chromium_path: str) -> Iterator[tuple[Any, list[str]]]:
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 760}, accept_downloads=True)
            tab = context.new_page()
            tab.set_default_timeout(TIMEOUT_MS)
            problems: list[str] = []
            tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text} at {m.location}") if m.type in ("error", "warning") else None)
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.on("dialog", lambda d: d.accept())
            yield tab, problems
        finally:
            browser.close()


expect = playwright_sync.expect


def visit(tab: Any, gateway: GatewayThread, name: str) -> None:
    tab.goto(f"{gateway.url}/ui#{name}")
    tab.wait_for_selector(f"#page-{name} h2")


def test_every_page_loads_and_the_main_flows_work(page: tuple[Any, list[str]], gateway: GatewayThread, artifacts: Path) -> None:
    tab, problems = page

    # Each page renders with no console error.
    for name in ("playground", "compare", "logs", "usage", "batches", "keys"):
        visit(tab, gateway, name)
        tab.wait_for_load_state("networkidle")
        tab.screenshot(path=str(artifacts / f"{name}-empty.png"))
    assert problems == []

    # Playground: the embedded model streams an answer, with its stats under it.
    visit(tab, gateway, "playground")
    tab.select_option("#page-playground select[aria-label=model]", "local/smollm2")
    tab.fill("#page-playground input[aria-label='max tokens']", "12")
    tab.fill("#prompt", "Name a colour of the sky.")
    tab.click("#send")
    tab.wait_for_selector("#conversation .stats.done")
    answer = tab.inner_text("#conversation .msg.assistant .answer")
    stats = tab.inner_text("#conversation .stats.done")
    assert answer.strip() and "tokens" in stats and "first token" in stats and "$0" in stats
    tab.screenshot(path=str(artifacts / "playground.png"))

    # Compare: the embedded model and the fake upstream side by side.
    visit(tab, gateway, "compare")
    pickers = tab.locator(".compare-model")
    pickers.nth(0).select_option("local/smollm2")
    pickers.nth(1).select_option("fake")
    tab.fill("#page-compare input[aria-label='max tokens']", "12")
    tab.fill("#compare-prompt", "Say hello to the zebra")
    tab.click("#compare-run")
    # Locators, not wait_for_function: the console's CSP forbids the eval that one needs.
    expect(tab.locator("#compare-results .stats.done")).to_have_count(2, timeout=TIMEOUT_MS)
    texts = tab.locator("#compare-results .answer").all_inner_texts()
    assert texts[1] == "echo: Say hello to the zebra" and texts[0].strip()
    assert "cost $" in tab.locator("#compare-results .stats").nth(1).inner_text()
    tab.click("#compare-save")
    assert tab.locator("#saved li").count() == 1
    tab.screenshot(path=str(artifacts / "compare.png"))

    # Logs: search finds the comparison's calls; one opens in full, then in the playground.
    visit(tab, gateway, "logs")
    tab.fill("input[name=q]", "zebra")
    tab.click("#log-filters button[type=submit]")
    expect(tab.locator("#log-table tr.call-row")).to_have_count(2, timeout=TIMEOUT_MS)
    tab.locator("#log-table tr.call-row").first.click()
    tab.wait_for_selector("#call-detail .call-answer")
    assert "zebra" in tab.inner_text("#call-detail")
    tab.screenshot(path=str(artifacts / "logs.png"))
    tab.click("#open-playground")
    tab.wait_for_selector("#page-playground #prompt")
    assert tab.input_value("#prompt") == "Say hello to the zebra"

    # Usage: the chart and the table show the calls so far.
    visit(tab, gateway, "usage")
    tab.wait_for_selector("#usage-table tbody tr")
    assert tab.locator("#usage-out svg.chart rect").count() >= 1
    groups = tab.locator("#usage-table tbody td:first-child").all_inner_texts()
    assert set(groups) == {"local/smollm2", "openai/gpt-fake"}
    with tab.expect_download() as download:
        tab.click("#usage-csv")
    assert download.value.suggested_filename == "usage-by-model.csv"
    tab.screenshot(path=str(artifacts / "usage.png"))

    # Batches: a 20-row CSV, a dry run, then the job runs to completion.
    visit(tab, gateway, "batches")
    rows = "name\n" + "\n".join(f"row{i}" for i in range(20)) + "\n"
    tab.set_input_files("#batch-file", files=[{"name": "names.csv", "mimeType": "text/csv", "buffer": rows.encode()}])
    tab.select_option("#page-batches select[aria-label=model]", "fake")
    tab.fill("#batch-prompt", "Greet {name}")
    tab.click("#batch-estimate")
    tab.wait_for_selector("#batch-estimate-out code")
    assert "20 rows" in tab.inner_text("#batch-estimate-out") and tab.inner_text("#batch-estimate-out code") == "Greet row0"
    tab.click("#batch-start")
    tab.wait_for_selector("#batch-table tr.status-completed")
    assert "20/20" in tab.inner_text("#batch-table tr.status-completed")
    expect(tab.locator("#batch-start")).to_be_enabled()  # the same rows may run again once it ended
    tab.screenshot(path=str(artifacts / "batches.png"))

    # Keys: create one (the secret shows once), then revoke it.
    visit(tab, gateway, "keys")
    tab.fill("#key-name", "browser-key")
    tab.click("#key-form button[type=submit]")
    tab.wait_for_selector("#new-secret")
    secret = tab.inner_text("#new-secret")
    assert secret.startswith("mpk_")
    tab.wait_for_selector("#key-table tr.key-row[data-name=browser-key]")
    assert secret not in tab.inner_text("#key-table")
    tab.screenshot(path=str(artifacts / "keys.png"))
    tab.click("#key-table tr.key-row[data-name=browser-key] button.revoke")
    tab.wait_for_selector("#key-table tr.key-row[data-name=browser-key]", state="detached")

    # A phone's width: nothing overflows sideways.
    tab.set_viewport_size({"width": 390, "height": 800})
    for name in ("playground", "usage", "logs"):
        visit(tab, gateway, name)
        tab.wait_for_load_state("networkidle")
        assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name
        tab.screenshot(path=str(artifacts / f"{name}-phone.png"))

    # Dark mode follows the system's preference.
    tab.emulate_media(color_scheme="dark")
    visit(tab, gateway, "usage")
    assert tab.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(17, 20, 24)"
    tab.screenshot(path=str(artifacts / "usage-dark-phone.png"))
    assert problems == []


@pytest.fixture()
def local_gateway(tmp_path: Path) -> Iterator[GatewayThread]:
    """A gateway as a new user without any provider key has it: the embedded model only."""
    settings = Settings(log_calls=True, keys_path=str(tmp_path / "keys.db"), batch_dir=str(tmp_path / "batches"))
    with GatewayThread(settings) as gw:
        yield gw


def test_the_console_for_a_user_with_only_the_local_model(page: tuple[Any, list[str]], local_gateway: GatewayThread,
                                                          artifacts: Path) -> None:
    import httpx

    tab, problems = page
    gateway = local_gateway
    # The first /health after start shows the stores' checked state, as /ready does.
    health = httpx.get(gateway.url + "/health").json()
    assert health["dependencies"] and set(health["dependencies"].values()) == {"ok"}, health

    # Spend is all $0: the chart shows tokens, not a scale of $1.0e-12 over an empty plot.
    answer = httpx.post(gateway.url + "/v1/chat/completions", timeout=120,
                        json={"model": "local/smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert answer.status_code == 200, answer.text
    visit(tab, gateway, "usage")
    tab.wait_for_selector("#usage-free")
    assert tab.input_value("#page-usage select[aria-label=metric]") == "output_tokens"
    axis = tab.locator("#usage-out svg text").all_text_contents()
    assert axis and not any("e-" in label or "$" in label for label in axis), axis
    tab.screenshot(path=str(artifacts / "usage-local.png"))

    # Compare starts with the models that work, not hosted ones without a key.
    ready = {m for p in httpx.get(gateway.url + "/ui/api/models").json()["providers"] if p["key_set"] for m in p["models"]}
    visit(tab, gateway, "compare")
    picked = [tab.input_value(f"#page-compare select.compare-model >> nth={i}") for i in range(2)]
    assert set(picked) <= ready and "local/smollm2" in picked, (picked, ready)

    # Batches says where the CLI's batches are; Keys says why there are none.
    visit(tab, gateway, "batches")
    assert "modelport batch list" in tab.inner_text("#batch-cli-note")
    visit(tab, gateway, "keys")
    assert "No gateway keys yet" in tab.inner_text("#keys-empty")
    assert problems == []
