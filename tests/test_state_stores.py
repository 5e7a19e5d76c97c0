"""The record stores on the records layer: gateway keys, stored responses and the response
cache on a SQLite file of an older modelport (upgraded in place) or on one PostgreSQL
database that several gateways share."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest
from click.testing import CliRunner

from modelport.cli import main
from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream

UPSTREAM_KEY = "sk-upstream-secret"

# gateway.db as the modelport before versioned records made it: the first release's table,
# and the admin column a PRAGMA table_info check added later.
OLD_KEYS_SCHEMA = """
CREATE TABLE gateway_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, salt BLOB NOT NULL, hash BLOB NOT NULL,
    rpm INTEGER, tpm INTEGER, budget REAL, models TEXT, expires REAL, created REAL NOT NULL, revoked REAL,
    requests INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0, last_used REAL);
"""
OLD_ADMIN = "ALTER TABLE gateway_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0"


def old_keys_file(path: Path, with_admin: bool) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(OLD_KEYS_SCHEMA)
        if with_admin:
            db.execute(OLD_ADMIN)
        db.execute("INSERT INTO gateway_keys (id, name, salt, hash, rpm, created, requests, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   ("0123456789ab", "old", b"salt", b"hash", 60, 1.0, 7, 0.25))
    db.close()


@pytest.mark.parametrize("with_admin", [False, True])
def test_an_old_key_file_is_upgraded_in_place(tmp_path: Path, with_admin: bool) -> None:
    path = tmp_path / "gateway.db"
    old_keys_file(path, with_admin)
    store = KeyStore(path)
    try:
        [old] = store.records()
        assert (old.name, old.limits.rpm, old.requests, old.cost, old.admin) == ("old", 60, 7, 0.25, False)
        store.create("new", admin=True)
        assert [r.name for r in store.records()] == ["old", "new"]
        store.add_usage({"0123456789ab": [1, 10, 5, 0.5, 123.0]})
        assert store.records()[0].requests == 8 and store.records()[0].last_used == 123.0
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM modelport_schema WHERE component = 'gateway_keys'").fetchone() == (2,)


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


def gateway_config(upstream: OpenAIUpstream, **extra: object) -> dict[str, object]:
    return {"aliases": {"gpt-4o-mini": "openai/gpt-4o-mini"}, "providers": {"openai": {"base_url": upstream.base_url}}, **extra}


def two_gateways(upstream: OpenAIUpstream, records: str, **config: object) -> tuple[GatewayThread, GatewayThread]:
    settings = Settings(auth=True, log_calls=False, records=records, max_tokens=50)
    return tuple(GatewayThread(settings, config=gateway_config(upstream, **config), api_keys={"openai": UPSTREAM_KEY})
                 for _ in range(2))  # type: ignore[return-value]


def keys_cli(config: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["keys", *args], env={"MODELPORT_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    return result.stdout


def status(gw: GatewayThread, key: str) -> int:
    return httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=10,
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).status_code


def test_a_key_revoked_on_one_instance_is_refused_by_all(tmp_path: Path, upstream: OpenAIUpstream, postgres_url: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[state]\nrecords = "{postgres_url}"\n')
    # The CLI follows the config's [state] records: the key lands in PostgreSQL, no file is made.
    key = keys_cli(config, "create", "shared").strip()
    assert not (tmp_path / "data" / "gateway.db").exists()
    a, b = two_gateways(upstream, postgres_url)
    with a, b:
        assert status(a, key) == 200 and status(b, key) == 200
        keys_cli(config, "revoke", "shared")
        revoked = time.monotonic()
        refused: dict[str, float] = {}
        served = 2
        while len(refused) < 2 and time.monotonic() - revoked < 5:
            for name, gw in (("a", a), ("b", b)):
                if name in refused:
                    continue
                code = status(gw, key)
                if code == 401:
                    refused[name] = time.monotonic() - revoked
                served += code == 200
            time.sleep(0.02)
        print(f"revoked key refused after {refused} s")
        # The reload runs every second; a loaded 2-core machine may add a little to that.
        assert set(refused) == {"a", "b"} and max(refused.values()) < 2.5
        # Usage of both instances adds up in the one row.
        time.sleep(1.2)
    usage = keys_cli(config, "usage", "--all", "--json")
    assert f'"requests": {served},' in usage
