"""Prices as data, and the cost of a call.

The table lives in ``modelport/data/prices.json``: per-million-token list prices for the
common models of each provider, each provider with its ``source`` page and ``as_of`` date.
Models that run on the user's own hardware (local, ollama, lmstudio, vllm, llamacpp) are
known to cost nothing. Anything not in the table has an *unknown* price: ``price_for``
returns None and ``cost`` returns None, never a made-up zero.

Users override or extend the table in the config file::

    [prices]
    "openai/gpt-4o" = { input = 2.5, output = 10.0, cached_input = 1.25 }
    "myserver/*" = { free = true }

Token conventions follow ``modelport.types.Usage``: ``input_tokens`` includes cache reads
(``cached_tokens``) and cache writes (``cache_write_tokens``); ``output_tokens`` includes
reasoning tokens, which every provider bills at the output rate.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from modelport.types import Usage

# The provider-side batch APIs (OpenAI, Anthropic, Gemini, Groq, Mistral) bill half price.
NATIVE_BATCH_DISCOUNT = 0.5

# Snapshot suffixes name the same model at the same price as the undated id:
# gpt-4o-2024-08-06, claude-sonnet-4-5-20250929, grok-4-0709, claude-3-5-haiku-latest.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. ``cached_input``/``cache_write`` of None mean the input rate."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    # Google and Anthropic bill a whole request at higher rates once its input passes this.
    long_context_threshold: int | None = None
    long_context: Price | None = None
    source: str = field(default="", compare=False)
    as_of: str | None = field(default=None, compare=False)

    def for_input(self, input_tokens: int) -> Price:
        """The rates that apply to a request with this many input tokens."""
        if self.long_context is not None and self.long_context_threshold is not None and input_tokens > self.long_context_threshold:
            return self.long_context
        return self


FREE = Price(0.0, 0.0, source="runs on your own hardware")


def cost(usage: Usage, price: Price | None, *, batch_discount: float = 0.0) -> float | None:
    """USD for one call, or None when the price is unknown.

    Cache reads are billed at ``cached_input``, cache writes at ``cache_write``, the rest of
    the input at ``input``, and all output (reasoning included) at ``output``.
    ``batch_discount`` is the fraction taken off, e.g. ``NATIVE_BATCH_DISCOUNT``.
    """
    if price is None:
        return None
    rates = price.for_input(usage.input_tokens)
    cached = min(usage.cached_tokens, usage.input_tokens)
    written = min(usage.cache_write_tokens, usage.input_tokens - cached)
    uncached = usage.input_tokens - cached - written
    total = (
        uncached * rates.input
        + cached * (rates.input if rates.cached_input is None else rates.cached_input)
        + written * (rates.input if rates.cache_write is None else rates.cache_write)
        + usage.output_tokens * rates.output
    )
    # Rounded to a billionth of a cent so sums and displays are free of float noise.
    return round(total / 1_000_000 * (1.0 - batch_discount), 11)


def cache_saving(cached_tokens: int, cache_write_tokens: int, price: Price | None) -> float | None:
    """USD that prompt caching saved on these tokens against paying the input rate for them
    (negative when writes cost more than reads gave back), or None when the price is unknown.
    Base rates: the long-context ones depend on each call's size, which a total has lost."""
    if price is None:
        return None
    read_rate = price.input if price.cached_input is None else price.cached_input
    write_rate = price.input if price.cache_write is None else price.cache_write
    saved = cached_tokens * (price.input - read_rate) + cache_write_tokens * (price.input - write_rate)
    return round(saved / 1_000_000, 11)


def price_for(provider: str, model: str, *, overrides: dict[str, Any] | None = None) -> Price | None:
    """The price of ``provider/model``: config overrides first, then the built-in table.

    ``overrides`` has the shape of the config's ``[prices]`` table (``config_prices`` takes
    it from a loaded config); by default it comes from the process's config file (which
    ``load_config`` caches).
    """
    if overrides is None:
        overrides = _config_overrides()
    for key in (f"{provider}/{model}", f"{provider}/*"):
        if key in overrides:
            return _price_from_entry(overrides[key], source=f"config [prices] {key!r}", as_of=None)
    return _table_price(provider, model)


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = resources.files("modelport").joinpath("data/prices.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _model_index() -> dict[str, dict[str, Price]]:
    """provider -> lower-cased model id (and alias) -> Price, built once."""
    index: dict[str, dict[str, Price]] = {}
    for provider, entry in _table()["providers"].items():
        source, as_of = entry.get("source", ""), entry.get("as_of")
        models = {name.lower(): _price_from_entry(spec, source, as_of) for name, spec in entry.get("models", {}).items()}
        for alias, target in entry.get("aliases", {}).items():
            models[alias.lower()] = models[target.lower()]
        index[provider] = models
    return index


def _table_price(provider: str, model: str) -> Price | None:
    entry = _table()["providers"].get(provider)
    if entry is None:
        return None
    if entry.get("free"):
        return replace(FREE, source=entry.get("source", FREE.source))
    models = _model_index()[provider]
    wanted = model.lower().removeprefix("models/")
    for candidate in (wanted, _SNAPSHOT_SUFFIX.sub("", wanted)):
        if candidate in models:
            return models[candidate]
    vendors = entry.get("passthrough")
    if vendors and "/" in model:
        # OpenRouter-style ids are vendor/model billed at the vendor's list price; their
        # version numbers use dots where the vendors' own ids use dashes (claude-sonnet-4.5).
        vendor, _, vendor_model = model.partition("/")
        upstream = vendors.get(vendor.lower())
        if upstream is not None:
            found = _table_price(upstream, vendor_model) or _table_price(upstream, vendor_model.replace(".", "-"))
            if found is not None:
                return replace(found, source=f"{entry.get('source', '')}; {found.source}")
    return None


def _price_from_entry(spec: dict[str, Any], source: str, as_of: str | None) -> Price:
    if spec.get("free"):
        return replace(FREE, source=source)
    try:
        long_spec = spec.get("long_context")
        long_context = _price_from_entry(long_spec, source, as_of) if long_spec else None
        return Price(
            input=float(spec["input"]),
            output=float(spec["output"]),
            cached_input=_optional_float(spec.get("cached_input")),
            cache_write=_optional_float(spec.get("cache_write")),
            long_context_threshold=int(long_spec["threshold"]) if long_spec else None,
            long_context=long_context,
            source=source,
            as_of=as_of,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"price entry from {source} needs numeric 'input' and 'output' (or 'free = true'): {exc}") from None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def config_prices(config: dict[str, Any] | None) -> dict[str, Any]:
    """A loaded config's ``[prices]`` table, or {}."""
    prices = (config or {}).get("prices", {})
    return prices if isinstance(prices, dict) else {}


def _config_overrides() -> dict[str, Any]:
    try:
        from modelport.config import load_config
    except ImportError:  # the config module is optional at this layer
        return {}
    return config_prices(load_config())
