"""What modelport keeps (every prompt and answer, uploads, batch results, keys) is created
private: directories 0700, files 0600, whatever the umask. The one exception is an output
file the user names (`batch run -o`), which follows the user's umask like any file they make."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import openai
import pytest

from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread


@pytest.fixture()
def open_umask() -> Iterator[None]:
    """The common 022: without our care, files would come out 0644 and dirs 0755."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, str]:
    found = {}
    for path in root.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        found[str(path.relative_to(root))] = oct(mode)
    return found


def loose(root: Path) -> list[str]:
    """Everything under ``root`` that is not 0700 (dirs) or 0600 (files)."""
    bad = []
    for path in root.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            bad.append(f"{path.relative_to(root)} {oct(mode)}")
    return bad


def test_a_gateway_run_and_a_cli_batch_leave_only_private_files(isolated_home: Path, open_umask: None,
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    home = Path(isolated_home)
    work = tmp_path_factory.mktemp("work")  # the user's own files: input and -o output
    env = dict(os.environ, MODELPORT_CACHE="1")

    # keys.json (config dir), a gateway key (gateway.db in the data dir), and the response cache.
    subprocess.run([sys.executable, "-m", "modelport", "keys", "set", "groq", "--value", "gsk-test"], check=True, env=env, capture_output=True)
    KeyStore().create("tester")

    # The gateway: a logged chat, an uploaded file and a batch over it (files.db, jobs/).
    with GatewayThread(Settings(auth=True, log_calls=True, max_tokens=4)) as gw:
        sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=KeyStore().create("batcher"), max_retries=0)
        sdk.chat.completions.create(model="local/smollm2", messages=[{"role": "user", "content": "hi"}])
        line = {"custom_id": "r", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "local/smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}}
        source = work / "requests.jsonl"
        source.write_text(json.dumps(line) + "\n")
        uploaded = sdk.files.create(file=source.open("rb"), purpose="batch")
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        deadline = time.monotonic() + 120
        while sdk.batches.retrieve(batch.id).status not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sdk.batches.retrieve(batch.id).status == "completed"

    # A CLI batch (its journal in the data dir), with the response cache on.
    rows = work / "rows.jsonl"
    rows.write_text('{"text": "hi"}\n')
    output = work / "out.jsonl"
    result = subprocess.run([sys.executable, "-m", "modelport", "batch", "run", str(rows), "-m", "local/smollm2", "--prompt", "{text}",
                             "--output", str(output), "-o", "max_tokens=4", "--cache", "--quiet"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    subprocess.run([sys.executable, "-m", "modelport", "ask", "-m", "local/smollm2", "-o", "max_tokens=4", "hi"],
                   check=True, env=env, capture_output=True)

    found = modes(home)
    for name in ("logs.db", "cache.db", "config/keys.json", "data/gateway.db", "data/gateway/files.db"):
        assert name in found, sorted(found)
    assert any(n.startswith("data/gateway/files/file-") for n in found)
    assert any(n.startswith("data/gateway/jobs/") and n.endswith(".jsonl") for n in found)
    assert any(n.startswith("data/batch/") for n in found)
    assert any(n.endswith("-wal") or n.endswith("-shm") for n in found), "SQLite's side files are checked too"
    assert not loose(home), loose(home)
    # The user's own output file keeps the user's umask.
    assert stat.S_IMODE(output.stat().st_mode) == 0o644


def test_an_existing_world_readable_log_is_narrowed(isolated_home: Path, open_umask: None) -> None:
    from modelport.calllog import connect

    path = Path(isolated_home) / "old" / "logs.db"
    path.parent.mkdir()
    path.touch(mode=0o644)
    connect(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
