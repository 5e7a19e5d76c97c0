"""The provider table: every provider is a row of data, never a class or an `if`.

Adding an OpenAI-compatible provider is one row: here, in a plugin (an entry point in the
``modelport.providers`` group that points to a ``Provider`` or a dict of its fields, see
docs/plugins.md), or one table in the config file:

    [providers.mybox]
    base_url = "http://10.0.0.5:8080/v1"
    key_env = "MYBOX_API_KEY"      # optional
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from types import SimpleNamespace
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    base_url: str
    dialect: str = "openai"
    # Standard environment variables for the key, in order of preference.
    key_env: tuple[str, ...] = ()
    key_required: bool = True
    # How the key travels: "bearer" (Authorization), or the name of a header that carries it.
    auth_header: str = "bearer"
    headers: tuple[tuple[str, str], ...] = ()
    # Environment variables the provider's own SDK reads for its base URL.
    base_url_env: tuple[str, ...] = ()
    # "http" for anything reached over HTTP; "local" for the in-process llama.cpp engine.
    backend: str = "http"
    # Where a newcomer gets a key; shown in hints.
    signup: str = ""
    # Models offered when the user asks `modelport models` (the provider has more).
    models: tuple[str, ...] = field(default=())
    # The row's base URL for each other dialect its server speaks, used when the config
    # picks that dialect without giving a base_url (Ollama: native API or /v1).
    dialect_urls: tuple[tuple[str, str], ...] = ()
    # Fields added to every request's ``extra`` (the request's own win), from the config:
    # ``[providers.ollama.extra] num_ctx = 8192``.
    extra: tuple[tuple[str, Any], ...] = ()
    # (model-id glob, dialect): models this provider serves in another wire format than its
    # own, first match wins; e.g. OpenAI models that exist only on the Responses API.
    model_dialects: tuple[tuple[str, str], ...] = ()
    # Place prompt-cache breakpoints on requests that carry none (``auto_cache = true``);
    # only a dialect with breakpoints (Anthropic's) uses it, a request's own choice wins.
    auto_cache: bool = False

    def dialect_for(self, model_id: str) -> str:
        """The dialect chat calls to ``model_id`` speak."""
        for pattern, dialect in self.model_dialects:
            if fnmatchcase(model_id, pattern):
                return dialect
        return self.dialect

    def auth_headers(self, key: str | None) -> dict[str, str]:
        headers = dict(self.headers)
        if key:
            if self.auth_header == "bearer":
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers[self.auth_header] = key
        return headers

    def key_hint(self) -> str:
        env = self.key_env[0] if self.key_env else f"MODELPORT_{env_name(self.name)}_API_KEY"
        where = f" (get one at {self.signup})" if self.signup else ""
        return f"set {env} or run `modelport keys set {self.name}`{where}"


def env_name(provider: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", provider).upper()


# OpenAI models served only over /v1/responses (chat completions answers them with a 404).
OPENAI_RESPONSES_ONLY = (
    "o1-pro*", "o3-pro*", "o3-deep-research*", "o4-mini-deep-research*", "gpt-5-pro*", "gpt-5*-pro",
    "gpt-5*-codex*", "codex-mini*", "computer-use-preview*",
)

# modelport's own rows, by name as attributes: pyproject.toml registers each as the entry
# point "modelport.providers:BUILT_IN.<name>", as a plugin registers its own.
BUILT_IN = SimpleNamespace(**{
    p.name: p
    for p in (
        Provider("local", "", backend="local", key_required=False, models=("smollm2",)),
        Provider(
            "openai", "https://api.openai.com/v1", key_env=("OPENAI_API_KEY",), base_url_env=("OPENAI_BASE_URL",),
            signup="https://platform.openai.com/api-keys", models=("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o4-mini"),
            model_dialects=tuple((pattern, "openai-responses") for pattern in OPENAI_RESPONSES_ONLY),
        ),
        Provider(
            "anthropic", "https://api.anthropic.com", dialect="anthropic", key_env=("ANTHROPIC_API_KEY",),
            auth_header="x-api-key", headers=(("anthropic-version", "2023-06-01"),), base_url_env=("ANTHROPIC_BASE_URL",),
            signup="https://console.anthropic.com/settings/keys",
            models=("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"),
        ),
        Provider(
            "gemini", "https://generativelanguage.googleapis.com/v1beta", dialect="gemini",
            key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"), auth_header="x-goog-api-key",
            signup="https://aistudio.google.com/apikey", models=("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"),
        ),
        Provider(
            "groq", "https://api.groq.com/openai/v1", key_env=("GROQ_API_KEY",), signup="https://console.groq.com/keys",
            models=("openai/gpt-oss-120b", "llama-3.3-70b-versatile", "llama-3.1-8b-instant"),
        ),
        Provider("lmstudio", "http://localhost:1234/v1", key_env=("LM_API_TOKEN",), key_required=False),
        # The native API honours num_ctx and keep_alive, which the /v1 layer ignores.
        Provider("ollama", "http://localhost:11434", dialect="ollama", key_env=("OLLAMA_API_KEY",), key_required=False,
                 dialect_urls=(("openai", "http://localhost:11434/v1"),)),
        Provider("vllm", "http://localhost:8000/v1", key_env=("VLLM_API_KEY",), key_required=False),
        Provider("openrouter", "https://openrouter.ai/api/v1", key_env=("OPENROUTER_API_KEY",), signup="https://openrouter.ai/keys"),
        Provider("together", "https://api.together.xyz/v1", key_env=("TOGETHER_API_KEY",), signup="https://api.together.ai/settings/api-keys"),
        Provider("deepseek", "https://api.deepseek.com/v1", key_env=("DEEPSEEK_API_KEY",), signup="https://platform.deepseek.com/api_keys",
                 models=("deepseek-chat", "deepseek-reasoner")),
        Provider("mistral", "https://api.mistral.ai/v1", key_env=("MISTRAL_API_KEY",), signup="https://console.mistral.ai/api-keys",
                 models=("mistral-small-latest", "mistral-large-latest")),
        Provider("xai", "https://api.x.ai/v1", key_env=("XAI_API_KEY",), signup="https://console.x.ai", models=("grok-4",)),
    )
})
PROVIDERS: dict[str, Provider] = vars(BUILT_IN)


def installed_providers() -> dict[str, Provider]:
    """Every row the installed distributions register, modelport's own included (plugins.py)."""
    from . import plugins

    return plugins.load_all(plugins.PROVIDERS, _plugin_row)


