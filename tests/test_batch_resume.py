"""Crash and resume: a `modelport batch run` subprocess is SIGKILLed at random moments and
resumed, several times. In the end every row is in the output exactly once, in input
order, and the upstream's own log shows that no row committed before a kill was sent again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelport.batch.journal import DONE, FAILED, Journal
from tests.fakes.openai_upstream import OpenAIUpstream

ROWS = 600
KILLS = 4
CLI = [sys.executable, "-c", "from modelport.cli import main; main()"]


def _env(tmp_path: Path, base_url: str) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[providers.fake]\nbase_url = "{base_url}"\n')
    env = dict(os.environ)
    env.update(MODELPORT_CONFIG=str(config), MODELPORT_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(Path(__file__).parent.parent))
    return env


def _final_rows(journal_file: Path) -> set[int]:
    journal = Journal(journal_file)
    try:
        cur = journal.db.execute("SELECT idx FROM rows WHERE state IN (?, ?)", (DONE, FAILED))
        return {idx for (idx,) in cur}
    finally:
        journal.close()


def _sent_rows(upstream: OpenAIUpstream) -> list[int]:
    return [int(r.body["messages"][-1]["content"].rsplit(" ", 1)[1]) for r in list(upstream.requests)]


@pytest.mark.timeout(120)
def test_sigkill_at_random_moments_then_resume_gives_each_row_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(7)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(ROWS)))
    out = tmp_path / "out.jsonl"
    with OpenAIUpstream(latency=0.02) as upstream:
        env = _env(tmp_path, upstream.base_url)
        journal_file = tmp_path / "data" / "batch" / "crash.db"
        command = [*CLI, "batch", "run", str(source), "-m", "fake/gpt-fake", "--prompt", "Say: {text}", "-o", str(out),
                   "--concurrency", "8", "--job-id", "crash", "--quiet"]
        committed: set[int] = set()
        kills = 0
        progress: list[int] = []
        for attempt in range(KILLS + 1):
            upstream.clear()
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if attempt < KILLS:
                # A random moment once requests flow (startup time varies with the machine's load).
                deadline = time.monotonic() + 20
                while upstream.request_count == 0 and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.6))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            _, err = proc.communicate(timeout=60)
            sent = _sent_rows(upstream)
            # The guarantee: a row committed before this run started was never sent again.
            assert not committed & set(sent), f"completed rows sent again: {sorted(committed & set(sent))[:10]}"
            if journal_file.exists():
                committed = _final_rows(journal_file)
            if proc.returncode == 0:
                break
            assert proc.returncode == -signal.SIGKILL, err.decode()
            progress.append(len(committed))
            command = [*CLI, "batch", "resume", "crash", "--quiet"]
        print("rows final after each kill:", progress)
        assert kills >= 2, "the job finished before it could be killed often enough"
        assert len(committed) == ROWS

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(ROWS))
    assert all(r["answer"] == f"echo: Say: row {r['index']}" for r in records)
