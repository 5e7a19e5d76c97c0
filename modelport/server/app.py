"""The gateway: a raw ASGI app that serves every door's routes over the one call pipeline.

No framework: a request costs one dict lookup to route (``routes``), one body read, one JSON
parse and one dialect translation each way. The doors (``modelport.doors`` plugins: the
OpenAI, Anthropic, Gemini, Responses and Ollama wire formats, Files/Batches, the console,
the system endpoints) declare their routes and use the ``Services`` this app offers; the
model calls go through ``CallPipeline``. Everything that could block (SQLite for keys and
usage, the call log) runs in a worker thread or a background writer, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from itertools import count
from typing import Any, TypeVar

from ..client import AsyncClient
from ..errors import ModelportError, NotFoundError, PermissionDeniedError, ServerError
from ..hooks import Hooks, configured_hooks
from ..state.counter_stores import open_counters
from ..types import ModelInfo
from .auth import Caller, KeyRing, KeyStore, printable
from .fair import FairExecutor
from .hops import next_hop
from .http import Receive, Request, Send
from .keysync import KeySync
from .metrics import Metrics
from .origins import OriginPolicy, Refusal, cors_headers
from .pipeline import CallPipeline
from .readiness import Readiness
from .router import Router, Target
from .routes import Route, RouteTable
from .services import Door
from .settings import Settings, WorkerInfo, instance_labels

log = logging.getLogger("modelport.server")
D = TypeVar("D")
T = TypeVar("T")

__all__ = ["Gateway", "Settings"]


class Gateway:
    """The ASGI application. ``config`` is a config dict or file path; ``api_keys`` are
    provider keys beyond the environment's and the keys file's. Retrying is the caller's
    SDK's job, so the gateway's own client never retries (fallbacks aside)."""

    def __init__(self, settings: Settings | None = None, *, config: Any = None, api_keys: dict[str, str] | None = None,
                 worker: WorkerInfo | None = None) -> None:
        self.settings = settings = settings or Settings()
        # Under `serve --workers N`: this process's Worker (index, count, peers_dir); see workers.py.
        self.worker = worker
        self.client = AsyncClient(config=config, api_keys=api_keys, max_retries=0, source="gateway")
        self.config: dict[str, Any] = self.client.config
        self.router = Router(self.client, api_keys)
        self.metrics = Metrics(self.router.metric_label, instance_labels(settings, worker))
        # The state layers register their dependencies' checks here (GET /ready, /health).
        self.readiness = Readiness()
        # Per-key windows and budgets ([state] counters); a booking is held no longer than a
        # request can last.
        self.counters = open_counters(settings.counters, hold_seconds=settings.request_timeout + 60)
        self.readiness.register("counters", self.counters.healthy)
        self.keys = KeyRing(KeyStore(settings.keys_path, url=settings.records), self.counters)
        self.key_sync = KeySync(self.keys, settings.keys_max_stale)
        self.readiness.register("records", self.keys.ping)
        self.auth_required = settings.auth_required
        from ..cache import cache_for
        from ..calllog import Retention, log_for

        self.call_log = log_for("gateway", settings.log_calls, self.config)
        if self.call_log is not None:
            # [log] max_age_days / max_mb: the log's writer prunes it every few minutes.
            self.call_log.retain(Retention.from_config(self.config))
        self.pipeline = CallPipeline(
            settings=settings, router=self.router, keys=self.keys, counters=self.counters, metrics=self.metrics,
            call_log=self.call_log,
            # The response cache ([cache] in the config): in the records database, so that every
            # instance sharing a PostgreSQL one shares it too.
            cache=cache_for(None, self.config, url=settings.records),
            hooks=Hooks(configured_hooks(self.config)), prices=self.client.prices)
        self.fair = FairExecutor()
        self.origins = OriginPolicy.build(settings.host, settings.allowed_origins, settings.allowed_hosts,
                                          keys_required=self.auth_required)
        self._ids = count(1)
        self._id_prefix = "req_" + os.urandom(4).hex()
        self.doors = _make_doors(self)
        self.routes = _compile(self.doors)

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            settings = self.settings
            await self._http(Request(scope, receive, send, f"{self._id_prefix}{next(self._ids):x}", settings.body_timeout, self.fair,
                                     settings.body_total_timeout))
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, req: Request) -> None:
        metrics = self.metrics
        metrics.in_flight += 1
        try:
            try:
                if req.method == "OPTIONS" and "origin" in req.headers:
                    await self._preflight(req)
                    return
                route, args = self.routes.find(req)
                req.door, req.dialect = route.door, route.dialect
                self._check_browser(req)
                with next_hop(req.headers):
                    if not route.public:
                        await self._authenticate(req)
                        if not route.runs_model:
                            await self.meter(req)
                    await route.handler(req, *args)
            except ModelportError as exc:
                await req.fail(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s unexpected error on %s %s", req.id, req.method, req.path)
                await req.fail(ServerError(f"internal error ({type(exc).__name__}); request id {req.id}"))
        finally:
            metrics.in_flight -= 1
            seconds = time.perf_counter() - req.started
            key = req.key_name
            metrics.request(req.door, req.model, key, req.status, seconds)
            if req.error_kind is not None:
                metrics.error(req.model, key, req.error_kind)
            if self.settings.access_log:
                log.info("%s %s %s %d model=%s key=%s %.1fms", req.id, req.method, req.path, req.status, req.model, printable(key),
                         seconds * 1000)

    def _check_browser(self, req: Request) -> None:
        """Refuse what a web page the user did not choose sends (see origins.py)."""
        try:
            origin = self.origins.check(req.method, req.headers)
        except Refusal as exc:
            raise PermissionDeniedError(str(exc), code="origin_not_allowed") from None
        if origin is not None:
            req.cors = cors_headers(origin)

    async def _preflight(self, req: Request) -> None:
        """A browser asks before a cross-origin call: yes for an allowed origin, else 403."""
        req.dialect = self.routes.dialect_for(req.path)
        self._check_browser(req)
        headers = self.origins.preflight_headers(req.headers.get("access-control-request-headers"))
        await req.respond(b"", 204, headers, content_type=b"text/plain")

    async def _authenticate(self, req: Request) -> None:
        key = req.presented_key()
        if key:
            key_id, caller = self.keys.lookup(key)
            if caller is None and key_id is not None:
                # Perhaps a key made since the last sync: read the store (unless a read that
                # began after this request arrived already did), then look again.
                await self.key_sync.sync(unless_since=req.started)
        if not self.auth_required:
            # Open server: a real gateway key still attributes usage and owns its files and
            # batches; SDK placeholders are ignored.
            if key and key.startswith("mpk_"):
                _, req.caller = self.keys.lookup(key)
            return
        self.key_sync.check_fresh(key)
        req.caller = self.keys.authenticate(key)

    # -- services for the doors ------------------------------------------------------------

    async def admit_model(self, req: Request, model: str) -> Target:
        """Route a model for a request that runs no model (token counting)."""
        target = self.router.targets(model)[0]
        req.model = model
        await self.meter(req)
        if req.caller is not None:
            self.keys.check_model(req.caller, model, target.name)
        return target

    async def meter(self, req: Request) -> None:
        """Book one request against the key's rpm, once, for an endpoint that runs no model
        (the pipeline books model calls itself, with tokens and cost). Zero tokens and zero
        cost leave the key's tpm and budget as they are."""
        if req.caller is not None and not req.metered:
            req.metered = True
            await self.counters.reserve(req.caller.record.id, req.caller.record.limits, 0, 0.0)

    def list_models(self, req: Request) -> list[ModelInfo]:
        """The gateway's models that this caller may call."""
        models = self.router.list_models()
        caller = req.caller
        if caller is None or not caller.record.models:
            return models
        return [info for info in models if self._may_call(caller, info.id)]

    def find_model(self, req: Request, model: str) -> ModelInfo:
        """One model's info; a model the caller may not call does not exist for it (404)."""
        req.model = model
        caller = req.caller
        restricted = caller is not None and bool(caller.record.models)
        info: ModelInfo | None
        try:
            info = self.router.find_model(model)
        except NotFoundError:
            if not restricted:
                raise
            info = None  # the router's answer lists every model, the ones this key may not use too
        if info is None or (caller is not None and not self._may_call(caller, model)):
            raise NotFoundError(f"model {model!r} is not available to this gateway key", code="model_not_found", param="model",
                                hint="GET /v1/models lists the models this key may use")
        return info

    def _may_call(self, caller: Caller, model: str) -> bool:
        try:
            target = self.router.targets(model)[0]
        except ModelportError:
            return caller.record.allows(model)
        return caller.record.allows(model, target.name)

    async def sync_keys(self, unless_since: float | None = None) -> None:
        await self.key_sync.sync(unless_since)

    def find_door(self, kind: type[D]) -> D:
        for door in self.doors:
            if isinstance(door, kind):
                return door
        raise LookupError(f"this gateway has no {kind.__name__}")

    # -- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        if self.auth_required or self.keys.store.exists():
            await self.key_sync.start()
        if self.auth_required and not len(self.keys):
            log.warning("authentication is on but no gateway key exists: create one with `modelport keys create NAME`")
        if not await self.counters.healthy():
            # Not fatal: keys without limits still work, and the store is tried again per request.
            log.warning("the counters store %s is not answering: requests under a key's limits get 503 until it does", self.counters.name)
        for door in self.doors:
            start = getattr(door, "startup", None)
            if start is not None:
                await start()

    async def shutdown(self) -> None:
        await self.key_sync.stop()
        for door in reversed(self.doors):
            close = getattr(door, "aclose", None)
            if close is not None:
                await close()
        await self.client.aclose()
        await self.counters.close()
        self.fair.close()
        loop = asyncio.get_running_loop()
        cache = self.pipeline.cache
        if cache is not None:
            await loop.run_in_executor(None, cache.close)
        if self.call_log is not None:
            await asyncio.to_thread(self.call_log.flush, 5.0)
        await self.keys.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _make_doors(gateway: Gateway) -> list[Door]:
    """Every door plugin (the built-in ones register the same way), made with the gateway's services."""
    from ..plugins import doors

    return [factory(gateway) for factory in doors().values()]


def _compile(doors: list[Door]) -> RouteTable:
    from ..dialects import openai

    routes: list[Route] = []
    prefixes = []
    for door in doors:
        routes.extend(door.routes())
        for prefix in getattr(door, "error_prefixes", ()):
            prefixes.append((prefix, door.dialect))  # type: ignore[attr-defined]
    return RouteTable.compile(routes, prefixes, openai)
