"""Many real gateways for the scale-out tests: N `modelport serve` processes sharing one
config (and, through its ``[state]`` table, one Redis and one PostgreSQL), a zero-latency
fake upstream with prices, and a bounded async load driver that spreads requests over them.

Everything a test starts here listens on 127.0.0.1 on free ports and is stopped by the
test (``with Cluster(...)``): SIGTERM first, SIGKILL of the whole process group after a
bound, so a hung or crashed gateway never outlives its test. The processes inherit the
test's isolated environment (tests/conftest.py), and the CLI commands a test runs
(``modelport keys create``) see the same config through ``MODELPORT_CONFIG``.

Instances backed by PostgreSQL records get a data dir each, as separate machines would:
then nothing they share goes through a local file by accident. Instances with SQLite
records (the one-machine layout) share the test's data dir.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import httpx

from tests.fakes.openai_upstream import Answer, OpenAIUpstream, _completion
from tests.fakes.server import Recorded, Reply
from tests.isolation import paths_under
from tests.servers import free_port

# Generous on a loaded 2-core machine: a gateway imports, opens its state and listens in ~2 s.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# USD per million tokens for every model of the fake provider: large, so that a few hundred
# small requests spend amounts well above the six decimals `keys usage --json` shows.
PRICES = {"input": 100.0, "output": 200.0}
PROVIDER = "fake"
# Aliases the tests call (no slash, so they fit every dialect's URL): ``exact`` answers with
# usage equal to what the gateway booked for it, ``echo`` with the fake's word counts.
MODELS = {"exact": f"{PROVIDER}/exact-model", "echo": f"{PROVIDER}/echo-model"}


class ClusterUpstream(OpenAIUpstream):
    """The OpenAI fake, plus models whose reported usage the test controls.

    A model named ``exact-...`` reports ``exact_prompt_tokens`` prompt tokens and exactly the
    request's ``max_tokens`` completion tokens: set ``exact_prompt_tokens`` to the gateway's
    bound on the prompt and each call settles at exactly what it booked, so a tpm limit admits
    exactly ``tpm // booked`` calls whatever the timing.
    """

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__(models=tuple(m.split("/", 1)[1] for m in MODELS.values()), latency=latency)
        self.exact_prompt_tokens = 0

    def _chat(self, request: Recorded) -> Reply:
        body = request.body
        if not (isinstance(body, dict) and str(body.get("model", "")).startswith("exact")) or body.get("stream"):
            return super()._chat(request)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 1
        answer = Answer(text="ok", prompt_tokens=self.exact_prompt_tokens, completion_tokens=int(max_tokens))
        return Reply.json(_completion(body, answer))


def cluster_config(upstream: ClusterUpstream, *, counters: str | None = None, records: str | None = None, auth: bool = True,
                   server: dict[str, Any] | None = None) -> str:
    """The TOML every instance (and every CLI command of the test) reads."""
    lines = ["[server]", f"auth = {'true' if auth else 'false'}", "log_calls = false"]
    lines += [f"{name} = {json.dumps(value)}" for name, value in (server or {}).items()]
    state = {"counters": counters, "records": records}
    if any(state.values()):
        lines += ["", "[state]"] + [f'{part} = "{url}"' for part, url in state.items() if url]
    lines += ["", f"[providers.{PROVIDER}]", f'base_url = "{upstream.base_url}"', 'api_key = "fake-key"',
              "", "[prices]", f'"{PROVIDER}/*" = {{ input = {PRICES["input"]}, output = {PRICES["output"]} }}',
              "", "[aliases]"] + [f'{alias} = "{target}"' for alias, target in MODELS.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Instance:
    """One `modelport serve` process (or one supervisor of ``--workers`` processes)."""

    name: str
    port: int
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            # Its own process group: a stop or a kill reaches the workers of a supervisor too.
            self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, deadline: float) -> None:
        """Until ``/health`` answers and ``/ready`` (where the gateway has it) says ready."""
        with httpx.Client(timeout=2.0) as client:
            while True:
                if not self.running:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode if self.process else '?'}:\n{self.log_tail()}")
                try:
                    if client.get(self.url + "/health").status_code == 200 and client.get(self.url + "/ready").status_code in (200, 404):
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} was not ready within {START_TIMEOUT:.0f} s:\n{self.log_tail()}")
                time.sleep(0.1)

    def kill(self) -> None:
        """kill -9, the whole group: no drain, no goodbye (a crashed machine)."""
        if self.process is not None:
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM (a graceful drain), then SIGKILL of the group if it does not end in time."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # Whatever the leader did, nothing of its group may outlive the test (workers too).
        _signal_group(process, signal.SIGKILL)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Cluster:
    """``count`` gateway processes on free loopback ports, one config, one upstream.

    ``workers`` > 1 starts each instance as ``modelport serve --workers N`` (one port).
    ``separate_data`` (default: when records are in PostgreSQL) gives each instance its own
    data dir, log and cache, as on separate machines.
    """

    def __init__(self, root: Path, upstream: ClusterUpstream, count: int = 4, *, counters: str | None = None,
                 records: str | None = None, auth: bool = True, workers: int = 1, server: dict[str, Any] | None = None,
                 separate_data: bool | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.upstream = upstream
        self.workers = workers
        self.config_path = self.root / "modelport.toml"
        self.config_path.write_text(cluster_config(upstream, counters=counters, records=records, auth=auth, server=server), encoding="utf-8")
        # A home of its own (config dir, keys, data, log, cache), whatever the scope of the
        # fixture that made it: module-scoped clusters are set up before a test's own home.
        self.env = {**os.environ, **paths_under(self.root / "home"), "MODELPORT_CONFIG": str(self.config_path)}
        if separate_data is None:
            separate_data = bool(records) and not records.startswith("sqlite")
        self.instances = [self._instance(i, workers, separate_data) for i in range(count)]

    def _instance(self, index: int, workers: int, separate_data: bool) -> Instance:
        env = dict(self.env)
        if separate_data:
            env.update(paths_under(self.root / f"machine-{index}"))
        port = free_port()
        args = [sys.executable, "-m", "modelport", "serve", "--port", str(port), "--config", str(self.config_path)]
        if workers != 1:
            args += ["--workers", str(workers)]
        return Instance(f"gateway-{index}", port, args, env, self.root / f"gateway-{index}.log")

    @property
    def urls(self) -> list[str]:
        return [instance.url for instance in self.instances]

    def start(self) -> Cluster:
        try:
            for instance in self.instances:
                instance.start()
            deadline = time.monotonic() + START_TIMEOUT
            for instance in self.instances:
                instance.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for instance in self.instances:
            if instance.running:
                _signal_group(instance.process, signal.SIGTERM)  # type: ignore[arg-type]
        for instance in self.instances:
            instance.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the CLI, against the same config (and so the same shared records) -----------------

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        result = subprocess.run([sys.executable, "-m", "modelport", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"modelport {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def create_key(self, name: str, *, rpm: int | None = None, tpm: int | None = None, budget: float | None = None) -> str:
        args = ["keys", "create", name]
        for flag, value in (("--rpm", rpm), ("--tpm", tpm), ("--budget", budget)):
            if value is not None:
                args += [flag, str(value)]
        return self.cli(*args).strip().splitlines()[-1]

    def key_usage(self, name: str) -> dict[str, Any]:
        """The key's row of `modelport keys usage --json` (totals as every instance saved them)."""
        for row in json.loads(self.cli("keys", "usage", "--json", "--all")):
            if row["name"] == name:
                return row
        raise AssertionError(f"no gateway key named {name!r}")

    def wait_usage(self, name: str, requests: int, timeout: float = 15.0) -> dict[str, Any]:
        """The key's usage once every instance has saved its part (they save about once a second)."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.key_usage(name)
            if row["requests"] >= requests or time.monotonic() > deadline:
                return row
            time.sleep(0.5)


# -- requests in each dialect ----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request, in one dialect, to one instance."""

    dialect: str  # "openai", "anthropic" or "gemini"
    url: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    method: str = "POST"


