"""API keys: explicit, then the environment, then the user's private keys file; shown masked."""

from __future__ import annotations

import os
import stat

import pytest

from modelport.errors import ConfigError
from modelport.keys import keys_path, remove_key, resolve_key, set_key, stored_keys
from modelport.providers import PROVIDERS, Provider


def test_keys_file_lives_in_the_config_dir_unless_moved(isolated_home, monkeypatch):
    assert keys_path() == isolated_home / "config" / "keys.json"
    monkeypatch.delenv("MODELPORT_KEYS_PATH")
    assert keys_path() == isolated_home / "config" / "keys.json"  # MODELPORT_CONFIG_DIR / keys.json
    monkeypatch.setenv("MODELPORT_KEYS_PATH", str(isolated_home / "elsewhere.json"))
    assert keys_path() == isolated_home / "elsewhere.json"


def test_no_key_anywhere_is_none():
    assert resolve_key(PROVIDERS["openai"]) is None


def test_precedence_explicit_then_env_then_file(monkeypatch):
    openai = PROVIDERS["openai"]
    set_key("openai", "sk-file")
    assert resolve_key(openai) == "sk-file"
    monkeypatch.setenv("MODELPORT_OPENAI_API_KEY", "sk-modelport-env")
    assert resolve_key(openai) == "sk-modelport-env"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert resolve_key(openai) == "sk-env"
    assert resolve_key(openai, "sk-explicit") == "sk-explicit"


def test_env_variables_in_the_rows_order(monkeypatch):
    gemini = PROVIDERS["gemini"]
    monkeypatch.setenv("GOOGLE_API_KEY", "google")
    assert resolve_key(gemini) == "google"
    monkeypatch.setenv("GEMINI_API_KEY", "gemini")
    assert resolve_key(gemini) == "gemini"


def test_an_empty_env_variable_is_no_key(monkeypatch):
    set_key("openai", "sk-file")
    monkeypatch.setenv("OPENAI_API_KEY", "")
    assert resolve_key(PROVIDERS["openai"]) == "sk-file"


def test_a_config_declared_provider_reads_its_modelport_variable(monkeypatch):
    monkeypatch.setenv("MODELPORT_MY_BOX_API_KEY", "box")
    assert resolve_key(Provider("my-box", "http://x/v1")) == "box"


def test_the_file_is_created_private_and_stays_private():
    set_key("openai", "sk-one")
    set_key("groq", "gsk-two")
    path = keys_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_suffix(".tmp").exists()
    os.chmod(path, 0o644)  # someone loosened it
    set_key("openai", "sk-three")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_key(PROVIDERS["openai"]) == "sk-three" and resolve_key(PROVIDERS["groq"]) == "gsk-two"


def test_stored_keys_are_shown_masked():
    set_key("openai", "sk-proj-abcdefghijklmnop1234")
    set_key("ollama", "short")
    shown = stored_keys()
    assert shown == {"ollama": "…", "openai": "sk-…1234"}
    assert "abcdefghijklmnop" not in repr(shown)


def test_remove_key():
    set_key("openai", "sk-x")
    assert remove_key("openai") is True
    assert remove_key("openai") is False
    assert resolve_key(PROVIDERS["openai"]) is None


def test_a_corrupt_keys_file_is_a_config_error_naming_the_file():
    path = keys_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        resolve_key(PROVIDERS["openai"])
    assert str(path) in caught.value.message and str(path) in caught.value.hint
