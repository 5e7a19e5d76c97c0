"""The embedded engine is this process's alone, and nobody can monopolise or abandon it.

* llama.cpp's own HTTP listener (xllamacpp always starts one) is unreachable: no TCP port,
  a Unix socket without a name, and a secret key;
* a schema whose grammar would stall every request on the engine gets a fast 400;
* a caller who hangs up (streamed or not) stops its generation at once, and a gateway with
  only abandoned work left stops at once, without a traceback;
* a gateway key that floods the engine cannot keep another key waiting for a slot;
* the decoding threads follow the CPUs the process may use, or MODELPORT_THREADS.

All on the real SmolLM2 engine and real gateways; bounds are generous (the host is shared).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from modelport import Client
from modelport.backends import current_caller
from modelport.backends.local import LocalBackend, default_threads, idle_share, physical_cores, threads_for
from modelport.errors import BadRequestError, ConfigError
from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.paths import ROOT
from tests.waiting import wait_for
from modelport.types import ChatRequest, Message

MODEL = "local/smollm2"
# SmolLM2 loops under greedy decoding, so this runs to max_tokens: minutes of work if nobody stops it.
LONG = {"model": MODEL, "messages": [{"role": "user", "content": "Count from 1 to 5000, one number per line."}],
        "max_tokens": 2000, "temperature": 0, "seed": 1}
BIG_ENUM = {"type": "object", "properties": {"city": {"enum": [f"city number {i}" for i in range(5000)]}}, "required": ["city"]}


@pytest.fixture(scope="module")
def engine():
    return LocalBackend().engine("smollm2")


def busy_slots(engine) -> int:
    """Requests the engine is decoding now, as it reports itself."""
    return int(float(re.search(r"^llamacpp:requests_processing (\S+)$", engine.handle_metrics(), re.M).group(1)))




# -- the engine's own listener ------------------------------------------------------------

LISTENER_PROBE = """
import json, os, sys
from modelport.backends.local import LocalBackend
engine = LocalBackend().engine("smollm2")
inodes = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith("socket:["):
        inodes.add(target[8:-1])
ports = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN, one of ours
            ports.append(int(fields[1].rsplit(":", 1)[1], 16))
