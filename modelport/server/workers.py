"""``modelport serve --workers N``: N gateway processes behind one port, kept by a supervisor.

How (and why this way):

* The parent (the supervisor) binds the port and never runs the gateway itself: it forks N
  workers, each running the whole gateway (uvicorn with our protocol class and settings)
  on a listening socket it inherits. Forking from a parent that built no Gateway, started
  no thread and opened no database gives every worker, and every restart, a clean start
  in milliseconds, with no import string or pickled settings (uvicorn's own supervisor
  needs an import string and would rebuild the settings from it).
* One listening socket per worker, all bound to the port with ``SO_REUSEPORT``: the kernel
  spreads new connections over them by a hash of their addresses. With one shared socket,
  the first worker to wake takes much of a burst of connections (the event loop accepts in
  a loop): of five bursts of 16 keep-alive connections, one shared socket split them 16:0,
  10:6, 10:6, 14:2, 4:12; SO_REUSEPORT 11:5, 4:12, 7:9, 8:8, 8:8. The parent keeps every socket open, so the connections
  waiting on a crashed worker's socket are served by its replacement instead of being reset.
  Where ``SO_REUSEPORT`` is missing, all workers share one socket.
* Workers die with the parent: each asks the kernel for SIGTERM when the parent dies
  (``PR_SET_PDEATHSIG``, even on SIGKILL of the parent) and then drains like on any SIGTERM.
* SIGTERM or SIGINT to the parent: it closes its copies of the sockets, forwards SIGTERM,
  and the workers finish their in-flight requests and streams (``graceful_timeout``) and
  exit 0; a worker still running ``graceful_timeout`` + 5 s later is killed.
* A worker that dies while serving is started again (with a growing pause if it keeps
  dying right after its start); one that fails before its first start stops the whole
  server with its error, as a single process would.

Shared state (see ``worker_settings``): with more than one worker and no ``[state]``, the
counters default to a SQLite file in the data dir, so every key's limits hold across the
workers; the records already live in SQLite files that every worker opens (WAL mode).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import uvicorn

from .settings import Settings, WorkerInfo

if TYPE_CHECKING:
    import asyncio

    from .metrics import Metrics

# Seconds a worker must have served before a crash counts as "while serving" (restarted at
# once) rather than "at start" (restarted after a pause that doubles each time, up to 5 s).
_STABLE_SECONDS = 10.0
_MAX_PAUSE = 5.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Worker:
    """What a worker process knows about itself: its index (0..count-1), how many run, and
    the directory where the workers leave their metrics for each other's ``/metrics``."""

    index: int
    count: int
    peers_dir: str
    restarted: bool = False  # a replacement for a worker that died


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask (taskset, cpusets), capped by a cgroup
    v2 CPU quota (a container's ``--cpus``), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def resolve_workers(value: str | int | None) -> int:
    """``--workers``: a whole number >= 1, or ``auto`` for one per usable CPU."""
    from ..errors import ConfigError

    if value is None:
        return 1
    if isinstance(value, str) and value.strip().lower() == "auto":
        return usable_cpus()
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or str(count) != str(value).strip():
        raise ConfigError(f"--workers must be a whole number of processes, at least 1, or auto (got {value!r})",
                          hint=f"e.g. --workers auto ({usable_cpus()} on this machine) or --workers 2")
    return count


def worker_settings(settings: Settings, count: int) -> Settings:
    """The settings every worker runs with: without a configured counters URL, several
    workers share their counters through a SQLite file in the data dir."""
    if count > 1 and settings.counters is None:
        from ..config import data_dir

        return replace(settings, counters=f"sqlite://{(data_dir() / 'counters.db').resolve()}")
    return settings


def engine_threads(count: int) -> int | None:
    """Decoding threads for each worker's embedded engine, unless configured: the workers
    together use the physical cores (each engine's threads spin at a barrier per token, so
    more threads than cores make them wait for each other). None: leave the default.

    Each worker loads its own engine (about 330 MB more per worker) rather than sharing one
    per machine, which would need a separate engine process and a hop to it. Measured on a
    busy 2-core machine (bench_workers.py --model local/smollm2, 32 tokens): one engine with
    2 threads served 0.05 requests/s at concurrency 1 (its threads waited on each other
    beside the other processes), two engines of 1 thread 0.85 (p50 1.13 s), one engine of
    1 thread 0.95 (p50 1.08 s): per-worker engines cost nothing in speed there."""
    from ..config import section

    if count < 2 or os.environ.get("MODELPORT_THREADS") or section("local").get("threads") is not None:
        return None
    from ..backends.local import physical_cores

    return max(1, physical_cores() // count)


def listen(settings: Settings, count: int) -> tuple[list[socket.socket], int]:
    """``count`` workers' listening sockets on ``settings``' host and port (0: a free one), and the port."""
    from ..errors import ConfigError

    try:
        return _listeners(settings.host, settings.port, count)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
                          hint="choose another --port or --host, or stop the process that uses it") from None


def _listeners(host: str, port: int, count: int) -> tuple[list[socket.socket], int]:
    """Listening sockets, one per worker where SO_REUSEPORT exists, and the port they share."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    reuse_port = count > 1 and hasattr(socket, "SO_REUSEPORT")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count if reuse_port else 1):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = sock.getsockname()  # port 0: the others join the port the first one got
            sock.listen(2048)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    port = sockets[0].getsockname()[1]  # the one asked for, or the free one port 0 found
    return [sockets[i % len(sockets)] for i in range(count)], port


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's SIGTERM still reaches us
        pass
    if os.getppid() != parent:  # the parent died before the request above
        os._exit(0)


@dataclass(slots=True)
class _Slot:
    index: int
    sock: socket.socket
    pid: int = 0
    ready_fd: int = -1  # read end of the pipe the worker writes one byte to once it serves
    ready: bool = False
    started: float = 0.0
    pauses: int = 0  # crashes in a row right after starting
    starts: int = 0
    restart_at: float | None = None


class Supervisor:
    """Runs ``count`` workers on one port until SIGTERM or SIGINT; ``run`` returns the exit code."""

    def __init__(self, settings: Settings, config_path: str | None, count: int) -> None:
        import tempfile

        self.count = count
        sockets, port = listen(settings, count)
        self.settings = replace(worker_settings(settings, count), port=port)
        self.config_path = config_path
        self.slots = [_Slot(i, sock) for i, sock in enumerate(sockets)]
        self.peers_dir = tempfile.mkdtemp(prefix="modelport-workers-")  # 0700
        self.threads = engine_threads(count)
        self.stopping = False
        self.stop_requested = False
        self.kill_at = 0.0
        self.failed: int | None = None  # exit code of a worker that could not start
        self.pid = os.getpid()
        self._wake = (-1, -1)  # the self-pipe that wakes the supervisor's select on a signal

    # -- parent ----------------------------------------------------------------------------

    def run(self, on_ready: Any = None) -> int:
        wake_r, wake_w = self._wake = os.pipe()
        os.set_blocking(wake_w, False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        old_wakeup = signal.set_wakeup_fd(wake_w)
        announced = False
        clean = True
        try:
            for slot in self.slots:
                self._start(slot)
            while True:
                fds = [wake_r] + [s.ready_fd for s in self.slots if s.ready_fd >= 0]
                try:
                    readable, _, _ = select.select(fds, [], [], 0.5)
                except InterruptedError:
                    readable = []
                if wake_r in readable:
                    os.read(wake_r, 512)
                for slot in self.slots:
                    if slot.ready_fd in readable:
                        self._read_ready(slot)
                clean &= self._reap()
                if not announced and all(s.ready for s in self.slots):
                    announced = True
                    if on_ready is not None:
                        on_ready(self)
                if (self.stop_requested or self.failed is not None) and not self.stopping:
                    self._begin_stop()
                if self.stopping:
                    live = [s for s in self.slots if s.pid]
                    if not live:
                        break
                    if time.monotonic() > self.kill_at:
                        for slot in live:
                            _kill(slot.pid, signal.SIGKILL)
                        clean = False
                else:
                    self._restart_due()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (wake_r, wake_w):
                os.close(fd)
            for slot in self.slots:
                slot.sock.close()
                if slot.pid:
                    _kill(slot.pid, signal.SIGKILL)
            import shutil

            shutil.rmtree(self.peers_dir, ignore_errors=True)
        if self.failed is not None:
            return self.failed
        return 0 if clean else 1

    def _on_signal(self, sig: int, frame: Any) -> None:
        if sig != signal.SIGCHLD:
            self.stop_requested = True

    def _begin_stop(self) -> None:
        self.stopping = True
        self.kill_at = time.monotonic() + self.settings.graceful_timeout + 5.0
        # New connections go nowhere once the workers close theirs too.
        for slot in self.slots:
            slot.sock.close()
        for slot in self.slots:
            if slot.pid:
                _kill(slot.pid, signal.SIGTERM)

    def _read_ready(self, slot: _Slot) -> None:
        try:
            data = os.read(slot.ready_fd, 1)
        except OSError:
            data = b""
        if data:
            slot.ready = True
            slot.started = time.monotonic()
        os.close(slot.ready_fd)
        slot.ready_fd = -1

    def _reap(self) -> bool:
        """Collect exited workers and plan their restarts; False if one ended badly while stopping."""
        clean = True
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return clean
            if pid == 0:
                return clean
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = 0
            code = os.waitstatus_to_exitcode(status)
            if slot.ready_fd >= 0:
                self._read_ready(slot)
            if self.stopping:
                clean &= code == 0
                continue
            if not slot.ready and slot.starts == 1 and self.failed is None:
                # Never served: a bad config, a busy database... every worker would fail alike.
                print(f"modelport: worker {slot.index} could not start (exit code {code})", file=sys.stderr, flush=True)
                self.failed = code if code > 0 else 1
                continue
            stable = slot.ready and time.monotonic() - slot.started >= _STABLE_SECONDS
            slot.pauses = 0 if stable else slot.pauses + 1
            pause = 0.0 if stable else min(_MAX_PAUSE, 0.1 * 2 ** slot.pauses)
            print(f"modelport: worker {slot.index} (pid {pid}) exited with {code}; restarting it"
                  + (f" in {pause:.1f} s" if pause else ""), file=sys.stderr, flush=True)
            slot.restart_at = time.monotonic() + pause

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and now >= slot.restart_at:
                slot.restart_at = None
                self._start(slot)

    def _start(self, slot: _Slot) -> None:
        ready_r, ready_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(ready_r)
                code = self._child(slot, ready_w)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(ready_w)
        slot.pid, slot.ready_fd, slot.ready = pid, ready_r, False
        slot.starts += 1

    # -- worker ----------------------------------------------------------------------------

    def _child(self, slot: _Slot, ready_w: int) -> int:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _die_with_parent(self.pid)
        for fd in self._wake:
            os.close(fd)
        # The parent's other sockets and pipes are not this worker's to hold open.
        for other in self.slots:
            if other.sock is not slot.sock:
                other.sock.close()
            if other.ready_fd >= 0 and other is not slot:
                os.close(other.ready_fd)
        if self.threads is not None:
            os.environ["MODELPORT_THREADS"] = str(self.threads)
        worker = Worker(slot.index, self.count, self.peers_dir, restarted=slot.starts > 0)
        return serve_worker(self.settings, self.config_path, slot.sock, worker, ready_w)


def serve_worker(settings: Settings, config_path: str | None, sock: socket.socket | None, worker: Worker | None,
                 ready_fd: int | None = None) -> int:
    """Run one gateway on ``sock`` (else bind ``settings``' host and port) until SIGTERM; 0 once drained."""
    from .protocol import uvicorn_config
    from .app import Gateway

    app = Gateway(settings, config=config_path, worker=worker)
    server = GatewayServer(uvicorn_config(app, settings), ready_fd=ready_fd)
    server.run(sockets=[sock] if sock is not None else None)
    return 0 if server.started else 3


class PeerMetrics:
    """The workers' metrics for each other: each one writes a snapshot of its own to
    ``peers_dir/<index>.json`` every second, and a scrape of any worker adds the others'
    (at most a second old). One scrape target per port, whichever worker answers it."""

    PERIOD = 1.0

    def __init__(self, worker: WorkerInfo, metrics: Metrics) -> None:
        self.worker = worker
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        import asyncio

        self._task = asyncio.get_running_loop().create_task(self._publish_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _publish_forever(self) -> None:
        import asyncio

        from ..jsonio import dumps

        while True:
            await asyncio.to_thread(self._write, dumps(self.metrics.snapshot()))
            await asyncio.sleep(self.PERIOD)

    def _write(self, payload: bytes) -> None:
        path = os.path.join(self.worker.peers_dir, f"{self.worker.index}.json")
        temporary = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(temporary, path)

    async def read(self) -> list[Any]:
        import asyncio

        return await asyncio.to_thread(self._read_others)

    def _read_others(self) -> list[Any]:
        from ..jsonio import loads
        from .metrics import Metrics

        peers = []
        for index in range(self.worker.count):
            if index == self.worker.index:
                continue
            try:
                with open(os.path.join(self.worker.peers_dir, f"{index}.json"), "rb") as f:
                    peers.append(Metrics.from_snapshot(loads(f.read())))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not written yet (starting), or the directory is gone (stopping)
        return peers


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


class GatewayServer(uvicorn.Server):
    """uvicorn's server, telling the supervisor (``ready_fd``) once it serves, and exiting
    0 after a drain: uvicorn re-raises the SIGTERM it drained for, so the process ended
    "killed by SIGTERM" even when every stream had finished cleanly."""

    def __init__(self, config: uvicorn.Config, ready_fd: int | None = None) -> None:
        super().__init__(config)
        self.ready_fd = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.ready_fd is not None:
            if self.started:
                os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)
            self.ready_fd = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()  # drained: this was the answer to the signal
