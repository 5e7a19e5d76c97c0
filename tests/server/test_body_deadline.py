"""A body that trickles in (a byte now and then, never idle long enough for body_timeout)
cannot hold a connection forever: the whole body has a deadline too, a 408 in the
caller's dialect."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

from modelport.server import Settings
from modelport.server.testing import GatewayThread


def test_a_trickled_body_gets_408_at_the_total_deadline(tmp_path: Path) -> None:
    settings = Settings(log_calls=False, keys_path=str(tmp_path / "g.db"), body_timeout=1.0, body_total_timeout=2.0)
    with GatewayThread(settings) as gw:
        sock = socket.create_connection(("127.0.0.1", gw.port))
        try:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                         b"content-length: 1000\r\n\r\n{")
            started = time.monotonic()
            answer = b""
            # One byte every 0.3 s: never idle for body_timeout (1 s).
            while time.monotonic() - started < 15:
                if select.select([sock], [], [], 0.3)[0]:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
                    continue
                try:
                    sock.sendall(b" ")
                except (BrokenPipeError, ConnectionResetError):
                    break
            seconds = time.monotonic() - started
        finally:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b'"code":"request_timeout"' in answer and b"did not arrive whole within this gateway's limit of 2 s" in answer
    assert b"connection: close" in answer.lower()
    assert 1.5 < seconds < 6, seconds
