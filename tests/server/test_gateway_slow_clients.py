"""Request heads and bodies are bounded in size and time before any key is checked: a huge
header is refused with 431 without being buffered, a head that trickles in is cut off at
its deadline, and a body that stops arriving gets a 408."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from modelport.server import Settings
from modelport.server.testing import GatewayThread

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"


def settings(tmp_path: Path, **changes: float) -> Settings:
    return replace(Settings(log_calls=False, keys_path=str(tmp_path / "g.db")), **changes)


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


def send_big_header(port: int, size: int, sent: threading.Barrier | None = None) -> bytes:
    """Send a ``size``-byte header (never finished), then (after ``sent``) read the answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(HEAD + b"x-big: ")
        chunk = b"a" * 65536
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us: that is the point
        if sent is not None:
            sent.wait(120)
        return read_until_closed(sock, 30)[0]
    except (ConnectionResetError, BrokenPipeError):
        return b""
    finally:
        sock.close()


def test_a_one_mib_header_gets_431_at_once(tmp_path: Path) -> None:
    with GatewayThread(settings(tmp_path)) as gw:
        started = time.monotonic()
        answer = send_big_header(gw.port, 1024 * 1024)
        assert time.monotonic() - started < 10
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        if answer:
            assert b"request_header_fields_too_large" in answer
        # Headers up to the limit still pass.
        r = httpx.get(gw.url + "/health", headers={"x-fill": "a" * 60000}, timeout=30)
        assert r.status_code == 200


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`modelport serve --auth` in its own process, so its memory can be measured."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "modelport", "serve", "--port", str(port), "--auth", "--no-log"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the gateway's RSS from /proc")
def test_huge_unauthenticated_headers_are_not_buffered(served: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = served
    before = rss_kib(proc.pid)
    answers: list[bytes] = []
    # The connections stay open until every header is sent and the memory is measured.
    sent = threading.Barrier(5)
    senders = [threading.Thread(target=lambda: answers.append(send_big_header(port, 16 * 1024 * 1024, sent))) for _ in range(4)]
    for t in senders:
        t.start()
    sent.wait(120)
    time.sleep(0.5)  # what was sent has been read
    grown_mib = (rss_kib(proc.pid) - before) / 1024
    for t in senders:
        t.join(120)
    # Before the bound each connection held its whole 16 MiB header: 64 MiB and more.
    assert grown_mib < 24, f"RSS grew by {grown_mib:.0f} MiB"
    assert all(a == b"" or a.startswith(b"HTTP/1.1 431 ") for a in answers)
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200


def test_trickled_and_silent_heads_are_closed_at_the_deadline(tmp_path: Path) -> None:
    with GatewayThread(settings(tmp_path, header_timeout=1.0)) as gw:
        silent = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(20)]
        trickling = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(20)]
        for sock in trickling:
            sock.sendall(HEAD)
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.2):
                for sock in trickling:
                    try:
                        sock.sendall(b"x-slow: 1\r\n")
                    except OSError:
                        pass

        feeder = threading.Thread(target=trickle)
        feeder.start()
        try:
            results = [read_until_closed(sock, 20) for sock in trickling + silent]
        finally:
            stop.set()
            feeder.join()
            for sock in trickling + silent:
                sock.close()
        for answer, _ in results[:20]:
            assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in answer, answer[:200]
        assert all(answer == b"" for answer, _ in results[20:])
        # Every one closed near its 1 s deadline, not by the 20 s read limit.
        assert max(seconds for _, seconds in results) < 10
        # A keep-alive connection between requests is the keep-alive timeout's, not this one's.
        with httpx.Client(timeout=30) as client:
            assert client.get(gw.url + "/health").status_code == 200
            time.sleep(1.5)
            assert client.get(gw.url + "/health").status_code == 200


def test_a_body_that_stops_arriving_gets_408_in_the_callers_dialect(tmp_path: Path) -> None:
    with GatewayThread(settings(tmp_path, body_timeout=1.0)) as gw:
        sock = socket.create_connection(("127.0.0.1", gw.port))
        try:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"mo")
            answer, seconds = read_until_closed(sock, 20)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert b'"type":"error"' in answer and b"no part of the request body arrived for 1 s" in answer
        assert seconds < 10