print(json.dumps({"address": engine.listening_address, "ports": ports}), flush=True)
sys.stdin.read()  # stay up while the test knocks
"""


def test_the_engines_http_listener_is_unreachable_from_outside_the_process():
    """A process that loads the model has no TCP listener, and the engine's Unix socket has
    no name anyone could connect to; whatever the engine listens on refuses a request."""
    probe = subprocess.Popen([sys.executable, "-c", LISTENER_PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        seen = json.loads(probe.stdout.readline())
        refused = 0
        for port in seen["ports"]:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}, timeout=30)
            except httpx.TransportError:
                refused += 1
                continue
            assert r.status_code in (401, 403), f"port {port} answered {r.status_code} without a key"
            refused += 1
        assert seen["ports"] == [], f"the engine listens on TCP {seen['ports']}"
        address = seen["address"]
        assert address.startswith("unix://")
        with socket.socket(socket.AF_UNIX) as s, pytest.raises(OSError):
            s.connect(address.removeprefix("unix://"))
    finally:
        probe.stdin.close()
        probe.wait(timeout=60)


# -- grammar size ----------------------------------------------------------------------------


def test_an_enormous_enum_gets_a_fast_400_naming_the_limit():
    with GatewayThread() as gw:
        sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="-", max_retries=0, timeout=120)
        started = time.monotonic()
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Pick a city."}], max_tokens=20,
                response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": BIG_ENUM}},
            )
        elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "5000 enum" in message and "at most 256" in message, message
    assert elapsed < 10, f"{elapsed:.1f} s: the grammar reached the engine"
    with Client(log=False, cache=False) as client, pytest.raises(BadRequestError, match="at most 256"):
        client.chat(MODEL, "Pick a city.", response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": BIG_ENUM}}, max_tokens=20)


def test_tools_with_an_enormous_enum_are_refused_too():
    tool = {"type": "function", "function": {"name": "pick", "parameters": BIG_ENUM}}
    with Client(log=False, cache=False) as client, pytest.raises(BadRequestError, match="tools: .* enum/const values; the embedded model accepts at most 256"):
        client.chat(MODEL, "Pick a city.", tools=[tool], tool_choice="required", max_tokens=20)


# -- callers who leave -------------------------------------------------------------------------


def raw_post(port: int, body: dict) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
    return sock


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_caller_who_hangs_up_frees_the_engine_at_once(engine, stream):
    with GatewayThread() as gw:
        wait_for(lambda: busy_slots(engine) == 0, 120, "the engine still decodes an earlier test's request")
        sock = raw_post(gw.port, {**LONG, "stream": stream})
        try:
            wait_for(lambda: busy_slots(engine) >= 1, 120, "the generation never started")
            time.sleep(0.5)
        finally:
            sock.close()
        # The engine stops at its next token; 15 s allows for a very loaded host.
        wait_for(lambda: busy_slots(engine) == 0, 15, "the abandoned generation kept decoding")


def test_a_non_streamed_call_to_a_remote_upstream_is_cancelled_when_its_caller_hangs_up(tmp_path):
    """The gateway stops waiting for (and paying for) an answer nobody will read: the call
    ends as 499 at once, not as a 200 when the slow upstream answers."""
    with OpenAIUpstream(latency=8.0) as slow:
        config = {"aliases": {"remote": "openai/gpt-fake"}, "providers": {"openai": {"base_url": slow.base_url}}}
        settings = Settings(log_calls=False, keys_path=str(tmp_path / "g.db"))
        with GatewayThread(settings, config=config, api_keys={"openai": "sk-x"}) as gw:
            sock = raw_post(gw.port, {"model": "remote", "messages": [{"role": "user", "content": "x"}]})
            wait_for(lambda: len(slow.requests) == 1, 30, "the call never reached the upstream")
            sock.close()
            statuses = lambda: [label[3] for label in gw.app.metrics.requests if label[0] == "openai"]  # noqa: E731
            wait_for(lambda: statuses() != [], 6, "the call was not cancelled: it still waits for the upstream")
            assert statuses() == [499]


def test_sigterm_with_only_abandoned_work_exits_promptly_without_a_traceback(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "modelport", "serve", "--port", str(port), "--graceful-timeout", "60", "--no-log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        # One decoding thread: on a host whose cores other processes keep busy, a token with two
        # spinning threads can take a second, and a stop lands at the next token.
        env={**os.environ, "MODELPORT_THREADS": "1"},
    )
    try:
        wait_for(lambda: _health(port), 60, "the gateway did not start")
        # Load the model first, so the long requests below are decoding when their callers leave.
        assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={**LONG, "max_tokens": 1}, timeout=120).status_code == 200
        socks = [raw_post(port, {**LONG, "stream": stream}) for stream in (False, True, False, True)]
        time.sleep(2)
        for sock in socks:
            sock.close()
        time.sleep(1)
        server.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = server.communicate(timeout=90)
        elapsed = time.monotonic() - started
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr
    assert elapsed < 10, f"shutdown took {elapsed:.1f} s"


def _health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


# -- fair share ----------------------------------------------------------------------------------


def test_a_key_flooding_the_engine_cannot_keep_another_key_waiting(engine):
    """Key "a" asks for more long generations than the engine has slots; key "b"'s request
    still starts while every one of "a"'s is unfinished (before: it queued behind them)."""
    backend = LocalBackend()
    slots = 8  # LocalBackend's default, which loaded the shared engine
    long = ChatRequest(MODEL, [Message.user(LONG["messages"][0]["content"])], max_tokens=2000, temperature=0, seed=1)

    async def run() -> None:
        finished: list[str] = []

        async def generate(caller: str, first_token: asyncio.Event | None = None) -> None:
            current_caller.set(caller)
            async for event in backend.astream(long, "smollm2"):
                if event.kind == "text" and first_token is not None:
                    first_token.set()
            finished.append(caller)

        flood = [asyncio.create_task(generate("a")) for _ in range(slots + 2)]
        try:
            while busy_slots(engine) < slots - 1:
                await asyncio.sleep(0.2)
            b_started = asyncio.Event()
            b = asyncio.create_task(generate("b", b_started))
            await asyncio.wait_for(b_started.wait(), 180)
            assert finished == [], "key b got a slot only when key a's generations ended"
            b.cancel()
        finally:
            for task in flood:
                task.cancel()
            await asyncio.gather(*flood, return_exceptions=True)

    asyncio.run(asyncio.wait_for(run(), 400))
    wait_for(lambda: busy_slots(engine) == 0, 30, "a slot kept decoding after its callers left")


# -- threads -------------------------------------------------------------------------------------


def test_threads_default_to_the_physical_cores_the_process_may_use(monkeypatch):
    monkeypatch.delenv("MODELPORT_THREADS", raising=False)
    allowed = os.sched_getaffinity(0)
    assert 1 <= default_threads() <= physical_cores() <= len(allowed)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        assert physical_cores() == 1 and default_threads() == 1 and LocalBackend().n_threads == 1
    finally:
        os.sched_setaffinity(0, allowed)


def test_threads_leave_out_the_cores_other_processes_keep_busy():
    assert threads_for(2, 1.0) == 2
    assert threads_for(2, 0.5) == 1  # one busy process beside us on two cores
    assert threads_for(8, 0.6) == 5
    assert threads_for(4, 0.0) == 1  # never fewer than one


def test_a_busy_process_on_the_only_allowed_cpu_is_seen():
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    spinner = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    os.sched_setaffinity(0, {cpu})
    try:
        time.sleep(0.3)
        assert idle_share(0.3) < 0.5
    finally:
        os.sched_setaffinity(0, allowed)
        spinner.kill()
        spinner.wait()


def test_threads_follow_the_environment_then_the_config(monkeypatch, isolated_home):
    monkeypatch.delenv("MODELPORT_THREADS", raising=False)
    config = Path(os.environ["MODELPORT_CONFIG_DIR"]) / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[local]\nthreads = 3\n")
    from modelport.config import _load

    _load.cache_clear()
    try:
        assert LocalBackend().n_threads == 3
        monkeypatch.setenv("MODELPORT_THREADS", "5")
        assert default_threads() == 5
        monkeypatch.setenv("MODELPORT_THREADS", "many")
        with pytest.raises(ConfigError, match="MODELPORT_THREADS must be a whole number"):
            default_threads()
    finally:
        _load.cache_clear()
