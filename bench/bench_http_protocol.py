"""What the bounded HTTP protocol (server/protocol.py: header size cap and header deadline)
costs per request, against uvicorn's stock httptools protocol, on the same gateway.

    python bench/bench_http_protocol.py [--requests 5000] [--rounds 5]

Each server runs in a thread of this process on loopback; the client is a raw keep-alive
socket sending ``GET /health`` one at a time, so the numbers are round trips dominated by
the server's per-request work. Rounds alternate between the two protocols; medians printed.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from dataclasses import replace

import uvicorn

from modelport.server import Settings
from modelport.server.protocol import uvicorn_config
from modelport.server.app import Gateway

REQUEST = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nuser-agent: bench\r\naccept: */*\r\n\r\n"


def serve(stock: bool, settings: Settings) -> tuple[uvicorn.Server, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(Gateway(settings), replace(settings, port=port))
    if stock:
        config.http = "httptools"
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, port


def round_trips(port: int, n: int) -> float:
    """Microseconds per request, over ``n`` sequential keep-alive requests."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        for _ in range(n):
            sock.sendall(REQUEST)
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                data += sock.recv(65536)
        return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings(log_calls=False, keys_path=tempfile.mkdtemp() + "/g.db")
    servers = {"stock httptools": serve(True, settings), "bounded (modelport)": serve(False, settings)}
    results: dict[str, list[float]] = {name: [] for name in servers}
    for name, (_, port) in servers.items():
        round_trips(port, 200)  # warm up
    for _ in range(args.rounds):
        for name, (_, port) in servers.items():
            results[name].append(round_trips(port, args.requests))
    for name, values in results.items():
        print(f"{name:22s} median {statistics.median(values):7.1f} µs/request  (rounds: {', '.join(f'{v:.1f}' for v in values)})")
    for server, _ in servers.values():
        server.should_exit = True


if __name__ == "__main__":
    main()
