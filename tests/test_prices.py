"""Cost arithmetic against hand-computed cases, and the price table as data."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from modelport.prices import NATIVE_BATCH_DISCOUNT, Price, cost, price_for
from modelport.types import Usage


def test_plain_input_and_output() -> None:
    # gpt-4o: $2.50 in, $10 out per million. 1000 * 2.5 + 500 * 10 = 7500 micro-dollars.
    assert cost(Usage(1000, 500), price_for("openai", "gpt-4o")) == pytest.approx(0.0075)


def test_cached_input_is_billed_at_the_cached_rate() -> None:
    # 1000 input of which 400 cached: 600 * 2.5 + 400 * 1.25 + 500 * 10 = 7000
    assert cost(Usage(1000, 500, cached_tokens=400), price_for("openai", "gpt-4o")) == pytest.approx(0.007)


def test_reasoning_tokens_are_output_and_not_billed_twice() -> None:
    # o3: $2 in, $8 out. Output 3000 includes 2500 reasoning: 2000 * 2 + 3000 * 8 = 28000
    assert cost(Usage(2000, 3000, reasoning_tokens=2500), price_for("openai", "o3")) == pytest.approx(0.028)


def test_cache_reads_and_writes_each_have_their_rate() -> None:
    # claude-sonnet-4-5: $3 in, $0.30 read, $3.75 write, $15 out. 10000 input = 6000 read + 3000 written + 1000 plain:
    # 1000 * 3 + 6000 * 0.3 + 3000 * 3.75 + 200 * 15 = 3000 + 1800 + 11250 + 3000 = 19050
    usage = Usage(10_000, 200, cached_tokens=6000, cache_write_tokens=3000)
    assert cost(usage, price_for("anthropic", "claude-sonnet-4-5")) == pytest.approx(0.01905)


def test_missing_cached_rate_means_the_input_rate() -> None:
    price = Price(input=1.0, output=2.0)
    assert cost(Usage(1000, 1000, cached_tokens=1000), price) == pytest.approx(0.003)


def test_long_context_rates_apply_to_the_whole_request_above_the_threshold() -> None:
    price = price_for("gemini", "gemini-2.5-pro")
    # At the threshold: 200000 * 1.25 + 1000 * 10 = 260000
    assert cost(Usage(200_000, 1000), price) == pytest.approx(0.26)
    # Above it: 250000 * 2.5 + 1000 * 15 = 640000
    assert cost(Usage(250_000, 1000), price) == pytest.approx(0.64)


def test_batch_discount_halves_the_cost() -> None:
    full = cost(Usage(1000, 500), price_for("openai", "gpt-4o"))
    assert cost(Usage(1000, 500), price_for("openai", "gpt-4o"), batch_discount=NATIVE_BATCH_DISCOUNT) == pytest.approx(full / 2)


def test_unknown_price_means_unknown_cost_never_zero() -> None:
    assert price_for("nosuchprovider", "x") is None
    assert price_for("openai", "gpt-9-ultra") is None
    assert cost(Usage(1000, 1000), None) is None


def test_local_models_are_known_to_be_free() -> None:
    for provider in ("local", "ollama", "lmstudio", "vllm"):
        price = price_for(provider, "anything")
        assert price is not None
        assert cost(Usage(1000, 1000), price) == 0.0


def test_snapshot_ids_resolve_to_their_model() -> None:
    assert price_for("openai", "gpt-4o-2024-08-06") == price_for("openai", "gpt-4o")
    assert price_for("anthropic", "claude-sonnet-4-5-20250929") == price_for("anthropic", "claude-sonnet-4-5")
    assert price_for("openai", "gpt-4o-mini-2024-07-18") == price_for("openai", "gpt-4o-mini")
    assert price_for("xai", "grok-4-0709") == price_for("xai", "grok-4")


def test_model_ids_with_slashes_and_openrouter_passthrough() -> None:
    assert price_for("groq", "openai/gpt-oss-120b") is not None
    assert price_for("openrouter", "anthropic/claude-sonnet-4.5") == price_for("anthropic", "claude-sonnet-4-5")
    assert price_for("openrouter", "google/gemini-2.5-flash") == price_for("gemini", "gemini-2.5-flash")
    assert price_for("openrouter", "unknownvendor/model") is None


def test_overrides_win_over_the_table() -> None:
    overrides = {"openai/gpt-4o": {"input": 1, "output": 2}, "mybox/*": {"free": True}}
    assert price_for("openai", "gpt-4o", overrides=overrides) == Price(1.0, 2.0)
    assert price_for("mybox", "llama", overrides=overrides) == Price(0.0, 0.0)
    assert price_for("openai", "gpt-4o-mini", overrides=overrides) == price_for("openai", "gpt-4o-mini", overrides={})


def test_overrides_come_from_the_config_file(isolated_home) -> None:
    config = isolated_home / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[prices]\n"mycorp/big" = { input = 4.0, output = 8.0, cached_input = 1.0 }\n')
    price = price_for("mycorp", "big")
    assert price == Price(4.0, 8.0, cached_input=1.0)
    # 1000 input with 500 cached: 500 * 4 + 500 * 1 + 100 * 8 = 3300
    assert cost(Usage(1000, 100, cached_tokens=500), price) == pytest.approx(0.0033)


def test_malformed_override_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="input"):
        price_for("openai", "gpt-4o", overrides={"openai/gpt-4o": {"output": 1}})


def test_the_table_is_dated_sourced_and_sane() -> None:
    table = json.loads(resources.files("modelport").joinpath("data/prices.json").read_text())
    assert table["as_of"]
    for name, provider in table["providers"].items():
        assert provider["source"], name
        if provider.get("free"):
            continue
        assert provider["as_of"], name
        for model, spec in provider["models"].items():
            price = price_for(name, model)
            assert price is not None and price.source == provider["source"]
            assert 0 <= price.input and 0 <= price.output, model
            if price.cached_input is not None:
                assert price.cached_input <= price.input, model
