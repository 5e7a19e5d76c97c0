"""A state URL's password, in the userinfo or as a ``?password=`` query parameter (both
accepted by redis-py and libpq), never reaches an API caller, the server log or
`modelport state status`: callers are told only that the store is away, operators see the
URL masked."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from modelport.cli import main
from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from tests.servers import free_port

SECRET = "hunter2-state-secret"


def test_a_query_password_reaches_no_caller_and_is_masked_for_the_operator(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there: the counters store is away
    counters = f"redis://127.0.0.1:{port}/0?password={SECRET}"
    store = KeyStore(tmp_path / "keys.db")
    key = store.create("limited", rpm=100)
    caplog.set_level(logging.WARNING)
    settings = Settings(auth=True, keys_path=str(store.path), counters=counters, log_calls=False)
    with GatewayThread(settings) as gw:
        response = httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                              json={"model": "local/smollm2", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 503, response.text
    body = response.text
    assert "rate-limit store is unavailable" in body
    assert SECRET not in body and "redis" not in body and str(port) not in body
    logged = caplog.text
    assert SECRET not in logged and f"redis://127.0.0.1:{port}/0?password=***" in logged

    records = f"postgresql://modelport@127.0.0.1:{free_port()}/modelport?sslmode=disable&password={SECRET}&sslpassword={SECRET}"
    config = tmp_path / "config.toml"
    config.write_text(f'[state]\ncounters = "{counters}"\nrecords = "{records}"\n')
    result = CliRunner().invoke(main, ["state", "status", "--config", str(config)])
    assert result.exit_code == 1 and "UNREACHABLE" in result.output, result.output
    assert SECRET not in result.output
    assert "?password=***" in result.output and "?sslmode=disable&password=***&sslpassword=***" in result.output