def chat_call(dialect: str, url: str, key: str, model: str, text: str, max_tokens: int) -> Call:
    """A non-streamed chat call of one user message, in ``dialect``'s own shape and headers."""
    if dialect == "openai":
        return Call(dialect, url, "/v1/chat/completions", {"authorization": f"Bearer {key}"},
                    {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens})
    if dialect == "anthropic":
        return Call(dialect, url, "/v1/messages", {"x-api-key": key, "anthropic-version": "2023-06-01"},
                    {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens})
    if dialect == "gemini":
        return Call(dialect, url, f"/v1beta/models/{model}:generateContent", {"x-goog-api-key": key},
                    {"contents": [{"role": "user", "parts": [{"text": text}]}], "generationConfig": {"maxOutputTokens": max_tokens}})
    raise ValueError(f"no such dialect: {dialect}")


def spread(urls: Sequence[str], count: int, make: Any, dialects: Sequence[str] = ("openai",)) -> list[Call]:
    """``count`` calls, round-robin over the instances and the dialects: ``make(dialect, url, i)``."""
    return [make(dialects[i % len(dialects)], urls[i % len(urls)], i) for i in range(count)]


def error_kind(dialect: str, status: int, body: Any) -> str | None:
    """What an error answer says, read the way the caller's own SDK reads it; None when the
    body is not that dialect's error shape (a leak of another dialect's or a bare one)."""
    if not isinstance(body, dict):
        return None
    if dialect == "anthropic":
        error = body.get("error")
        return error.get("type") if body.get("type") == "error" and isinstance(error, dict) else None
    error = body.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    if dialect == "gemini":
        return error.get("status") if error.get("code") == status else None
    return error.get("code") or error.get("type")


# The kind each dialect gives a 429 for a rate limit, and a 503 for a lost dependency.
RATE_LIMITED = {"openai": "rate_limit_exceeded", "anthropic": "rate_limit_error", "gemini": "RESOURCE_EXHAUSTED"}
UNAVAILABLE = {"openai": {503}, "anthropic": {503, 529}, "gemini": {503}}


