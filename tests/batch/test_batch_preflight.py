"""`modelport batch run` checks before the first request that the job can run to its end:
output and input formats, the engine and the mode. A failure is one clear line with the
fix, nothing is sent and no job is created (issue #14 item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_upstream import OpenAIUpstream
from tests.paths import ROOT



@pytest.fixture()
def upstream():
    with OpenAIUpstream() as server:
        yield server


def _without(tmp_path: Path, *modules: str) -> str:
    """A PYTHONPATH on which ``modules`` cannot be imported, as on a machine without them."""
    blocked = tmp_path / "blocked"
    for module in modules:
        (blocked / module).mkdir(parents=True)
        (blocked / module / "__init__.py").write_text(f"raise ImportError('{module} is not installed here')\n")
    return os.pathsep.join([str(blocked), str(ROOT)])


def _batch(tmp_path: Path, upstream: OpenAIUpstream, *args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MODELPORT_OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY="sk-test",
               PYTHONPATH=pythonpath or str(ROOT))
    return subprocess.run([sys.executable, "-m", "modelport", "batch", "run", *args], env=env, capture_output=True, text=True,
                          timeout=90)


def _rows(tmp_path: Path) -> Path:
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(5)))
    return source


def _nothing_happened(tmp_path: Path, upstream: OpenAIUpstream, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert upstream.request_count == 0
    jobs = Path(os.environ["MODELPORT_DATA_DIR"]) / "batch"
    assert not jobs.exists() or not list(jobs.glob("*.db")), "no job is created"


def test_parquet_output_without_pyarrow_fails_before_the_first_request(tmp_path, upstream):
    result = _batch(tmp_path, upstream, str(_rows(tmp_path)), "-m", "openai/gpt-fake", "--prompt", "Say {text}",
                    "--output", str(tmp_path / "out.parquet"), "--quiet", pythonpath=_without(tmp_path, "pyarrow"))
    _nothing_happened(tmp_path, upstream, result)
    assert 'pip install "modelport[pandas]"' in result.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_parquet_input_without_pyarrow_fails_with_the_install_line(tmp_path, upstream):
    source = tmp_path / "rows.parquet"
    source.write_bytes(b"PAR1")  # never read: the check comes first
    result = _batch(tmp_path, upstream, str(source), "-m", "openai/gpt-fake", "--prompt", "Say {text}", "--quiet",
                    pythonpath=_without(tmp_path, "pyarrow"))
    _nothing_happened(tmp_path, upstream, result)
    assert 'pip install "modelport[pandas]"' in result.stderr


def test_ray_engine_without_ray_fails_with_the_install_line(tmp_path, upstream):
    result = _batch(tmp_path, upstream, str(_rows(tmp_path)), "-m", "openai/gpt-fake", "--prompt", "Say {text}",
                    "--engine", "ray", "--quiet", pythonpath=_without(tmp_path, "ray"))
    _nothing_happened(tmp_path, upstream, result)
    assert 'pip install "modelport[ray]"' in result.stderr


def test_native_mode_for_a_provider_without_a_batch_api_fails_before_the_job_is_created(tmp_path, upstream):
    result = _batch(tmp_path, upstream, str(_rows(tmp_path)), "-m", "local/smollm2", "--prompt", "Say {text}",
                    "--mode", "native", "--quiet")
    _nothing_happened(tmp_path, upstream, result)
    assert "local has no batch API for --mode native" in result.stderr and "--mode live" in result.stderr


def test_native_mode_on_ray_fails_before_the_job_is_created(tmp_path, upstream):
    pytest.importorskip("ray")
    result = _batch(tmp_path, upstream, str(_rows(tmp_path)), "-m", "openai/gpt-fake", "--prompt", "Say {text}",
                    "--mode", "native", "--engine", "ray", "--quiet")
    _nothing_happened(tmp_path, upstream, result)
    assert "--engine ray runs live jobs only" in result.stderr

