"""Control characters have no place in a gateway key or a key's name: a key with one
(``?key=...%0A``) is refused with a 401 that says why, a name with one cannot be made from
the CLI or the console, and a name stored before is printed escaped, never raw."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from click.testing import CliRunner

from modelport.cli import main
from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread


def test_control_characters_are_refused_in_keys_and_names_and_escaped_when_printed(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key = store.create("plain")
    with GatewayThread(Settings(auth=True, keys_path=str(store.path), log_calls=False)) as gw:
        assert httpx.get(f"{gw.url}/v1beta/models", params={"key": key}, timeout=10).status_code == 200
        for bad in (key + "\n", key + "\t", key[:10] + "\x1b" + key[10:]):
            refused = httpx.get(f"{gw.url}/v1beta/models", params={"key": bad}, timeout=10)
            assert refused.status_code == 401, (bad, refused.text)
            assert "control character" in refused.json()["error"]["message"]

    result = CliRunner().invoke(main, ["keys", "create", "evil\x1b[2Jname", "--store", str(store.path)])
    assert result.exit_code != 0 and "control character" in result.output and "\x1b" not in result.output
    with GatewayThread(Settings(keys_path=str(store.path), log_calls=False)) as gw:
        made = httpx.post(f"{gw.url}/ui/api/keys", json={"name": "two\nlines"}, headers={"x-modelport-console": "1"}, timeout=10)
    assert made.status_code == 400 and "control character" in made.json()["error"]["message"], made.text
    assert [r.name for r in store.records()] == ["plain"]

    # A name stored by an older version still prints on one line, its escape sequence inert.
    store.close()
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE gateway_keys SET name = ? WHERE name = 'plain'", ("old\x1b[31mred\n",))
    result = CliRunner().invoke(main, ["keys", "usage", "--store", str(store.path)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "old\\x1b[31mred\\n" in result.output
