"""The provider table is data: rows, name resolution, base URLs and config overrides."""

from __future__ import annotations

import pytest

from modelport.errors import ConfigError
from modelport.providers import PROVIDERS, Provider, base_url, provider_table, resolve


# -- the rows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, url, dialect, key_env",
    [
        ("openai", "https://api.openai.com/v1", "openai", ("OPENAI_API_KEY",)),
        ("anthropic", "https://api.anthropic.com", "anthropic", ("ANTHROPIC_API_KEY",)),
        ("gemini", "https://generativelanguage.googleapis.com/v1beta", "gemini", ("GEMINI_API_KEY", "GOOGLE_API_KEY")),
        ("groq", "https://api.groq.com/openai/v1", "openai", ("GROQ_API_KEY",)),
        ("lmstudio", "http://localhost:1234/v1", "openai", ("LM_API_TOKEN",)),
        ("ollama", "http://localhost:11434", "ollama", ("OLLAMA_API_KEY",)),
        ("vllm", "http://localhost:8000/v1", "openai", ("VLLM_API_KEY",)),
    ],
)
def test_rows_for_the_named_providers(name, url, dialect, key_env):
    row = PROVIDERS[name]
    assert (row.base_url, row.dialect, row.key_env, row.backend) == (url, dialect, key_env, "http")


def test_cloud_providers_need_a_key_and_local_servers_do_not():
    for name in ("openai", "anthropic", "gemini", "groq", "openrouter", "mistral"):
        assert PROVIDERS[name].key_required, name
    for name in ("local", "lmstudio", "ollama", "vllm"):
        assert not PROVIDERS[name].key_required, name


def test_the_embedded_model_is_a_local_backend_row():
    assert PROVIDERS["local"].backend == "local"
    assert "smollm2" in PROVIDERS["local"].models


def test_auth_headers_follow_each_providers_convention():
    assert PROVIDERS["openai"].auth_headers("k") == {"Authorization": "Bearer k"}
    assert PROVIDERS["anthropic"].auth_headers("k") == {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    assert PROVIDERS["gemini"].auth_headers("k") == {"x-goog-api-key": "k"}
    assert PROVIDERS["ollama"].auth_headers(None) == {}  # no key, no header


def test_key_hint_names_the_variable_the_command_and_the_signup_page():
    hint = PROVIDERS["groq"].key_hint()
    assert "GROQ_API_KEY" in hint and "modelport keys set groq" in hint and "console.groq.com" in hint
    assert "MODELPORT_MY_BOX_API_KEY" in Provider("my-box", "http://x").key_hint()


# -- resolve ---------------------------------------------------------------------------------


def test_only_the_first_segment_names_the_provider():
    provider, model_id = resolve("groq/openai/gpt-oss-120b", PROVIDERS)
    assert provider.name == "groq" and model_id == "openai/gpt-oss-120b"
    provider, model_id = resolve("openai/gpt-4o-mini", PROVIDERS)
    assert provider.name == "openai" and model_id == "gpt-4o-mini"
    assert resolve("local/smollm2", PROVIDERS)[0].backend == "local"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "nope/gpt-4o", "openai/", "/gpt-4o", "", "OpenAI/gpt-4o"])
def test_a_name_that_is_not_provider_slash_model_is_an_error_listing_the_providers(model):
    with pytest.raises(ConfigError) as caught:
        resolve(model, PROVIDERS)
    assert repr(model) in caught.value.message
    assert ", ".join(sorted(PROVIDERS)) in caught.value.hint
    assert "[aliases]" in caught.value.hint


def test_aliases_resolve_in_chains_and_cycles_end_in_an_error():
    aliases = {"fast": "groq/llama-3.1-8b-instant", "default": "fast", "a": "b", "b": "a"}
    assert resolve("default", PROVIDERS, aliases) == (PROVIDERS["groq"], "llama-3.1-8b-instant")
    with pytest.raises(ConfigError):
        resolve("a", PROVIDERS, aliases)


def test_an_alias_may_shadow_a_full_name():
    assert resolve("openai/gpt-4o", PROVIDERS, {"openai/gpt-4o": "groq/x"})[0].name == "groq"


# -- base URL --------------------------------------------------------------------------------


def test_base_url_explicit_then_modelport_env_then_sdk_env_then_row(monkeypatch):
    row = PROVIDERS["openai"]
    assert base_url(row) == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://sdk-env/v1/")
    assert base_url(row) == "http://sdk-env/v1"  # trailing slash dropped: paths are appended
    monkeypatch.setenv("MODELPORT_OPENAI_BASE_URL", "http://modelport-env/v1")
    assert base_url(row) == "http://modelport-env/v1"
    assert base_url(row, "http://explicit/v1") == "http://explicit/v1"


def test_modelport_base_url_env_works_for_any_provider_name(monkeypatch):
    monkeypatch.setenv("MODELPORT_MY_BOX_BASE_URL", "http://box:9/v1")
    assert base_url(Provider("my-box", "http://default/v1")) == "http://box:9/v1"
    assert base_url(PROVIDERS["groq"]) == "https://api.groq.com/openai/v1"


# -- config ----------------------------------------------------------------------------------


def test_config_adds_an_openai_compatible_provider_with_no_key_required():
    table = provider_table({"providers": {"mybox": {"base_url": "http://10.0.0.5:8080/v1"}}})
    row = table["mybox"]
    assert (row.base_url, row.dialect, row.key_required, row.backend) == ("http://10.0.0.5:8080/v1", "openai", False, "http")
    assert set(PROVIDERS) < set(table)  # the built-in rows are all still there


def test_config_provider_fields():
    spec = {"base_url": "http://x/v1", "key_env": "X_KEY", "key_required": True, "models": ["a", "b"],
            "headers": {"X-Team": "ml"}, "dialect": "anthropic", "auth_header": "x-api-key"}
    row = provider_table({"providers": {"x": spec}})["x"]
    assert row.key_env == ("X_KEY",) and row.models == ("a", "b") and row.key_required
    assert row.auth_headers("k") == {"X-Team": "ml", "x-api-key": "k"}
    assert row.dialect == "anthropic"


def test_config_overrides_fields_of_a_built_in_row_and_keeps_the_rest():
    table = provider_table({"providers": {"lmstudio": {"base_url": "http://gpu-box:1234/v1"}}})
    assert table["lmstudio"].base_url == "http://gpu-box:1234/v1"
    assert table["lmstudio"].key_env == PROVIDERS["lmstudio"].key_env
    assert PROVIDERS["lmstudio"].base_url == "http://localhost:1234/v1"  # the table itself is untouched


def test_config_errors_name_the_table_and_the_fix():
    with pytest.raises(ConfigError) as caught:
        provider_table({"providers": {"mybox": {"key_env": "X"}}})
    assert "[providers.mybox]" in caught.value.message and 'base_url = "' in caught.value.hint
    with pytest.raises(ConfigError) as caught:
        provider_table({"providers": {"mybox": "http://x/v1"}})
    assert "[providers.mybox] must be a table" in caught.value.message


def test_no_config_means_the_built_in_table():
    assert provider_table(None) == PROVIDERS == provider_table({})
