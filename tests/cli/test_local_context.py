"""`[local] n_ctx` sets the embedded engine's context, so the "raise n_ctx" hint can be
followed; it is checked against what the model was trained for, read from the GGUF header."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from modelport.backends.local import DEFAULT_N_CTX, LocalBackend, context_for
from modelport.errors import ConfigError
from modelport.local_model import trained_context


def gguf(path: Path, context: int | None) -> Path:
    """A GGUF header with a string, an array of strings and (maybe) llama.context_length."""
    def key(name: str) -> bytes:
        return struct.pack("<Q", len(name)) + name.encode()

    def text(value: str) -> bytes:
        return struct.pack("<I", 8) + struct.pack("<Q", len(value)) + value.encode()

    kvs = [key("general.name") + text("tiny"),
           key("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + b"".join(struct.pack("<Q", 1) + t for t in (b"a", b"b"))]
    if context is not None:
        kvs.append(key("llama.context_length") + struct.pack("<II", 4, context))
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return path


def test_the_trained_context_is_read_from_the_gguf_header(tmp_path):
    assert trained_context(gguf(tmp_path / "a.gguf", 4096)) == 4096
    assert trained_context(gguf(tmp_path / "b.gguf", None)) is None
    (tmp_path / "c.gguf").write_bytes(b"not a model")
    assert trained_context(tmp_path / "c.gguf") is None


def test_n_ctx_defaults_to_8192_capped_by_the_model_and_refuses_more_than_it_supports(tmp_path):
    small = str(gguf(tmp_path / "small.gguf", 2048))
    assert context_for(small, None) == 2048
    assert context_for(str(gguf(tmp_path / "big.gguf", 32768)), None) == DEFAULT_N_CTX
    assert context_for(small, 1024) == 1024
    with pytest.raises(ConfigError, match=r"n_ctx = 4096 is more than small.gguf supports \(2048 tokens\)"):
        context_for(small, 4096)


def test_local_n_ctx_comes_from_the_config(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    monkeypatch.setenv("MODELPORT_CONFIG", str(config))
    from modelport.config import _load

    config.write_text("[local]\nn_ctx = 4096\n")
    _load.cache_clear()
    assert LocalBackend(n_threads=1).n_ctx == 4096
    config.write_text('[local]\nn_ctx = "big"\n')
    _load.cache_clear()
    with pytest.raises(ConfigError, match="whole number of tokens"):
        LocalBackend(n_threads=1)
    _load.cache_clear()
