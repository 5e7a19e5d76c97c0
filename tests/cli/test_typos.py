"""Typos are named, with the closest known name, instead of passing in silence: request
options (-o), config sections and settings, model names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelport.config import unknown_names
from tests.fakes.openai_upstream import OpenAIUpstream

ROOT = Path(__file__).resolve().parents[2]


def cli(tmp_path: Path, *args: str, config: str = "", base_url: str = "") -> subprocess.CompletedProcess[str]:
    (tmp_path / "config.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(MODELPORT_CONFIG=str(tmp_path / "config.toml"), MODELPORT_DATA_DIR=str(tmp_path / "data"),
               MODELPORT_LOG_PATH=str(tmp_path / "log.db"), PYTHONPATH=str(ROOT), OPENAI_API_KEY="sk-typo-test")
    if base_url:
        env["MODELPORT_OPENAI_BASE_URL"] = base_url
    return subprocess.run([sys.executable, "-m", "modelport", *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)


def test_a_mistyped_option_is_named_with_the_closest_one_and_a_provider_option_as_passed_through(tmp_path):
    with OpenAIUpstream() as upstream:
        result = cli(tmp_path, "ask", "--no-stream", "-m", "openai/gpt-fake", "-o", "temprature=0.2", "-o", "num_ctx=8192",
                     "hi", base_url=upstream.url + "/v1")
        body = upstream.last_request.body
    assert result.returncode == 0, result.stderr
    assert "-o temprature is not a modelport parameter; did you mean temperature?" in result.stderr
    assert "-o num_ctx passed through to the provider" in result.stderr
    assert body["temprature"] == 0.2 and body["num_ctx"] == 8192  # still sent: the provider may know them


def test_unknown_config_sections_and_settings_are_named_with_the_closest_known_name():
    config = {"aliasses": {"fast": "local/smollm2"}, "default_modle": "x", "local": {"thread": 2},
              "providers": {"mybox": {"base_url": "http://localhost:8080/v1", "key_evn": "X"}},
              "aliases": {"anything": "local/smollm2"}, "server": {"whatever": 1}}
    assert unknown_names(config) == [
        "unknown section [aliasses], ignored; did you mean [aliases]?",
        "unknown setting default_modle, ignored; did you mean default_model?",
        "unknown setting thread in [local], ignored; did you mean threads?",
        "unknown setting key_evn in [providers.mybox], ignored; did you mean key_env?",
    ]


def test_the_cli_warns_about_a_config_typo_once(tmp_path):
    result = cli(tmp_path, "models", config='[aliasses]\nfast = "local/smollm2"\n')
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("unknown section [aliasses], ignored; did you mean [aliases]?") == 1


@pytest.mark.parametrize(("typed", "meant"), [("gpt-4o-mini", "openai/gpt-4o-mini"), ("opnai/gpt-4o-mini", "openai/gpt-4o-mini"),
                                              ("local/smollm3", "local/smollm2")])
def test_a_mistyped_model_gets_a_did_you_mean(tmp_path, typed, meant):
    result = cli(tmp_path, "ask", "-m", typed, "hi")
    assert result.returncode == 1
    assert f"did you mean {meant}?" in result.stderr
    if typed.startswith("local/"):
        assert "does not exist" in result.stderr