@dataclass
class Outcome:
    call: Call
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    body: Any
    started: float
    ended: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def kind(self) -> str | None:
        return None if self.ok else error_kind(self.call.dialect, self.status, self.body)


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes)

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    def by_url(self) -> Counter[str]:
        return Counter(o.call.url for o in self.outcomes if o.status)

    def summary(self) -> str:
        kinds = Counter((o.call.dialect, o.status, o.kind) for o in self.outcomes)
        sample = next((f"{o.status} {o.body or o.error}"[:300] for o in self.outcomes if not o.ok), "")
        return f"{dict(kinds)}; first failure: {sample}"


async def _send(client: httpx.AsyncClient, call: Call) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.request(call.method, call.url + call.path, headers=call.headers, json=call.body)
    except httpx.HTTPError as exc:
        return Outcome(call, 0, None, started, time.monotonic(), f"{type(exc).__name__}: {exc}")
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Outcome(call, response.status_code, body, started, time.monotonic())


async def drive(calls: Iterable[Call], concurrency: int = 400, timeout: float = 45.0, request_timeout: float = 30.0) -> Tally:
    """Send every call, at most ``concurrency`` at once, all within ``timeout`` seconds."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=request_timeout) as client:
        async def one(call: Call) -> Outcome:
            async with semaphore:
                return await _send(client, call)

        outcomes = await asyncio.wait_for(asyncio.gather(*(one(c) for c in calls)), timeout)
    return Tally(list(outcomes))


def load(calls: Iterable[Call], concurrency: int = 400, timeout: float = 45.0) -> Tally:
    """``drive`` from synchronous code."""
    return asyncio.run(drive(list(calls), concurrency, timeout))


class SteadyLoad:
    """Calls at a bounded concurrency until ``stop``, every outcome timestamped, so a test can
    tell what was answered while a dependency was down from what was answered after."""

    def __init__(self, make: Any, concurrency: int = 8, request_timeout: float = 10.0) -> None:
        self.make = make  # make(i) -> Call
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.tally = Tally()
        self._stop = asyncio.Event()

    async def run(self) -> Tally:
        counter = iter(range(10**9))
        async with httpx.AsyncClient(timeout=self.request_timeout,
                                     limits=httpx.Limits(max_connections=self.concurrency)) as client:
            async def worker() -> None:
                while not self._stop.is_set():
                    self.tally.outcomes.append(await _send(client, self.make(next(counter))))
                    await asyncio.sleep(0.01)  # a steady load, not a flood: the machine is shared

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return self.tally

    def stop(self) -> None:
        self._stop.set()


def served_requests(url: str, key: str, key_name: str) -> int:
    """Requests of a gateway key that the gateway at ``url`` answered, from its /metrics
    (read with ``key``: metrics need a key where keys are required)."""
    response = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {key}"}, timeout=10)
    response.raise_for_status()
    total = 0
    for line in response.text.splitlines():
        if line.startswith("modelport_requests_total{") and f'key="{key_name}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


# -- a load balancer in front: nginx, configured by the block docs/deploy.md shows -------------

DEPLOY_DOC = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"


def documented_nginx_block(doc: Path = DEPLOY_DOC) -> str:
    """The ```nginx block of docs/deploy.md, as operators copy it."""
    text = doc.read_text(encoding="utf-8")
    start = text.index("```nginx\n") + len("```nginx\n")
    return text[start:text.index("```", start)]


class Nginx:
    """nginx on a free loopback port in front of ``urls``, with the upstream and location of
    docs/deploy.md: only the addresses (and TLS, which a test does without) are replaced."""

    def __init__(self, root: Path, urls: Sequence[str]) -> None:
        from tests.servers import _binary

        self.binary = _binary("nginx", "nginx")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        block = documented_nginx_block()
        servers = [line for line in block.splitlines() if line.strip().startswith("server gw")]
        assert servers, "docs/deploy.md's nginx block lists no upstream servers"
        options = servers[0].split(":1234", 1)[1]  # what the doc sets per server (max_fails, ...)
        ours = "\n".join(f"    server {url.removeprefix('http://')}{options}" for url in urls)
        block = block.replace("\n".join(servers), ours)
        block = block.replace("listen 443 ssl;", f"listen 127.0.0.1:{self.port};")
        temp = " ".join(f"{kind}_temp_path {self.root / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.conf = self.root / "nginx.conf"
        self.conf.write_text(
            f"daemon off;\nmaster_process off;\npid {self.root / 'nginx.pid'};\nerror_log {self.root / 'error.log'} warn;\n"
            f"events {{ worker_connections 4096; }}\n"
            f"http {{\n access_log off;\n {temp}\n{block}\n}}\n", encoding="utf-8")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        self.process = subprocess.Popen([self.binary, "-p", str(self.root), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=open(self.root / "stderr.log", "wb"), start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.root / 'stderr.log').read_text()} {(self.root / 'error.log').read_text()}")
            try:
                httpx.get(self.url + "/health", timeout=1.0)
                return self
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not listen") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
