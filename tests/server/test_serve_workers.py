"""``modelport serve --workers N``: real supervisor and worker processes on a free loopback
port, and the readiness registry behind ``/ready`` and ``/health``."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from modelport.errors import ConfigError
from modelport.server import Settings
from modelport.server.testing import GatewayThread
from modelport.server.workers import engine_threads, resolve_workers, usable_cpus, worker_settings
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.isolation import paths_under
from tests.waiting import wait_for
from tests.paths import ROOT



class Served:
    """``modelport serve --workers N --port 0`` in its own process group, with its own home."""

    def __init__(self, home: Path, workers: str = "2", config: str = "", *args: str) -> None:
        self.home = home
        config_file = home / "modelport.toml"
        config_file.write_text(config)
        self.env = {**os.environ, **paths_under(home)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelport", "serve", "--port", "0", "--workers", workers, "--config", str(config_file),
             "--graceful-timeout", "10", *args],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        line = self.proc.stdout.readline()  # printed once every worker serves
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"no banner: {line!r} {self.proc.stderr.read()}")
        self.port = int(match.group(1))

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on a new connection (so the kernel picks a worker each time)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, payload, {"content-type": "application/json", **(headers or {})})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        status, _, body = self.request("GET", "/health")
        assert status == 200
        return json.loads(body)

    def children(self) -> set[int]:
        return set(_children(self.proc.pid))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition: Any, seconds: float = 15.0) -> Any:
    return wait_for(condition, seconds, f"not so: {condition}")


@pytest.fixture()
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(latency=0.0) as fake:
        yield fake


def _config(upstream: OpenAIUpstream, extra: str = "") -> str:
    return f'[providers.fake]\nbase_url = "{upstream.base_url}"\napi_key = "sk-fake"\n{extra}'


CHAT = {"model": "fake/gpt-fake", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}


def test_two_workers_answer_on_one_port_with_every_worker_in_each_scrape(tmp_path: Path, upstream: OpenAIUpstream) -> None:
    served = Served(tmp_path, "2", _config(upstream))
    try:
        workers = served.children()
        assert len(workers) == 2
        seen = {}
        for _ in range(40):
            body = served.health()
            seen[body["worker"]] = body["pid"]
            if len(seen) == 2:
                break
        assert set(seen) == {0, 1} and set(seen.values()) == workers  # the kernel spreads new connections
        for _ in range(6):
            status, _, _ = served.request("POST", "/v1/chat/completions", CHAT)
            assert status == 200
        instance = f'instance="127.0.0.1:{served.port}"'

        def scrape() -> str | None:
            """A scrape that counts all 6 answers (the workers publish theirs every second)."""
            text = served.request("GET", "/metrics")[2].decode()
            answered = sum(int(m.group(1)) for m in re.finditer(
                rf'modelport_requests_total{{{instance},worker="[01]",door="openai",[^}}]*status="200"}} (\d+)', text))
            assert answered <= 6, text
            return text if answered == 6 else None

        text = _wait_for(scrape, 15)
        # One HELP/TYPE per family, whichever worker answered: a valid exposition.
        assert text.count("# TYPE modelport_requests_total counter") == 1
        assert text.count(f'modelport_requests_in_flight{{{instance},worker="') == 2
    finally:
        served.stop()
    assert served.proc.returncode == 0


def test_a_keys_rpm_is_exact_across_two_workers(tmp_path: Path, upstream: OpenAIUpstream) -> None:
    """Needs the shared counters (``sqlite:`` counters URL, which --workers picks by default)."""
    from modelport.server.auth import KeyStore

    keys_path = tmp_path / "keys.db"
    store = KeyStore(keys_path)
    secret = store.create("limited", rpm=5)
    ops = store.create("ops")
    store.close()
    served = Served(tmp_path, "2", _config(upstream, f'[server]\nkeys_path = "{keys_path}"\nauth = true\n'))
    try:
        statuses = []
        for _ in range(12):
            status, _, _ = served.request("POST", "/v1/chat/completions", CHAT, {"authorization": f"Bearer {secret}"})
            statuses.append(status)

        def answered_by() -> set[str]:
            _, _, text = served.request("GET", "/metrics", headers={"authorization": f"Bearer {ops}"})
            workers = set(re.findall(r'worker="(\d)",door="openai"', text.decode()))
            return workers if workers == {"0", "1"} else set()

        _wait_for(answered_by, 15)  # both workers took some of the requests
    finally:
        served.stop()
    assert statuses.count(200) == 5 and statuses.count(429) == 7, statuses
    assert upstream.request_count == 5


def test_sigterm_drains_an_inflight_stream_and_exits_0_leaving_no_process(tmp_path: Path) -> None:
    with OpenAIUpstream(latency=1.5) as slow:
        served = Served(tmp_path, "2", _config(slow))
        workers = served.children()
        result: dict[str, Any] = {}

        def call() -> None:
            result["answer"] = served.request("POST", "/v1/chat/completions", {**CHAT, "stream": True})

        caller = threading.Thread(target=call)
        caller.start()
        _wait_for(lambda: slow.request_count == 1)
        served.proc.send_signal(signal.SIGTERM)
        caller.join(30)
        served.proc.wait(30)
        status, _, body = result["answer"]
        assert status == 200 and body.rstrip().endswith(b"data: [DONE]")
        assert served.proc.returncode == 0, served.proc.stderr.read()
        assert not any(_alive(pid) for pid in workers)
        served.stop()


def test_a_killed_worker_is_replaced_and_workers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    served = Served(tmp_path, "2")
    try:
        first = served.children()
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        replaced = _wait_for(lambda: len(served.children() - first) == 1 and len(served.children()) == 2 and served.children())
        survivors = replaced - {victim}
        # The replacement serves: within a few tries a fresh connection reaches it.
        newcomer = (replaced - first).pop()
        _wait_for(lambda: served.health()["pid"] == newcomer)
        os.kill(served.proc.pid, signal.SIGKILL)
        served.proc.wait(10)
        _wait_for(lambda: not any(_alive(pid) for pid in survivors))
    finally:
        served.stop()


def test_workers_auto_is_one_per_usable_cpu(tmp_path: Path) -> None:
    assert resolve_workers("auto") == usable_cpus() <= len(os.sched_getaffinity(0))
    pinned = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                             "from modelport.server.workers import resolve_workers; print(resolve_workers('auto'))"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert pinned.stdout.strip() == "1", pinned.stderr
    assert resolve_workers("3") == 3 and resolve_workers(None) == 1
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ConfigError, match="--workers"):
            resolve_workers(bad)


def test_several_workers_share_counters_in_a_sqlite_file_unless_configured(tmp_path: Path) -> None:
    shared = worker_settings(Settings(), 2).counters
    assert shared == f"sqlite://{(Path(os.environ['MODELPORT_DATA_DIR']) / 'counters.db').resolve()}"
    assert worker_settings(Settings(), 1).counters is None
    assert worker_settings(Settings(counters="redis://127.0.0.1:6379/0"), 2).counters == "redis://127.0.0.1:6379/0"


def test_each_workers_engine_gets_its_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelport.backends.local import physical_cores

    assert engine_threads(1) is None
    assert engine_threads(2) == max(1, physical_cores() // 2)
    monkeypatch.setenv("MODELPORT_THREADS", "3")
    assert engine_threads(2) is None  # configured threads win


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "modelport", "serve", "--port", str(port), "--workers", "2"],
                                capture_output=True, text=True, cwd=ROOT, timeout=60, env={**os.environ})
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


# -- /ready and /health -------------------------------------------------------------------


def _get(url: str) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ready_names_the_dependency_that_is_down_and_health_stays_live() -> None:
    up = {"records": True, "counters": True}

    async def counters() -> bool:  # a check may answer a bool (the counters' healthy())
        return up["counters"]

    async def records() -> None:
        if not up["records"]:
            raise ConnectionError("connection refused")

    with GatewayThread() as gw:
        status, body = _get(gw.url + "/ready")
        assert status == 200 and body["status"] == "ready" and "down" not in body
        assert gw.app is not None
        gw.app.readiness.register("counters", counters)  # replaces the gateway's own check of that name
        gw.app.readiness.register("records", records)
        assert _get(gw.url + "/ready") == (200, {"status": "ready", "dependencies": {"counters": "ok", "records": "ok"}})
        up["records"] = False
        status, body = _get(gw.url + "/ready")
        assert status == 503 and body["down"] == ["records"]
        assert body["dependencies"] == {"counters": "ok", "records": "down: connection refused"}
        time.sleep(1.1)  # /health shows what the checks said at most a second ago
        status, body = _get(gw.url + "/health")
        assert status == 200 and body["status"] == "ok"
        assert body["dependencies"]["records"] == "down: connection refused"
        up["records"], up["counters"] = True, False
        status, body = _get(gw.url + "/ready")
        assert status == 503 and body["dependencies"] == {"counters": "down: not answering", "records": "ok"}
        up["counters"] = True
        assert _get(gw.url + "/ready")[0] == 200


def test_a_check_that_hangs_is_down_after_its_timeout() -> None:
    import asyncio

    from modelport.server.readiness import Readiness

    async def hangs() -> None:
        await asyncio.sleep(60)

    async def main() -> tuple[dict[str, str], float]:
        readiness = Readiness(timeout=0.2)
        readiness.register("records", hangs)
        started = time.monotonic()
        # Concurrent probes share one run of the checks.
        results = await asyncio.gather(*(readiness.status() for _ in range(5)))
        assert all(r == results[0] for r in results)
        return results[0], time.monotonic() - started

    status, seconds = asyncio.run(main())
    assert status == {"records": "down: no answer within 0.2 s"}
    assert seconds < 5


def test_single_process_metrics_carry_the_instance_label() -> None:
    with GatewayThread(Settings(instance="gw-a")) as gw:
        _get(gw.url + "/health")
        import urllib.request

        text = urllib.request.urlopen(gw.url + "/metrics", timeout=10).read().decode()
    assert 'modelport_requests_total{instance="gw-a",door="health"' in text
    assert 'modelport_requests_in_flight{instance="gw-a"}' in text


def test_one_process_serves_a_free_port_and_exits_0_after_sigterm(tmp_path: Path) -> None:
    """uvicorn re-raises the SIGTERM it drained for (exit status -15): ours exits 0."""
    served = Served(tmp_path, "1")
    assert served.health()["pid"] == served.proc.pid and served.children() == set()
    served.stop()
    assert served.proc.returncode == 0


def test_a_persisted_response_is_in_the_file_for_another_process(tmp_path: Path) -> None:
    """persist returns once committed, even behind a slow write: another worker's store reads it next."""
    import asyncio

    from modelport.server.responses_store import ResponseStore, Stored

    async def main() -> Any:
        writer, reader = ResponseStore(tmp_path / "responses.db"), ResponseStore(tmp_path / "responses.db")
        writer._io.submit(time.sleep, 0.3)  # the writer's thread is busy: the write waits behind it
        await writer.persist("", Stored({"id": "resp_1", "object": "response"}, []))
        found = await reader.get("", "resp_1")
        await writer.aclose()
        await reader.aclose()
        return found

    found = asyncio.run(main())
    assert found is not None and found.response["id"] == "resp_1"


