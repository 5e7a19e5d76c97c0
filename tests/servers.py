"""Real Redis and PostgreSQL servers for the tests that need shared state.

Each server runs from the Debian packages (``redis-server``, ``postgresql``) on a free
loopback port, in a temporary directory, and is stopped by the fixture that started it.
When a package is missing and the tests run as root, it is installed with apt-get (as
`.ci/run` does on a fresh machine); otherwise the test fails with the command to run.
Tests can stop and restart a server (``stop()``/``start()``) to see the gateway fail closed.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

APT = "apt-get update && apt-get install -y --no-install-recommends {package}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _binary(name: str, package: str, *patterns: str) -> str:
    """The path of a server binary, installing its Debian package first if need be."""
    def find() -> str | None:
        found = shutil.which(name)
        for pattern in patterns:
            found = found or next(iter(sorted(glob.glob(pattern), reverse=True)), None)
        return found

    path = find()
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        result = subprocess.run(APT.format(package=package), shell=True, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            pytest.fail(f"{package} is missing and apt-get could not install it; run `{APT.format(package=package)}` as root.\n{result.stderr[-2000:]}")
        path = find()
    if path is None:
        pytest.fail(f"these tests need a real {name} ({package}); install it: `sudo {APT.format(package=package)}`")
    return path


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


class _Server:
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Stop the server now (its data stays, for ``start``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class RedisServer(_Server):
    """``redis-server`` on a free port, no persistence."""

    def __init__(self, root: Path) -> None:
        self.binary = _binary("redis-server", "redis-server")
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.root), "--logfile", str(self.root / "redis.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for_port(self.port, self.process, "redis-server")

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster on a free port, trusting loopback connections.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user
    the Debian package creates.
    """

    USER = "modelport"

    def __init__(self, root: Path) -> None:
        self.initdb = _binary("initdb", "postgresql", "/usr/lib/postgresql/*/bin/initdb")
        self.postgres = str(Path(self.initdb).with_name("postgres"))
        if not Path(self.postgres).exists():
            self.postgres = _binary("postgres", "postgresql", "/usr/lib/postgresql/*/bin/postgres")
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        # Run as that user directly (not through runuser), so that signals reach postgres.
        self.as_user: dict[str, str] = {}
        if os.geteuid() == 0:
            self.as_user = {"user": "postgres", "group": "postgres"}
            os.chmod(root, 0o755)
            shutil.chown(root, "postgres", "postgres")
        subprocess.run([self.initdb, "-D", str(self.data), "-U", self.USER, "-A", "trust", "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120, cwd=root, **self.as_user)

    def start(self) -> None:
        args = [self.postgres, "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.root),
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=300"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                        cwd=self.root, **self.as_user)
        _wait_for_port(self.port, self.process, "postgres")
        self._ready()

    def _ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, database: str) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url("postgres"), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="mp-redis-") as root:
        server = RedisServer(Path(root))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="mp-postgres-"))
    try:
        server = PostgresServer(root)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A running, empty Redis (restarted if a test stopped it)."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty PostgreSQL database (the server restarted if a test stopped it)."""
    if not postgres_server.running:
        postgres_server.start()
    return postgres_server.new_database()
