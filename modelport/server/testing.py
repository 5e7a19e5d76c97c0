"""Run a gateway on a free loopback port in a background thread, for tests and benchmarks::

    with GatewayThread(config={"aliases": {"fast": "local/smollm2"}}) as gw:
        OpenAI(base_url=gw.url + "/v1", api_key="-").chat.completions.create(...)
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from typing import Any

from .app import Gateway
from .settings import Settings


class GatewayThread:
    def __init__(self, settings: Settings | None = None, *, config: Any = None, api_keys: dict[str, str] | None = None) -> None:
        self.settings = replace(settings or Settings(), host="127.0.0.1")
        self.config = config
        self.api_keys = api_keys
        self.app: Gateway | None = None
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayThread:
        import uvicorn

        from .protocol import uvicorn_config

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.settings = replace(self.settings, port=self.port)
        self.app = Gateway(self.settings, config=self.config, api_keys=self.api_keys)
        self._server = uvicorn.Server(uvicorn_config(self.app, self.settings))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name=f"gateway-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=self.settings.graceful_timeout + 10)
            self._server = None

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