def test_the_next_turn_finds_a_stored_response_on_either_worker(tmp_path: Path, upstream: OpenAIUpstream) -> None:
    served = Served(tmp_path, "2", _config(upstream))
    try:
        statuses = []
        for stream in (False, True) * 12:
            status, _, body = served.request("POST", "/v1/responses", {"model": "fake/gpt-fake", "input": "hello", "stream": stream})
            assert status == 200
            first = json.loads(body) if not stream else json.loads(
                [line for line in body.decode().splitlines() if '"response.completed"' in line and line.startswith("data:")][0][5:])["response"]
            status, _, _ = served.request("POST", "/v1/responses", {"model": "fake/gpt-fake", "input": "again", "previous_response_id": first["id"]})
            statuses.append(status)
    finally:
        served.stop()
    assert statuses == [200] * 24


def test_health_answers_at_once_while_a_dependency_hangs() -> None:
    import asyncio

    async def hangs() -> None:
        await asyncio.sleep(60)

    with GatewayThread() as gw:
        assert gw.app is not None
        gw.app.readiness.timeout = 0.5
        gw.app.readiness.register("records", hangs)
        probes = []
        for _ in range(3):
            started = time.monotonic()
            status, body = _get(gw.url + "/health")
            probes.append(time.monotonic() - started)
            assert status == 200 and body["dependencies"]["records"] in ("not checked yet", "down: no answer within 0.5 s")
            time.sleep(1.05)  # the last results are stale again: each probe would wait for a new round
        assert statistics.median(probes) < 0.3, probes  # waiting on the hanging check holds a probe 0.5 s
        status, body = _get(gw.url + "/ready")
        assert status == 503 and body["dependencies"]["records"] == "down: no answer within 0.5 s"
        assert _get(gw.url + "/health")[1]["dependencies"]["records"] == "down: no answer within 0.5 s"


def test_state_urls_come_from_flags_too(tmp_path: Path) -> None:
    """`serve --counters URL` picks the counters store as `[state] counters` would; a URL
    nothing can live at is refused before anything starts, naming the schemes that work."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]  # nothing listens here once the socket closes
    served = Served(tmp_path, "1", "", "--counters", f"redis://:s3cret@127.0.0.1:{dead}/0")
    try:
        status, _, body = served.request("GET", "/ready")
        assert status == 503 and json.loads(body)["dependencies"]["counters"].startswith("down")
        assert b"s3cret" not in body
    finally:
        served.stop()
    result = subprocess.run([sys.executable, "-m", "modelport", "serve", "--port", "0", "--records", "mysql://db/x"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60, env={**os.environ, **paths_under(tmp_path)})
    assert result.returncode != 0 and "postgresql:" in result.stderr and "Traceback" not in result.stderr
