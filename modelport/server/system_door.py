"""The gateway's own endpoints: liveness (``/health``), readiness (``/ready``) and Prometheus
metrics (``/metrics``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

from ..dialects import openai as dialect
from .http import Request
from .routes import Route
from .services import Services

if TYPE_CHECKING:
    from .workers import PeerMetrics


class SystemDoor:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._peers: PeerMetrics | None = None

    def routes(self) -> Iterable[Route]:
        yield Route("GET", "/health", self.health, dialect, "health", public=True)
        yield Route("GET", "/ready", self.ready, dialect, "health", public=True)
        yield Route("GET", "/metrics", self.metrics, dialect, "metrics")

    async def startup(self) -> None:
        # A first round of checks (each bounded by the readiness timeout), so that /health
        # shows the stores' state from the first probe on, not "not checked yet" beside an
        # "ok" from /ready.
        await self.services.readiness.status()
        worker = self.services.worker
        if worker is not None:
            from .workers import PeerMetrics

            self._peers = PeerMetrics(worker, self.services.metrics)
            self._peers.start()

    async def aclose(self) -> None:
        if self._peers is not None:
            await self._peers.stop()

    async def health(self, req: Request) -> None:
        """Liveness: 200 at once while the process serves, whatever its dependencies say (their
        last known state; a check that hangs delays /ready, never this)."""
        services = self.services
        body: dict[str, Any] = {"status": "ok", "in_flight": services.metrics.in_flight, "pid": os.getpid()}
        if services.worker is not None:
            body["worker"] = services.worker.index
        dependencies = services.readiness.known(max_age=1.0)
        if dependencies:
            body["dependencies"] = dependencies
        await req.respond(body)

    async def ready(self, req: Request) -> None:
        """Readiness: 200 when every registered dependency answers, else 503 naming the ones down."""
        dependencies = await self.services.readiness.status()
        down = sorted(name for name, state in dependencies.items() if state != "ok")
        body: dict[str, Any] = {"status": "unavailable" if down else "ready", "dependencies": dependencies}
        if down:
            body["down"] = down
        await req.respond(body, 503 if down else 200)

    async def metrics(self, req: Request) -> None:
        peers = await self._peers.read() if self._peers is not None else ()
        await req.respond(self.services.metrics.render(peers), content_type=b"text/plain; version=0.0.4; charset=utf-8")
