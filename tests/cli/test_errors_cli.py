"""Errors in the CLI, whose user owns the process: a failed connection shows its URL and the
OS's words with a hint for that cause; an HTML error page shows its status and title. The
gateway still keeps the URL from its callers (the message names only the provider)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.fakes.openai_upstream import OpenAIUpstream
from tests.fakes.server import http_error

ROOT = Path(__file__).resolve().parents[2]

PAGE = ("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>" + "<p>nginx</p>" * 400
        + "</body></html>")


def ask(tmp_path: Path, base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(MODELPORT_CONFIG_DIR=str(tmp_path / "config"), MODELPORT_LOG_PATH=str(tmp_path / "log.db"),
               PYTHONPATH=str(ROOT), OPENAI_API_KEY="sk-errors-test", MODELPORT_OPENAI_BASE_URL=base_url)
    return subprocess.run([sys.executable, "-m", "modelport", "ask", "-m", "openai/gpt-fake", *args, "hi"], env=env,
                          capture_output=True, text=True, timeout=60)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_shows_the_url_the_os_error_and_a_hint_for_it(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    result = ask(tmp_path, url, "--no-stream")
    assert result.returncode == 1
    assert f"{url}/chat/completions" in result.stderr and "refused" in result.stderr.lower()
    assert "nothing is listening there" in result.stderr


def test_json_errors_carry_the_detail_and_no_made_up_status(tmp_path):
    result = ask(tmp_path, "http://nosuchhost.invalid/v1", "--json")
    error = json.loads(result.stdout)["error"]
    assert result.returncode == 1
    assert error["type"] == "connection" and "nosuchhost.invalid" in error["detail"]
    assert "status" not in error  # nothing answered: no HTTP status to report
    assert "does not resolve" in error["hint"]
    assert "nosuchhost" not in error["message"]  # what a gateway's caller would see


def test_an_html_error_page_is_shown_as_its_status_and_title(tmp_path):
    with OpenAIUpstream() as upstream:
        upstream.inject(http_error(502, PAGE, {"content-type": "text/html"}), times=10)
        result = ask(tmp_path, upstream.url + "/v1", "--no-stream", "-o", "max_tokens=5")
    assert result.returncode == 1
    assert "HTTP 502: 502 Bad Gateway" in result.stderr and "nginx" not in result.stderr
    assert len(result.stderr) < 600, result.stderr


def test_a_missing_key_is_logged_as_a_key_problem(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(MODELPORT_CONFIG_DIR=str(tmp_path / "config"), MODELPORT_LOG_PATH=str(tmp_path / "log.db"),
               PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-m", "modelport", "ask", "-m", "openai/gpt-4o-mini", "--json", "hi"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert json.loads(run.stdout)["error"]["type"] == "authentication"
    logged = subprocess.run([sys.executable, "-m", "modelport", "logs", "-n", "1", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert logged.returncode == 0, logged.stderr
    assert '"authentication"' in logged.stdout
