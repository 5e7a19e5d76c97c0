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
from tests.paths import ROOT

ROWS = 600
KILLS = 4
CLI = [sys.executable, "-c", "from modelport.cli import main; main()"]


def _env(tmp_path: Path, base_url: str) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[providers.fake]\nbase_url = "{base_url}"\n')
    env = dict(os.environ)
    env.update(MODELPORT_CONFIG=str(config), MODELPORT_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    return env


def _final_rows(journal_file: Path) -> set[int]:
    journal = Journal(journal_file)
    try:
        cur = journal.db.execute("SELECT idx FROM journal_rows WHERE state IN (?, ?)", (DONE, FAILED)).fetchall()
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
        command = [*CLI, "batch", "run", str(source), "-m", "fake/gpt-fake", "--prompt", "Say: {text}", "--output", str(out),
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


def _status(env: dict[str, str], job: str) -> dict:
    result = subprocess.run([*CLI, "batch", "status", job, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _wait_for_requests(upstream: OpenAIUpstream, proc: subprocess.Popen, count: int) -> None:
    deadline = time.monotonic() + 30
    while upstream.request_count < count and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None and upstream.request_count >= count, "the job never had rows in flight"


@pytest.mark.timeout(120)
def test_sigterm_journals_the_rows_in_flight_marks_the_job_interrupted_and_resume_finishes_it_once(tmp_path: Path) -> None:
    rows = 40
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(rows)))
    out = tmp_path / "out.jsonl"
    # Slow answers: when the signal comes, a full window of rows is waiting for the upstream.
    with OpenAIUpstream(latency=1.5) as upstream:
        env = _env(tmp_path, upstream.base_url)
        proc = subprocess.Popen([*CLI, "batch", "run", str(source), "-m", "fake/gpt-fake", "--prompt", "Say: {text}", "--output", str(out),
                                 "--concurrency", "8", "--job-id", "term", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        _wait_for_requests(upstream, proc, 8)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err.decode()
        sent_before = sorted(_sent_rows(upstream))

        info = _status(env, "term")
        assert info["status"] == "interrupted"
        assert info["inflight"] == 0
        # Every row sent before the signal was answered within the grace and journaled.
        assert info["done"] == len(sent_before) >= 8
        assert info["done"] < rows

        upstream.clear()
        resumed = subprocess.run([*CLI, "batch", "resume", "term", "--json", "--quiet"], env=env, capture_output=True, text=True,
                                 timeout=90)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["status"] == "completed"
        sent_after = sorted(_sent_rows(upstream))
    assert sorted(sent_before + sent_after) == list(range(rows)), "each row is sent exactly once"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(rows))


@pytest.mark.timeout(120)
def test_a_job_left_running_by_a_killed_process_shows_as_interrupted(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(20)))
    with OpenAIUpstream(latency=2.0) as upstream:
        env = _env(tmp_path, upstream.base_url)
        proc = subprocess.Popen([*CLI, "batch", "run", str(source), "-m", "fake/gpt-fake", "--prompt", "Say: {text}",
                                 "--concurrency", "4", "--job-id", "killed", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            _wait_for_requests(upstream, proc, 4)
            assert _status(env, "killed")["status"] == "running"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert _status(env, "killed")["status"] == "interrupted"
