"""A missing optional package is one clear line naming the pip command, never a traceback.

The package is hidden from a real subprocess by a sitecustomize that sets
``sys.modules[name] = None`` (which makes ``import name`` raise ImportError)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SHIM = """import os, sys
for name in filter(None, os.environ.get("MODELPORT_TEST_HIDE", "").split(",")):
    sys.modules[name] = None
"""


def run_without(tmp_path: Path, hidden: str, *args: str) -> subprocess.CompletedProcess[str]:
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SHIM)
    env = dict(os.environ, MODELPORT_TEST_HIDE=hidden, PYTHONPATH=os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def assert_one_line(result: subprocess.CompletedProcess[str], fix: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and f'pip install "modelport[{fix}]"' in errors[0], result.stderr


@pytest.fixture()
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "hi"}\n')
    return path


def test_parquet_output_without_pyarrow_fails_before_the_job_runs(tmp_path: Path, rows: Path) -> None:
    result = run_without(tmp_path, "pyarrow,pyarrow.parquet", "-m", "modelport", "batch", "run", str(rows),
                         "-m", "local/smollm2", "--prompt", "{text}", "--output", str(tmp_path / "out.parquet"))
    assert_one_line(result, "pandas")
    assert "writing Parquet needs pyarrow" in result.stderr
    assert "job " not in result.stdout  # refused up front: no model call was spent


def test_parquet_input_without_pyarrow(tmp_path: Path) -> None:
    (tmp_path / "in.parquet").write_bytes(b"PAR1")
    result = run_without(tmp_path, "pyarrow,pyarrow.parquet", "-m", "modelport", "batch", "run", str(tmp_path / "in.parquet"),
                         "-m", "local/smollm2", "--prompt", "{text}")
    assert_one_line(result, "pandas")


def test_ray_engine_without_ray(tmp_path: Path, rows: Path) -> None:
    result = run_without(tmp_path, "ray", "-m", "modelport", "batch", "run", str(rows), "-m", "local/smollm2",
                         "--prompt", "{text}", "--engine", "ray", "--output", str(tmp_path / "out.jsonl"))
    assert_one_line(result, "ray")


def test_sdk_schema_without_jsonschema_is_a_modelport_error(tmp_path: Path) -> None:
    code = """
from modelport.errors import ConfigError
from modelport.structured import to_response_format
try:
    to_response_format({"type": "object", "properties": {"a": {"type": "string"}}})
except ConfigError as exc:
    print("MESSAGE", exc.message)
"""
    result = run_without(tmp_path, "jsonschema", "-c", code)
    assert result.returncode == 0, result.stderr
    assert 'MESSAGE validating answers against a JSON schema needs jsonschema: pip install "modelport[structured]"' in result.stdout


def test_the_gateway_needs_nothing_beyond_the_base_install() -> None:
    """`pip install -e .` (the README's install) brings what `modelport serve` imports."""
    import re

    tomllib = pytest.importorskip("tomllib")  # 3.11+
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[<>=;\[ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    assert {"uvicorn", "httptools", "uvloop"} <= base
    code = "import modelport.server.protocol, modelport.server; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip() == "ok"