def _plugin_row(name: str, value: Any) -> Provider:
    """A plugin's row: a Provider, or a dict of its fields as a config table gives them; the
    entry point's name is the name users type."""
    if isinstance(value, Provider):
        _check_dialects(name, {"dialect": value.dialect, "model_dialects": value.model_dialects})
        return replace(value, name=name) if value.name != name else value
    if isinstance(value, dict):
        return _row(name, value, None)
    raise TypeError(f"points to {type(value).__name__}, not a modelport.providers.Provider or a dict of its fields")


def provider_table(config: dict[str, Any] | None = None) -> dict[str, Provider]:
    """The installed rows, extended and overridden by the config's ``[providers.*]`` tables."""
    table = installed_providers()
    for name, spec in (config or {}).get("providers", {}).items():
        table[name] = _row(name, spec, table.get(name))
    return table


def _row(name: str, spec: Any, base: Provider | None) -> Provider:
    """The row a ``[providers.NAME]`` table describes, over ``base`` when it changes one."""
    if not isinstance(spec, dict):
        raise ConfigError(f"config [providers.{name}] must be a table", hint="see `modelport models --help`")
    fields: dict[str, Any] = {}
    for key in ("base_url", "dialect", "auth_header", "key_required", "signup"):
        if key in spec:
            fields[key] = spec[key]
    if "auto_cache" in spec:
        if not isinstance(spec["auto_cache"], bool):
            raise ConfigError(f"config [providers.{name}] auto_cache must be true or false")
        fields["auto_cache"] = spec["auto_cache"]
    for key in ("key_env", "models"):
        if key in spec:
            value = spec[key]
            fields[key] = (value,) if isinstance(value, str) else tuple(value)
    if "headers" in spec:
        fields["headers"] = tuple(dict(spec["headers"]).items())
    if "extra" in spec:
        if not isinstance(spec["extra"], dict):
            raise ConfigError(f"config [providers.{name}] extra must be a table", hint=f"e.g. [providers.{name}.extra] num_ctx = 8192")
        fields["extra"] = tuple(spec["extra"].items())
    if base is not None and "dialect" in fields and "base_url" not in fields:
        fields["base_url"] = dict(base.dialect_urls).get(fields["dialect"], base.base_url)
    if "model_dialects" in spec:
        # The config's own entries are tried before the built-in ones.
        fields["model_dialects"] = tuple(dict(spec["model_dialects"]).items()) + (base.model_dialects if base else ())
    _check_dialects(name, fields)
    if base is not None:
        return replace(base, **fields)
    if "base_url" not in fields:
        raise ConfigError(
            f"config [providers.{name}] needs a base_url",
            hint=f'add base_url = "http://host:port/v1" under [providers.{name}]',
        )
    fields.setdefault("key_required", False)
    return Provider(name, **fields)


