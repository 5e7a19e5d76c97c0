"""Per-model rpm/tpm from the config's ``[limits]`` table seed the batch engine's limiters."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from modelport.batch import batch, open_job
from modelport.batch.engine import Engine
from modelport.batch.ratelimit import limit_seeds
from modelport.batch.spec import JobSpec
from modelport.client import AsyncClient
from modelport.errors import ConfigError
from tests.fakes.openai_upstream import OpenAIUpstream


def test_seeds_are_checked_and_keyed_by_route() -> None:
    config = {"limits": {"fast": {"rpm": 100}, "groq/*": {"rpm": 30, "tpm": 6000}, "openai/gpt-4o-mini": {"tpm": 200000}}}
    routes = {"fast": ("openai", "gpt-fake"), "openai/gpt-4o-mini": ("openai", "gpt-4o-mini")}
    assert limit_seeds(config, routes.__getitem__) == {
        "openai/gpt-fake": {"rpm": 100.0}, "groq/*": {"rpm": 30.0, "tpm": 6000.0}, "openai/gpt-4o-mini": {"tpm": 200000.0}}
    assert limit_seeds({}) == {}
    for bad in ({"limits": {"x/y": {"rpm": 0}}}, {"limits": {"x/y": {"rps": 3}}}, {"limits": {"x/y": 5}}, {"limits": {"x/y": {"rpm": True}}}):
        with pytest.raises(ConfigError):
            limit_seeds(bad)


def _engine(tmp_path: Path, config: dict[str, Any], **spec: Any) -> Engine:
    journal, job = open_job(tmp_path / "job.db", JobSpec(job_id="limits", model="fast", prompt="{text}", **spec))
    return Engine(journal, job, AsyncClient(max_retries=0, config=config))


def test_the_engine_paces_by_the_config(tmp_path: Path) -> None:
    config = {"aliases": {"fast": "openai/gpt-fake"}, "limits": {"fast": {"rpm": 120}, "openai/*": {"rpm": 60, "tpm": 9000}}}
    engine = _engine(tmp_path, config)
    assert engine.limits.get("openai", "gpt-fake").rpm == 120
    assert (engine.limits.get("openai", "other").rpm, engine.limits.get("openai", "other").tpm) == (60, 9000)
    assert engine.limits.get("groq", "x").rpm is None
    engine.journal.close()
    # --rpm on the command line wins over the config.
    engine = _engine(tmp_path / "cli", config, rpm=30)
    assert engine.limits.get("openai", "gpt-fake").rpm == 30
    engine.journal.close()


def test_a_configured_rpm_holds_a_real_job_back(tmp_path: Path) -> None:
    with OpenAIUpstream() as upstream:
        config = {"providers": {"openai": {"base_url": upstream.base_url}}, "limits": {"openai/gpt-fake": {"rpm": 600}}}
        rows = [{"text": f"row {i}"} for i in range(15)]
        started = time.monotonic()
        out = batch(rows, "openai/gpt-fake", "{text}", client=AsyncClient(max_retries=0, config=config, api_keys={"openai": "k"}))
    # 10 requests/s after a burst of 10: the last 5 rows wait about half a second.
    assert [r["answer"] for r in out] == [f"echo: row {i}" for i in range(15)]
    assert time.monotonic() - started >= 0.4
