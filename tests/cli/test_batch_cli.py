"""`modelport batch run` as a new user meets it: a typo in the template, a job in which every
row fails, `-o` where a file was meant, a missing key. Each is said before anything is sent,
or in the summary and the exit status, not only inside the output file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_upstream import OpenAIUpstream, openai_error

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def upstream():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture()
def work(tmp_path: Path, upstream: OpenAIUpstream) -> Path:
    (tmp_path / "reviews.csv").write_text("id,text\n1,I loved it\n2,Terrible service\n3,It was fine\n")
    (tmp_path / "config.toml").write_text(f'[providers.fake]\nbase_url = "{upstream.base_url}"\n')
    return tmp_path


def cli(work: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    environ.update(MODELPORT_CONFIG=str(work / "config.toml"), MODELPORT_DATA_DIR=str(work / "data"),
                   MODELPORT_LOG_PATH=str(work / "log.db"), PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "modelport", *args], env=environ, cwd=work, capture_output=True,
                          text=True, timeout=60)


def jobs(work: Path) -> list[Path]:
    return list((work / "data" / "batch").glob("*.db")) if (work / "data" / "batch").exists() else []


def test_a_template_typo_exits_non_zero_before_anything_is_sent_and_names_the_columns(work, upstream):
    result = cli(work, "batch", "run", "reviews.csv", "-m", "fake/gpt-fake", "--prompt", "Sentiment of: {txt}")
    assert result.returncode == 1, result.stderr
    assert "--prompt uses {txt}, but the columns are id, text" in result.stderr
    assert "did you mean {text}?" in result.stderr
    assert not upstream.requests and not jobs(work)


def test_a_csv_without_prompt_says_which_columns_there_are(work, upstream):
    result = cli(work, "batch", "run", "reviews.csv", "-m", "fake/gpt-fake")
    assert result.returncode == 1
    assert "no --prompt" in result.stderr and "id, text" in result.stderr
    assert not upstream.requests and not jobs(work)


def test_a_dry_run_with_a_template_typo_says_why(work):
    result = cli(work, "batch", "run", "reviews.csv", "-m", "fake/gpt-fake", "--prompt", "{txt}", "--dry-run")
    assert result.returncode == 1 and "--prompt uses {txt}" in result.stderr


def test_a_job_in_which_every_row_fails_is_failed_exits_1_and_says_why(work, upstream):
    upstream.inject(openai_error(400, "model gpt-fake does not take this", "invalid_request_error"), times=3)
    result = cli(work, "batch", "run", "reviews.csv", "-m", "fake/gpt-fake", "--prompt", "{text}", "--job-id", "allbad",
                 "--quiet")
    assert result.returncode == 1, result.stderr
    assert "3 of 3 failed rows: model gpt-fake does not take this" in result.stderr
    assert "every row failed" in result.stderr
    listed = cli(work, "batch", "list", "--json")
    [job] = json.loads(listed.stdout)
    assert job["status"] == "failed" and job["common_error"]["message"] == "model gpt-fake does not take this"
    as_json = cli(work, "batch", "run", "reviews.csv", "-m", "fake/gpt-fake", "--prompt", "{text}", "--json",
                  "--job-id", "allbad2")
    assert as_json.returncode == 0  # the fake answers now: a good job exits 0
    assert json.loads(as_json.stdout)["status"] == "completed"


def test_dash_o_is_a_request_option_in_batch_run_as_in_ask(work, upstream):
    result = cli(work, "batch", "run", "reviews.csv", "-m", "fake/gpt-fake", "--prompt", "{text}", "-o", "max_tokens=5",
                 "--quiet")
    assert result.returncode == 0, result.stderr
    assert {r.body["max_tokens"] for r in upstream.requests} == {5}
    assert not (work / "max_tokens=5").exists()
    assert (work / "reviews.results.csv").exists()


def test_an_option_given_where_the_output_file_belongs_is_refused(work, upstream):
    result = cli(work, "batch", "run", "reviews.csv", "-m", "fake/gpt-fake", "--prompt", "{text}", "--output", "max_tokens=5")
    assert result.returncode == 2
    assert "looks like a request option" in result.stderr and "-o max_tokens=5" in result.stderr
    assert not (work / "max_tokens=5").exists() and not upstream.requests


def test_a_missing_key_is_said_once_before_the_job_exists(work, upstream):
    result = cli(work, "batch", "run", "reviews.csv", "-m", "openai/gpt-4o-mini", "--prompt", "{text}")
    assert result.returncode == 1
    assert result.stderr.count("no API key for openai") == 1
    assert not jobs(work)


def test_cancel_of_a_running_job_says_cancelling(work):
    from modelport.batch.journal import Journal

    (work / "data" / "batch").mkdir(parents=True)
    journal = Journal(work / "data" / "batch" / "busy.db")
    journal.claim()  # as the process running the job holds it
    journal.set("status", "running")
    try:
        result = cli(work, "batch", "cancel", "busy")
    finally:
        journal.release()
        journal.close()
    assert result.returncode == 0 and "cancelling" in result.stderr
