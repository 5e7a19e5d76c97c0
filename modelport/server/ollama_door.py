"""The Ollama front door: ``/api/chat``, ``/api/generate``, ``/api/embed`` (and the older
``/api/embeddings``), the model listings (``/api/tags``, ``/api/show``, ``/api/ps``),
``/api/version`` and ``GET /`` ("Ollama is running"), so apps that speak only Ollama's
native API (the ``ollama`` libraries, Open WebUI, editor plugins) can use any backend.

Names: Ollama clients say ``llama3.2:latest``. A name routes as given (an alias, or
``provider/model`` directly), else without its ``:latest`` tag. Model management (pull,
push, create, copy, delete) cannot apply to a gateway whose models come from its config;
those answer with a clear error in Ollama's shape, except a pull of an installed embedded
model, which is already done.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from typing import Any

from ..errors import BadRequestError, NotFoundError
from ..types import ChatRequest, validate_request
from .app import Gateway, Handler, Request

# The Ollama release whose native API this door speaks; clients gate features on it.
OLLAMA_VERSION = "0.12.0"
# How long a used model shows in /api/ps: Ollama's default keep_alive.
KEEP_ALIVE_SECONDS = 300
_PS_SIZE = 32
_LATEST = ":latest"


class OllamaDoor:
    def __init__(self, gateway: Gateway, dialect: Any) -> None:
        self.gateway = gateway
        self.dialect = dialect
        self.name = dialect.__name__.rpartition(".")[2]
        # Routed models have no file here: "modified" is when this gateway started.
        self.started = dialect.now()
        # Model name -> when it last answered, for /api/ps; bounded, as callers pick names.
        self._used: OrderedDict[str, float] = OrderedDict()
        self._paths: dict[str, str] = {}

    def routes(self) -> dict[tuple[str, str], tuple[str, Any, Handler]]:
        door, dialect = self.name, self.dialect
        routes: dict[tuple[str, str], tuple[str, Any, Handler]] = {
            # Clients probe the root before anything else, without a key.
            ("GET", "/"): ("health", dialect, self.root),
            ("HEAD", "/"): ("health", dialect, self.root),
            ("POST", "/api/chat"): (door, dialect, self.chat),
            ("POST", "/api/generate"): (door, dialect, self.generate),
            ("POST", "/api/embed"): (door, dialect, self.embed),
            ("POST", "/api/embeddings"): (door, dialect, self.embeddings),
            ("GET", "/api/tags"): (door, dialect, self.tags),
            ("POST", "/api/show"): (door, dialect, self.show),
            ("GET", "/api/ps"): (door, dialect, self.ps),
            ("GET", "/api/version"): (door, dialect, self.version),
            ("POST", "/api/pull"): (door, dialect, self.pull),
        }
        for method, path in (("POST", "/api/push"), ("POST", "/api/create"), ("POST", "/api/copy"), ("DELETE", "/api/delete")):
            routes[(method, path)] = (door, dialect, self.unavailable)
        self._paths = {path: method for method, path in routes}
        return routes

    def pattern(self) -> tuple[str, re.Pattern[str], str, Any, Handler]:
        """Every other ``/api/`` path, so its 404 or 405 is in Ollama's shape too."""
        return ("*", re.compile(r"^/api/"), self.name, self.dialect, self.unknown)

    # -- names -----------------------------------------------------------------------------

    def _route_name(self, name: str) -> str:
        """The name as the gateway routes it: as given when it is an alias or names its
        provider (``ollama/llama3.2:latest``), else without ``:latest``. Decided without
        routing, so a miss costs no failed lookup on every call."""
        if name.endswith(_LATEST) and "/" not in name and name not in self.gateway.router.aliases:
            return name[: -len(_LATEST)]
        return name

    def _for_backend(self, request: ChatRequest, client_name: str) -> ChatRequest:
        """Route the request's name, and keep Ollama's own options (num_ctx, keep_alive...),
        which ride in ``extra``, only for backends that speak Ollama: any other would reject
        fields it does not know, and Ollama's OpenAI layer drops them the same way."""
        request.model = self._route_name(client_name)
        if request.extra and any(t.provider.dialect != self.name for t in self.gateway.router.targets(request.model)):
            request.extra = {}
        return request

    def _mark_used(self, model: str) -> None:
        self._used[model] = time.time()
        self._used.move_to_end(model)
        while len(self._used) > _PS_SIZE:
            self._used.popitem(last=False)

    # -- answers ---------------------------------------------------------------------------

    async def chat(self, req: Request, _: str) -> None:
        await self._answer(req, self.dialect.decode_request, generate=False)

    async def generate(self, req: Request, _: str) -> None:
        await self._answer(req, self.dialect.decode_generate_request, generate=True)

    async def _answer(self, req: Request, decoder: Any, generate: bool) -> None:
        gateway, dialect = self.gateway, self.dialect
        # Checked below: a request with nothing to answer is Ollama's way to load a model.
        request = await gateway.decode(req, decoder, await req.json(gateway.settings.max_body_bytes), check=False)
        client_name = request.model
        unload = request.extra.get("keep_alive") in (0, "0")
        request = self._for_backend(request, client_name)
        if not request.messages:
            # Nothing to answer: Ollama loads (or with keep_alive 0 unloads) the model.
            await gateway.admit_model(req, request.model)
            await gateway.respond(req, dialect.encode_load_response(client_name, generate, unload))
            return
        await gateway.decode(req, validate_request, request)
        if request.stream:
            encoder = dialect.GenerateStreamEncoder(client_name) if generate else dialect.StreamEncoder(client_name)
            await gateway.stream(req, request, encoder)
        else:
            response = await gateway.chat(req, request)
            # Ollama's total_duration is the whole request, as the caller saw it.
            response.latency = time.perf_counter() - req.started
            encode = dialect.encode_generate_response if generate else dialect.encode_response
            await gateway.respond(req, encode(response, client_name))
        self._mark_used(client_name)

    async def embed(self, req: Request, _: str) -> None:
        gateway, dialect = self.gateway, self.dialect
        model, inputs = await gateway.decode(req, dialect.decode_embed_request, await req.json(gateway.settings.max_body_bytes))
        response = await gateway.embed(req, self._route_name(model), inputs)
        self._mark_used(model)
        await gateway.respond(req, dialect.encode_embed_response(response, model, time.perf_counter() - req.started))

    async def embeddings(self, req: Request, _: str) -> None:
        gateway, dialect = self.gateway, self.dialect
        model, inputs = await gateway.decode(req, dialect.decode_embeddings_legacy_request, await req.json(gateway.settings.max_body_bytes))
        response = await gateway.embed(req, self._route_name(model), inputs)
        self._mark_used(model)
        await gateway.respond(req, dialect.encode_embeddings_legacy_response(response))

    # -- models ----------------------------------------------------------------------------

    async def _model_of(self, req: Request) -> str:
        """The model a management body names (``model``, or the older ``name``)."""
        body = await req.json(self.gateway.settings.max_body_bytes)
        model = (body.get("model") or body.get("name")) if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            raise BadRequestError("model: required (a model name, e.g. llama3.2)", param="model", code="missing_required_parameter")
        return model

    async def tags(self, req: Request, _: str) -> None:
        await self.gateway.respond(req, self.dialect.encode_tags(self.gateway.router.list_models(), self.started))

    async def show(self, req: Request, _: str) -> None:
        model = await self._model_of(req)
        routed = self._route_name(model)
        info = self.gateway.router.find_model(routed)
        if req.caller is not None:
            await self.gateway.admit_model(req, routed)
        info.id = model
        await self.gateway.respond(req, self.dialect.encode_show(info, self.started))

    async def ps(self, req: Request, _: str) -> None:
        now = time.time()
        models = []
        for name, used in list(self._used.items()):
            if now - used > KEEP_ALIVE_SECONDS:
                continue
            try:
                info = self.gateway.router.find_model(self._route_name(name))
            except NotFoundError:
                continue  # the config changed under it
            info.id = name
            models.append((info, self.dialect.now(used + KEEP_ALIVE_SECONDS)))
        await self.gateway.respond(req, self.dialect.encode_ps(models))

    async def version(self, req: Request, _: str) -> None:
        await self.gateway.respond(req, {"version": OLLAMA_VERSION})

    async def root(self, req: Request, _: str) -> None:
        await self.gateway.respond(req, b"Ollama is running", content_type=b"text/plain; charset=utf-8")

    async def pull(self, req: Request, _: str) -> None:
        """Only the embedded model, when installed, is "pulled": every other model is the
        config's to name, and nothing is downloaded through the gateway."""
        body_model = await self._model_of(req)
        target = await self.gateway.admit_model(req, self._route_name(body_model))
        if not await asyncio.to_thread(_installed, target):
            raise BadRequestError(
                f"pull is not available on this gateway: {body_model!r} is served by {target.provider.name}, not stored here",
                hint="the model can be used as it is; the embedded model is installed with `modelport pull`",
            )
        status = self.dialect.encode_status("success")
        await self.gateway.respond(req, status)

    async def unknown(self, req: Request, _: str) -> None:
        method = self._paths.get(req.path)
        if method is not None:
            raise BadRequestError(f"{req.method} is not allowed on {req.path}; use {method}", status=405, code="method_not_allowed")
        raise NotFoundError(f"no such endpoint: {req.method} {req.path}; this gateway serves {', '.join(sorted(self._paths))}", code="unknown_url")

    async def unavailable(self, req: Request, _: str) -> None:
        what = req.path.rpartition("/")[2]
        raise BadRequestError(
            f"{what} is not available on this gateway: its models come from its config, not from a model store",
            hint="GET /api/tags lists the models; add a name under [aliases] in the modelport config to offer another",
        )


def _installed(target: Any) -> bool:
    """Whether the target is the embedded model with its weights on disk (a file check)."""
    if target.provider.backend != "local":
        return False
    from ..local_model import MODEL_NAME, default_model_path

    return target.model_id == MODEL_NAME and default_model_path().is_file()
