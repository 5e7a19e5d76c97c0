"""A gateway shared by people who do not trust each other: a key sees, spends and slows only
its own. Files and batches belong to the key that made them (others get 404, an admin key
sees all); cancelling a batch and a flood of multipart parts do not stall the server; every
endpoint counts against a key's rpm; model lists show only what a key may call; the key
store keeps one connection; a damaged batch output is rewritten from the journal."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.waiting import BATCH_ENDS, batch_reaching
from tests.paths import ROOT

# The upstream answers each row this slowly: a batch of thousands of rows runs for seconds,
# with rows finishing (and the journal being written) all the time.
ROW_LATENCY = 0.02


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(latency=ROW_LATENCY) as fake:
        yield fake


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("keys") / "gateway.db")


def _config(upstream: OpenAIUpstream) -> dict[str, Any]:
    return {"aliases": {"cheap": "fake/gpt-fake-mini", "big": "fake/gpt-fake"},
            "providers": {"fake": {"base_url": upstream.base_url}}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: OpenAIUpstream, store: KeyStore) -> Iterator[GatewayThread]:
    settings = Settings(auth=True, log_calls=False, keys_path=str(store.path), max_tokens=64,
                        batch_dir=str(tmp_path_factory.mktemp("batches")))
    with GatewayThread(settings, config=_config(upstream)) as gw:
        yield gw


def _sdk(gw: GatewayThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


def _lines(n: int, model: str = "cheap") -> bytes:
    return b"".join(
        json.dumps({"custom_id": f"row-{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": f"Say {i}"}]}}).encode() + b"\n"
        for i in range(n)
    )


def _upload(sdk: openai.OpenAI, tmp_path: Path, n: int, name: str = "requests.jsonl") -> Any:
    source = tmp_path / name
    source.write_bytes(_lines(n))
    return sdk.files.create(file=source.open("rb"), purpose="batch")


def _wait(sdk: openai.OpenAI, batch_id: str, until: tuple[str, ...] = BATCH_ENDS, timeout: float = 60) -> Any:
    return batch_reaching(sdk, batch_id, until, timeout)


class HealthProbe:
    """GET /health every few milliseconds on a thread of its own, timing each answer."""

    def __init__(self, url: str) -> None:
        self.url = url + "/health"
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get(self.url).status_code == 200
                self.seconds.append(time.perf_counter() - started)
                time.sleep(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)

    def assert_responsive(self) -> None:
        assert len(self.seconds) >= 3, self.seconds
        # Generous bounds for a loaded 2-core machine; a blocked event loop takes seconds.
        assert statistics.median(self.seconds) < 0.1, sorted(self.seconds)[-5:]
        assert max(self.seconds) < 1.0, sorted(self.seconds)[-5:]


# -- 1. ownership -------------------------------------------------------------------------------


def test_files_and_batches_are_seen_only_by_their_key_and_admins(gateway: GatewayThread, store: KeyStore, tmp_path: Path) -> None:
    a, b = _sdk(gateway, store.create("tenant-a")), _sdk(gateway, store.create("tenant-b"))
    admin = _sdk(gateway, store.create("ops", admin=True))
    uploaded = _upload(a, tmp_path, 2)
    batch = _wait(a, a.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert batch.status == "completed" and batch.output_file_id

    for attempt in (
        lambda: b.files.retrieve(uploaded.id),
        lambda: b.files.content(uploaded.id),
        lambda: b.files.content(batch.output_file_id),
        lambda: b.files.delete(uploaded.id),
        lambda: b.batches.retrieve(batch.id),
        lambda: b.batches.cancel(batch.id),
        lambda: b.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert not {uploaded.id, batch.output_file_id} & {f.id for f in b.files.list()}
    assert batch.id not in [x.id for x in b.batches.list()]

    # The owner still has everything; an admin key sees every key's files and batches.
    assert {uploaded.id, batch.output_file_id} <= {f.id for f in a.files.list()}
    assert {uploaded.id, batch.output_file_id} <= {f.id for f in admin.files.list()}
    assert batch.id in [x.id for x in admin.batches.list()]
    assert admin.batches.retrieve(batch.id).id == batch.id
    assert admin.files.content(batch.output_file_id).text == a.files.content(batch.output_file_id).text
    assert a.files.delete(uploaded.id).deleted


def test_open_server_callers_without_a_key_share_one_owner_and_keys_keep_their_own(tmp_path: Path, upstream: OpenAIUpstream) -> None:
    store = KeyStore(tmp_path / "gateway.db")
    settings = Settings(log_calls=False, keys_path=str(store.path), batch_dir=str(tmp_path / "batches"))
    with GatewayThread(settings, config=_config(upstream)) as gw:
        key = store.create("keyed")  # made after the server started, with no key store then
        anon, other_anon, keyed = _sdk(gw, "-"), _sdk(gw, "sk-anything"), _sdk(gw, key)
        anonymous_file = _upload(anon, tmp_path, 1, "anon.jsonl")
        keyed_file = _upload(keyed, tmp_path, 1, "keyed.jsonl")
        assert other_anon.files.retrieve(anonymous_file.id).id == anonymous_file.id
        assert keyed_file.id not in {f.id for f in anon.files.list()}
        assert {f.id for f in keyed.files.list()} == {keyed_file.id}
        with pytest.raises(openai.NotFoundError):
            keyed.files.content(anonymous_file.id)


def test_stores_made_before_owners_and_admin_keys_are_migrated(tmp_path: Path) -> None:
    from modelport.batch.files_api import FilesAPI, Owner

    keys_db = tmp_path / "gateway.db"
    with sqlite3.connect(keys_db) as db:
        db.execute("CREATE TABLE gateway_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, salt BLOB NOT NULL, hash BLOB NOT NULL,"
                   " rpm INTEGER, tpm INTEGER, budget REAL, models TEXT, expires REAL, created REAL NOT NULL, revoked REAL,"
                   " requests INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,"
                   " cost REAL NOT NULL DEFAULT 0, last_used REAL)")
        db.execute("INSERT INTO gateway_keys (id, name, salt, hash, created) VALUES ('0123456789ab', 'old', x'00', x'00', 1)")
    store = KeyStore(keys_db)
    store.create("root", admin=True)
    assert {r.name: r.admin for r in store.records()} == {"old": False, "root": True}
    store.close()

    root = tmp_path / "batches"
    (root / "files").mkdir(parents=True)
    with sqlite3.connect(root / "files.db") as db:
        db.execute("CREATE TABLE files (id TEXT PRIMARY KEY, filename TEXT, bytes INTEGER, created_at INTEGER, purpose TEXT)")
        db.execute("CREATE TABLE batches (id TEXT PRIMARY KEY, created_at INTEGER, object BLOB)")
        db.execute("INSERT INTO files VALUES ('file-0a', 'old.jsonl', 3, 1, 'batch')")
    (root / "files" / "file-0a").write_bytes(b"{}\n")

    async def listings() -> tuple[list[str], list[str], list[str]]:
        api = FilesAPI(root)
        try:
            found = [[f["id"] for f in (await api.list_files(owner=owner))["data"]]
                     for owner in (Owner(), Owner("0123456789ab"), Owner("0123456789ab", admin=True))]
            return found[0], found[1], found[2]
        finally:
            await api.shutdown()

    import asyncio

    # Files from before owners were recorded belong to the anonymous owner (and admins).
    assert asyncio.run(listings()) == (["file-0a"], [], ["file-0a"])


def test_keys_cli_creates_and_shows_admin_keys(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from modelport.cli import main

    db = str(tmp_path / "k.db")
    runner = CliRunner()
    assert runner.invoke(main, ["keys", "create", "ops", "--admin", "--store", db]).exit_code == 0
    assert runner.invoke(main, ["keys", "create", "dev", "--store", db]).exit_code == 0
    listed = runner.invoke(main, ["keys", "usage", "--store", db])
    ops_line = next(line for line in listed.output.splitlines() if line.startswith("ops"))
    dev_line = next(line for line in listed.output.splitlines() if line.startswith("dev"))
    assert "admin" in ops_line and "admin" not in dev_line
    as_json = json.loads(runner.invoke(main, ["keys", "usage", "--json", "--store", db]).output)
    assert {k["name"]: k["admin"] for k in as_json} == {"ops": True, "dev": False}


# -- 2. cancelling a running batch ----------------------------------------------------------------

# Threads that opened a SQLite database, while a test watches (audit hooks cannot be removed).
_SQLITE_OPENERS: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "sqlite3.connect" and _SQLITE_OPENERS is not None:
        _SQLITE_OPENERS.append(threading.current_thread().name)


sys.addaudithook(_audit)



def test_cancelling_a_running_batch_answers_at_once_and_never_stalls_the_gateway(gateway: GatewayThread, store: KeyStore,
                                                                                  tmp_path: Path) -> None:
    global _SQLITE_OPENERS
    sdk = _sdk(gateway, store.create("canceller"))
    _SQLITE_OPENERS = []
    rows = 3000
    uploaded = _upload(sdk, tmp_path, rows)
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 30
    while sdk.batches.retrieve(batch.id).request_counts.completed < 50:  # rows are in flight, the journal is busy
        assert time.monotonic() < deadline, "the batch did not start"
        time.sleep(0.05)
    with HealthProbe(gateway.url) as probe:
        time.sleep(0.3)
        started = time.perf_counter()
        cancelling = sdk.with_options(timeout=10).batches.cancel(batch.id)
        cancel_seconds = time.perf_counter() - started
        time.sleep(0.5)
    assert cancelling.status in ("cancelling", "cancelled")
    assert cancel_seconds < 1.0
    probe.assert_responsive()
    done = _wait(sdk, batch.id, timeout=30)
    assert done.status == "cancelled"
    assert 0 < done.request_counts.completed < rows
    # What was answered before the stop is delivered, each row once.
    out = [json.loads(line)["custom_id"] for line in sdk.files.content(done.output_file_id).text.splitlines()]
    assert len(out) == len(set(out)) == done.request_counts.completed
    # The job's journal and the files database were opened, and never on the server's loop.
    openers, _SQLITE_OPENERS = _SQLITE_OPENERS, None
    assert openers and f"gateway-{gateway.port}" not in openers, openers


# -- 3. multipart floods and rpm on every endpoint --------------------------------------------------


def test_a_multipart_flood_is_refused_without_stalling_the_gateway(gateway: GatewayThread, store: KeyStore) -> None:
    key = store.create("flooder")
    boundary = "floodfloodflood"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n'.encode()
    body = part * 50_000 + f"--{boundary}--\r\n".encode()
    assert len(body) > 3 * 1024 * 1024
    answers: list[httpx.Response] = []

    def upload() -> None:
        answers.append(httpx.post(gateway.url + "/v1/files", content=body, timeout=60,
                                  headers={"authorization": f"Bearer {key}", "content-type": f"multipart/form-data; boundary={boundary}"}))

    with HealthProbe(gateway.url) as probe:
        time.sleep(0.1)
        sender = threading.Thread(target=upload)
        sender.start()
        sender.join(timeout=60)
        time.sleep(0.2)
    probe.assert_responsive()
    assert answers and answers[0].status_code == 400, answers
    error = answers[0].json()["error"]
    assert error["code"] == "too_many_parts" and "8 multipart parts" in error["message"]


def test_multipart_parser_limits_and_fields() -> None:
    from modelport.server.batches_http import parse_multipart
    from modelport.errors import BadRequestError

    ctype = "multipart/form-data; boundary=b0"
    good = (b'--b0\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a \\"q\\".jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
            b'{"x": 1}\r\n\r\n--b0--\r\n')
    assert parse_multipart(ctype, good) == {"purpose": (None, b"batch"), "file": ('a "q".jsonl', b'{"x": 1}\r\n')}
    for body, message in (
        (b"--b0\r\nX: " + b"y" * 9000 + b"\r\n\r\nz\r\n--b0--", "headers are missing or longer"),
        (b'--b0\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n' + b"p" * 70_000 + b"\r\n--b0--", "over 65536 bytes"),
        (b'--b0\r\nContent-Disposition: form-data; name="file"\r\n\r\nno end', "ends before its closing boundary"),
    ):
        with pytest.raises(BadRequestError, match=message):
            parse_multipart(ctype, body)
    with pytest.raises(BadRequestError, match="no boundary"):
        parse_multipart("multipart/form-data", good)


def test_rpm_counts_on_every_endpoint(gateway: GatewayThread, store: KeyStore) -> None:
    key = store.create("rpm-everywhere", rpm=5)
    headers = {"authorization": f"Bearer {key}"}
    count_tokens = {"model": "cheap", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=20) as client:
        answers = [
            client.get("/v1/files").status_code,
            client.get("/v1/batches").status_code,
            client.get("/v1/models").status_code,
            client.get("/v1/models/cheap").status_code,
            client.post("/v1/messages/count_tokens", json=count_tokens, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}).status_code,
        ]
        assert answers == [200] * 5
        refused = client.get("/v1/files")
        assert refused.status_code == 429 and float(refused.headers["retry-after"]) > 0
        assert client.post("/v1/files", content=b"", headers={"content-type": "multipart/form-data; boundary=x"}).status_code == 429


# -- 21. model lists ---------------------------------------------------------------------------


def test_a_restricted_key_lists_only_the_models_it_may_call(gateway: GatewayThread, store: KeyStore) -> None:
    key = store.create("cheap-only", models=["cheap"])
    unrestricted = store.create("everything")
    everything = {m.id for m in _sdk(gateway, unrestricted).models.list()}
    assert {"cheap", "big"} <= everything
    assert {m.id for m in _sdk(gateway, key).models.list()} == {"cheap"}
    with httpx.Client(base_url=gateway.url, timeout=20) as client:
        anthropic_list = client.get("/v1/models", headers={"x-api-key": key, "anthropic-version": "2023-06-01"}).json()
        assert [m["id"] for m in anthropic_list["data"]] == ["cheap"]
        gemini_list = client.get("/v1beta/models", headers={"x-goog-api-key": key}).json()
        assert [m["name"] for m in gemini_list["models"]] == ["models/cheap"]
        assert client.get("/v1/models/cheap", headers={"authorization": f"Bearer {key}"}).status_code == 200
        for path, headers in (("/v1/models/big", {"authorization": f"Bearer {key}"}),
                              ("/v1beta/models/big", {"x-goog-api-key": key})):
            assert client.get(path, headers=headers).status_code == 404
        # Not even the error of an unknown model names the models this key may not use.
        unknown = client.get("/v1/models/no-such-model", headers={"authorization": f"Bearer {key}"}).text
        assert "big" not in unknown and "gpt-fake" not in unknown
        assert client.get("/v1/models/big", headers={"authorization": f"Bearer {unrestricted}"}).status_code == 200


# -- 20. the key store's connection -------------------------------------------------------------


def _open_handles(path: Path) -> int:
    names = (str(path), f"{path}-wal", f"{path}-shm")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") in names:
                count += 1
        except OSError:
            continue
    return count


def test_key_store_keeps_one_connection_over_many_syncs(tmp_path: Path, upstream: OpenAIUpstream) -> None:
    path = tmp_path / "gateway.db"
    KeyStore(path).create("someone")
    gc.collect()  # that store's connection closes with it
    before = _open_handles(path)
    settings = Settings(auth=True, log_calls=False, keys_path=str(path), batch_dir=str(tmp_path / "batches"))
    with GatewayThread(settings, config=_config(upstream)) as gw:
        with httpx.Client(base_url=gw.url, timeout=20) as client:
            # A well-formed key the gateway does not know makes it read the store at once.
            for i in range(60):
                unknown = f"mpk_{i:012x}_{'s' * 30}"
                assert client.get("/v1/files", headers={"authorization": f"Bearer {unknown}"}).status_code == 401
        time.sleep(1.5)  # and the once-a-second sync runs too
        # One connection: the database, its WAL and its shared-memory index.
        assert _open_handles(path) - before <= 3
    gc.collect()
    assert _open_handles(path) == before


# -- 13. damaged batch output ----------------------------------------------------------------------


def _cli(tmp_path: Path, base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[providers.fake]\nbase_url = "{base_url}"\n')
    env = dict(os.environ, MODELPORT_CONFIG=str(config), MODELPORT_DATA_DIR=str(tmp_path / "data"),
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", "from modelport.cli import main; main()", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _output_indices(path: Path) -> list[int]:
    raw = path.read_bytes()
    assert b"\0" not in raw
    return [json.loads(line)["index"] for line in raw.decode().splitlines()]


def test_resume_after_an_output_truncated_mid_line_rewrites_it_from_the_journal(tmp_path: Path) -> None:
    rows = 30
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(rows)))
    out = tmp_path / "out.jsonl"
    with OpenAIUpstream() as fake:
        ran = _cli(tmp_path, fake.base_url, "batch", "run", str(source), "-m", "fake/gpt-fake", "--prompt", "Say: {text}",
                   "--output", str(out), "--job-id", "torn", "--quiet")
        assert ran.returncode == 0, ran.stderr
        whole = out.read_bytes()
        with out.open("r+b") as f:
            f.truncate(len(whole) // 2 + 3)  # mid-line
        resumed = _cli(tmp_path, fake.base_url, "batch", "resume", "torn", "--quiet")
        assert resumed.returncode == 0, resumed.stderr
    assert _output_indices(out) == list(range(rows))
    assert out.read_bytes() == whole


def test_output_truncated_during_a_run_is_whole_at_the_end(tmp_path: Path) -> None:
    import asyncio

    from modelport.batch import arun, open_job
    from modelport.batch.spec import JobSpec
    from modelport.client import AsyncClient

    rows = 40
    out = tmp_path / "out.jsonl"
    truncated: list[int] = []

    def truncate_once(records: list[dict[str, Any]]) -> None:
        if not truncated:
            size = out.stat().st_size
            with out.open("r+b") as f:
                f.truncate(size // 2 + 1)
            out.chmod(0o600)  # a private output (as the gateway's batches make) stays private when rewritten
            truncated.append(size)

    with OpenAIUpstream(latency=0.02) as fake:
        spec = JobSpec(job_id="cut", model="fake/gpt-fake", prompt="Say: {text}", input_format="rows", output=str(out),
                       output_format="jsonl", concurrency=2)
        journal, spec = open_job(tmp_path / "cut.db", spec)

        async def main() -> Any:
            client = AsyncClient(max_retries=0, config={"providers": {"fake": {"base_url": fake.base_url}}})
            try:
                return await arun(journal, spec, rows=[{"text": f"row {i}"} for i in range(rows)], client=client,
                                  on_records=truncate_once)
            finally:
                await client.aclose()

        try:
            stats = asyncio.run(main())
        finally:
            journal.close()
    assert truncated and stats.status == "completed"
    assert _output_indices(out) == list(range(rows))
    assert out.stat().st_mode & 0o777 == 0o600


def test_an_openai_format_output_is_the_same_when_remade_from_the_journal_later(tmp_path: Path) -> None:
    """Resume and the end-of-run check remake the output from the journal; an answer with no
    ``created`` of its own (the embedded engine's) must not get a new "now" each time."""
    import asyncio

    from modelport.batch import arun, open_job
    from modelport.batch.spec import JobSpec
    from modelport.batch.writers import output_intact

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": "local/smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}}) + "\n")
    out = tmp_path / "out.jsonl"
    spec = JobSpec(job_id="same", input=str(source), input_format="openai", output=str(out), output_format="openai")
    journal, spec = open_job(tmp_path / "same.db", spec)
    try:
        assert asyncio.run(arun(journal, spec)).status == "completed"
        time.sleep(1.1)  # the next second: a "now" filled in again would differ
        assert output_intact(journal, spec)
    finally:
        journal.close()