def _check_dialects(name: str, fields: dict[str, Any]) -> None:
    from . import dialects

    known = dialects.names()
    named = [fields["dialect"]] if "dialect" in fields else []
    named += [d for _, d in fields.get("model_dialects", ())]
    for dialect in named:
        if dialect not in known:
            raise ConfigError(f"config [providers.{name}] names an unknown dialect {dialect!r}", hint=f"known: {', '.join(known)}")


def base_url(provider: Provider, override: str | None = None) -> str:
    """Explicit argument, then MODELPORT_<NAME>_BASE_URL, then the SDK's own variable, then the row."""
    url = override or os.environ.get(f"MODELPORT_{env_name(provider.name)}_BASE_URL")
    if not url:
        url = next((os.environ[e] for e in provider.base_url_env if os.environ.get(e)), provider.base_url)
    return url.rstrip("/")


# The response header every modelport gateway answer carries (its value: the version).
GATEWAY_HEADER_NAME = "x-modelport"


def gateway_in_the_way(provider: Provider, url: str, headers: Any) -> str | None:
    """What to say when ``provider``'s server answers as a modelport gateway (its response
    ``headers`` carry ``x-modelport``): the gateway takes LM Studio's port 1234 by default,
    and Ollama's 11434 with --port, so the server the user meant is not the one listening.
    None when that is not the case, or when the provider is the user's own row, which may
    well point at a gateway on purpose."""
    if GATEWAY_HEADER_NAME not in headers or provider.key_required or PROVIDERS.get(provider.name) is None:
        return None
    return (f"{url} is a modelport gateway, not {provider.name}: the gateway holds the port {provider.name} uses; "
            f"serve the gateway on another port (modelport serve --port 8080) and start {provider.name}, "
            f"or set MODELPORT_{env_name(provider.name)}_BASE_URL to where {provider.name} listens")


def resolve(model: str, table: dict[str, Provider], aliases: dict[str, str] | None = None) -> tuple[Provider, str]:
    """``provider/model-id`` (or an alias of one) -> the provider row and the provider's own id.

    Only the first segment names the provider (``groq/openai/gpt-oss-120b`` is Groq's
    ``openai/gpt-oss-120b``). A name that matches no provider is an error, never a guess.
    """
    seen = set()
    while aliases and model in aliases and model not in seen:
        seen.add(model)
        model = aliases[model]
    provider_name, sep, model_id = model.partition("/")
    provider = table.get(provider_name)
    if provider is None or not sep or not model_id:
        known = ", ".join(sorted(table))
        guess = closest_model(model, table, aliases or {})
        raise ConfigError(
            f"unknown model {model!r}: models are named provider/model-id",
            status=404,
            hint=(f"did you mean {guess}? " if guess else "")
            + f"use one of these providers: {known} (e.g. local/smollm2, openai/gpt-4o-mini), "
            "or add an alias under [aliases] in the config file",
        )
    return provider, model_id


def closest_model(model: str, table: dict[str, Provider], aliases: dict[str, str]) -> str | None:
    """The name a mistyped model most likely meant: the provider's own id without its
    provider (``gpt-4o-mini``: ``openai/gpt-4o-mini``), else the closest known name or alias
    (``opnai/gpt-4o-mini``), else the name with the closest provider."""
    import difflib

    names = [f"{name}/{m}" for name, row in table.items() for m in row.models]
    owners = [n for n in names if n.partition("/")[2] == model]
    if len(owners) == 1:
        return owners[0]
    close = difflib.get_close_matches(model, names + list(aliases), n=1, cutoff=0.75)
    if close:
        return close[0]
    provider_name, sep, model_id = model.partition("/")
    providers = difflib.get_close_matches(provider_name, list(table), n=1, cutoff=0.6) if sep and model_id else []
    return f"{providers[0]}/{model_id}" if providers else None
