"""Model names -> backends, for every front door alike.

A caller names a model the way it would anywhere in modelport: ``provider/model-id``, an
alias from the config's ``[aliases]``, or ``default``. The config may also give fallbacks
(tried in order when a model fails with 429 or a server error) and the list of models the
gateway offers::

    default_model = "local/smollm2"
    [aliases]
    gpt-4o-mini = "openai/gpt-4o-mini"
    [fallbacks]
    gpt-4o-mini = ["groq/llama-3.1-8b-instant", "local/smollm2"]
    [server]
    models = ["gpt-4o-mini", "local/smollm2"]   # only these; default: every model that works

Callers can reach only providers of the provider table (built in or from the config), so
they can never point the gateway at an address of their choosing; of those, only the
embedded model, providers the gateway has a key for, and keyless providers the config
names in a ``[providers.NAME]`` table. In-process models (a GGUF path after ``local/``) are
reachable only through names the config gives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ..backends.base import Backend
from ..client import AsyncClient
from ..config import default_model
from ..errors import ConfigError, ModelportError, NotFoundError
from ..keys import resolve_key
from ..prices import Price, price_for
from ..providers import Provider
from ..types import ModelInfo

# What a provider's model id may contain: enough for "openai/gpt-oss-120b", "llama3.2:3b",
# "claude-3-5@20241022"; nothing that could change an upstream URL's path or query.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
DEFAULT_NAME = "default"
# The metrics label of every model name the config does not define.
OTHER_LABEL = "other"
_CACHE_SIZE = 4096
# Errors a fallback model may cure: limits and failures of the first model's provider.
FALLBACK_KINDS = frozenset({"rate_limit", "quota", "server", "overloaded", "timeout", "connection"})


@dataclass(frozen=True, slots=True)
class Target:
    """One model a request can go to: ``name`` is ``provider/model-id``; ``price`` its rates
    under this gateway's config (the config's [prices] over the price table), decided once
    when the target is made, or None where no price is known."""

    name: str
    provider: Provider
    model_id: str
    backend: Backend
    price: Price | None = None


class Router:
    def __init__(self, client: AsyncClient, api_keys: dict[str, str] | None = None) -> None:
        self.client = client
        # Keys handed to the client explicitly (the rest come from the environment or keys file).
        self._api_keys = api_keys or {}
        config = client.config
        self.default = default_model(config)
        self.aliases = client.aliases
        self.fallbacks: dict[str, list[str]] = {}
        for name, chain in (config.get("fallbacks") or {}).items():
            chain = [chain] if isinstance(chain, str) else chain
            if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
                raise ConfigError(f"config [fallbacks] {name!r} must be a list of model names", hint='e.g. gpt-4o-mini = ["groq/llama-3.1-8b-instant"]')
            self.fallbacks[name] = chain
        offered = (config.get("server") or {}).get("models")
        self.allow_list: frozenset[str] | None = frozenset(offered) if offered else None
        # Providers the config names in a [providers.NAME] table: the only keyless ones reachable.
        self._configured = frozenset(config.get("providers") or ())
        self._refusals: dict[str, str | None] = {}
        self._targets: dict[str, tuple[Target, ...]] = {}
        self._labels: frozenset[str] | None = None
        self._bare: dict[str, str] = {}

    # -- resolution ----------------------------------------------------------------------

    def targets(self, model: str) -> tuple[Target, ...]:
        """The model's target and its fallbacks, in order; NotFoundError lists what exists."""
        targets = self._targets.get(model)
        if targets is None:
            if len(self._targets) >= _CACHE_SIZE:
                # Callers choose the names; a bounded cache keeps a flood of them harmless.
                self._targets.clear()
            targets = self._targets[model] = self._resolve(model)
        return targets

    def _resolve(self, model: str) -> tuple[Target, ...]:
        if self.allow_list is not None and model not in self.allow_list and model != DEFAULT_NAME:
            raise self._unknown(model, "is not offered by this gateway")
        primary = self._target(model)
        chain = [primary]
        for name in self.fallbacks.get(model) or self.fallbacks.get(primary.name) or ():
            target = self._target(name)
            if target not in chain:
                chain.append(target)
        return tuple(chain)

    def bare(self, model: str) -> str:
        """A name without a provider, as Gemini users type them (``smollm2``): the one model
        the gateway offers under that id (``local/smollm2``). Aliases, ``default`` and
        ``provider/...`` names, and bare names that fit no or several models, stay as given."""
        if "/" in model or model in self.aliases or model == DEFAULT_NAME:
            return model
        found = self._bare.get(model)
        if found is None:
            if len(self._bare) >= _CACHE_SIZE:
                self._bare.clear()
            ids = {info.id for info in self.list_models() if info.id.partition("/")[2] == model}
            found = self._bare[model] = ids.pop() if len(ids) == 1 else model
        return found

    def _target(self, model: str) -> Target:
        name = self.default if model == DEFAULT_NAME else model
        via_config = name in self.aliases or model == DEFAULT_NAME
        if not _SAFE_NAME.match(name) or ".." in name:
            raise self._unknown(model, "is not a valid model name")
        try:
            provider, model_id = self.client.resolve(name)
        except ConfigError:
            raise self._unknown(model, "does not exist") from None
        if provider.backend == "local" and not via_config and model_id not in provider.models:
            # local/<path> would let a caller make the server open files of its choosing.
            raise self._unknown(model, "does not exist")
        refusal = self._refusal(provider)
        if refusal is not None:
            raise self._unknown(model, refusal)
        price = price_for(provider.name, model_id, overrides=self.client.prices)
        return Target(f"{provider.name}/{model_id}", provider, model_id, self.client.backend(provider), price)

    def routable(self, provider: Provider) -> bool:
        """Whether the gateway routes to ``provider`` (see ``_refusal``)."""
        return self._refusal(provider) is None

    def _refusal(self, provider: Provider) -> str | None:
        """Why the gateway does not route to ``provider``, or None when it does: it routes to
        the embedded model, to providers it has a key for, and to keyless providers the
        config enables. The built-in keyless rows (lmstudio, ollama, vllm) point at local
        ports: reachable by default, they would let any caller reach those ports, and
        ``lmstudio`` (port 1234, the gateway's own default) would route back into the gateway."""
        name = provider.name
        if name not in self._refusals:
            if provider.backend == "local" or resolve_key(provider, self._api_keys.get(name)):
                refusal = None
            elif provider.key_required:
                refusal = f"is not available: the gateway has no {name} API key"
            elif name not in self._configured:
                refusal = (f"is not available: this gateway routes to {name} only when the config enables it; "
                           f"add a [providers.{name}] table to the config file (base_url defaults to {provider.base_url})")
            else:
                refusal = None
            self._refusals[name] = refusal
        return self._refusals[name]

    def _unknown(self, model: str, why: str) -> NotFoundError:
        names = [m.id for m in self.list_models()]
        return NotFoundError(
            f"model {model!r} {why}; models on this gateway: {', '.join(names)}",
            code="model_not_found",
            param="model",
            hint="GET /v1/models lists them; names are provider/model-id or an alias from the config",
        )

    # -- listing -------------------------------------------------------------------------

    def list_models(self) -> list[ModelInfo]:
        """The names callers can use: the config's list, else aliases, the default, the
        embedded model and the listed models of every provider the gateway has a key for."""
        if self.allow_list is not None:
            names = sorted(self.allow_list)
        else:
            names = list(self.aliases)
            names.append(self.default)
            for provider in self.client.providers.values():
                if provider.models and self._refusal(provider) is None:
                    names.extend(f"{provider.name}/{m}" for m in provider.models)
        seen: dict[str, ModelInfo] = {}
        for name in names:
            if name in seen:
                continue
            try:
                provider, _ = self.client.resolve(name)
            except ModelportError:
                continue
            seen[name] = ModelInfo(name, provider.name, owned_by=provider.name)
        return list(seen.values())

    def find_model(self, model: str) -> ModelInfo:
        for info in self.list_models():
            if info.id == model:
                return info
        target = self.targets(model)[0]
        return ModelInfo(model, target.provider.name, owned_by=target.provider.name)

    def metric_label(self, model: str) -> str:
        """``model`` if the config or the provider table names it, else ``OTHER_LABEL``:
        callers choose model names, and a metrics series per name would grow without bound."""
        if self._labels is None:
            names = {DEFAULT_NAME, self.default, *self.aliases, *(self.allow_list or ())}
            names.update(f"{p.name}/{m}" for p in self.client.providers.values() for m in p.models)
            self._labels = frozenset(names)
        return model if model in self._labels else OTHER_LABEL


def may_fall_back(error: ModelportError) -> bool:
    return error.kind in FALLBACK_KINDS
