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
from typing import Any, Callable, Iterable

from ..dialects import ollama as dialect
from ..errors import BadRequestError, NotFoundError
from ..types import ChatRequest, validate_request
from .http import Request
from .router import Target
from .routes import Route
from .pipeline import listed
from .services import Services

# The Ollama release whose native API this door speaks; clients gate features on it.
OLLAMA_VERSION = "0.12.0"
# How long a used model shows in /api/ps: Ollama's default keep_alive.
KEEP_ALIVE_SECONDS = 300
_PS_SIZE = 32
_LATEST = ":latest"
_ROOT_FOR_BROWSERS = b"Ollama is running (a modelport gateway, answering for Ollama; its console is at /ui)"


class OllamaDoor:
    name = "ollama"

    def __init__(self, services: Services) -> None:
        self.services = services
        # Routed models have no file here: "modified" is when this gateway started.
        self.started = dialect.now()
        # (owner key, model name) -> when it last answered, for /api/ps; bounded, as callers pick names.
        self._used: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._paths: dict[str, str] = {}

    def routes(self) -> Iterable[Route]:
        door = self.name
        # Clients probe the root before anything else, without a key.
        yield Route("GET", "/", self.root, dialect, "health", public=True)
        yield Route("HEAD", "/", self.root, dialect, "health", public=True)
        served: list[tuple[str, str, Callable[..., Any], bool]] = [
            ("POST", "/api/chat", self.chat, True), ("POST", "/api/generate", self.generate, True),
            ("POST", "/api/embed", self.embed, True), ("POST", "/api/embeddings", self.embeddings, True),
            ("GET", "/api/tags", self.tags, False), ("POST", "/api/show", self.show, False), ("GET", "/api/ps", self.ps, False),
            ("GET", "/api/version", self.version, False), ("POST", "/api/pull", self.pull, False),
            ("POST", "/api/push", self.unavailable, False), ("POST", "/api/create", self.unavailable, False),
            ("POST", "/api/copy", self.unavailable, False), ("DELETE", "/api/delete", self.unavailable, False),
        ]
        self._paths = {path: method for method, path, _, _ in served}
        for method, path, handler, runs_model in served:
            yield Route(method, path, handler, dialect, door, runs_model=runs_model)
        # Every other /api/ path, so its 404 or 405 is in Ollama's shape too.
        yield Route("*", re.compile(r"^/api/"), self.unknown, dialect, door)

    # -- names -----------------------------------------------------------------------------

    def _route_name(self, name: str) -> str:
        """The name as the gateway routes it: as given when it is an alias or names its
        provider (``ollama/llama3.2:latest``), else without ``:latest``. Decided without
        routing, so a miss costs no failed lookup on every call."""
        if name.endswith(_LATEST) and "/" not in name and name not in self.services.router.aliases:
            return name[: -len(_LATEST)]
        return name

    def _for_backend(self, request: ChatRequest, client_name: str) -> ChatRequest:
        """Route the request's name, and keep Ollama's own options (num_ctx, keep_alive...),
        which ride in ``extra``, only for backends that speak Ollama: any other would reject
        fields it does not know, and Ollama's OpenAI layer drops them the same way."""
        request.model = self._route_name(client_name)
        if request.extra and any(t.provider.dialect != self.name for t in self.services.router.targets(request.model)):
            request.extra = {}
        return request

    def _mark_used(self, req: Request, model: str) -> None:
        used = (_owner(req), model)
        self._used[used] = time.time()
        self._used.move_to_end(used)
        while len(self._used) > _PS_SIZE:
            self._used.popitem(last=False)

    # -- answers ---------------------------------------------------------------------------

    async def chat(self, req: Request) -> None:
        await self._answer(req, dialect.decode_request, generate=False)

    async def generate(self, req: Request) -> None:
        await self._answer(req, dialect.decode_generate_request, generate=True)

    async def _answer(self, req: Request, decoder: Callable[..., ChatRequest], generate: bool) -> None:
        services, pipeline = self.services, self.services.pipeline
        body = await req.json(services.settings.max_body_bytes)
        pipeline.refuse_unaffordable(req, listed(body, "messages"))
        # Checked below: a request with nothing to answer is Ollama's way to load a model.
        request = await req.decode(decoder, body, check=False)
        client_name = request.model
        unload = request.extra.get("keep_alive") in (0, "0")
        request = self._for_backend(request, client_name)
        if not request.messages:
            # Nothing to answer: Ollama loads (or with keep_alive 0 unloads) the model.
            await services.admit_model(req, request.model)
            await req.respond(dialect.encode_load_response(client_name, generate, unload))
            return
        await req.decode(validate_request, request)
        if request.stream:
            encoder = dialect.GenerateStreamEncoder(client_name) if generate else dialect.StreamEncoder(client_name)
            await pipeline.stream(req, request, encoder)
        else:
            response = await pipeline.chat(req, request)
            # Ollama's total_duration is the whole request, as the caller saw it.
            response.latency = time.perf_counter() - req.started
            encode = dialect.encode_generate_response if generate else dialect.encode_response
            await req.respond(encode(response, client_name))
        self._mark_used(req, client_name)

    async def embed(self, req: Request) -> None:
        model, inputs = await req.decode(dialect.decode_embed_request, await req.json(self.services.settings.max_body_bytes))
        response = await self.services.pipeline.embed(req, self._route_name(model), inputs)
        self._mark_used(req, model)
        await req.respond(dialect.encode_embed_response(response, model, time.perf_counter() - req.started))

    async def embeddings(self, req: Request) -> None:
        body = await req.json(self.services.settings.max_body_bytes)
        model, inputs = await req.decode(dialect.decode_embeddings_legacy_request, body)
        response = await self.services.pipeline.embed(req, self._route_name(model), inputs)
        self._mark_used(req, model)
        await req.respond(dialect.encode_embeddings_legacy_response(response))

    # -- models ----------------------------------------------------------------------------

    async def _model_of(self, req: Request) -> str:
        """The model a management body names (``model``, or the older ``name``)."""
        body = await req.json(self.services.settings.max_body_bytes)
        model = (body.get("model") or body.get("name")) if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            raise BadRequestError("model: required (a model name, e.g. llama3.2)", param="model", code="missing_required_parameter")
        return model

    async def tags(self, req: Request) -> None:
        # Only what this caller's key may use, as on /v1/models.
        await req.respond(dialect.encode_tags(self.services.list_models(req), self.started))

    async def show(self, req: Request) -> None:
        model = await self._model_of(req)
        routed = self._route_name(model)
        info = self.services.find_model(req, routed)
        if req.caller is not None:
            await self.services.admit_model(req, routed)
        info.id = model
        await req.respond(dialect.encode_show(info, self.started))

    async def ps(self, req: Request) -> None:
        now, owner = time.time(), _owner(req)
        models = []
        for (used_by, name), used in list(self._used.items()):
            if now - used > KEEP_ALIVE_SECONDS or used_by != owner:
                continue  # what other keys ran is theirs to know
            try:
                info = self.services.router.find_model(self._route_name(name))
            except NotFoundError:
                continue  # the config changed under it
            info.id = name
            models.append((info, dialect.now(used + KEEP_ALIVE_SECONDS)))
        await req.respond(dialect.encode_ps(models))

    async def version(self, req: Request) -> None:
        await req.respond({"version": OLLAMA_VERSION})

    async def root(self, req: Request) -> None:
        """Ollama's liveness answer, word for word for programs: some compare the body with
        "Ollama is running" exactly. A person's browser (it asks for HTML) also learns what
        answers; the x-modelport header says it to everything else."""
        body = _ROOT_FOR_BROWSERS if "text/html" in req.headers.get("accept", "") else b"Ollama is running"
        await req.respond(body, content_type=b"text/plain; charset=utf-8")

    async def pull(self, req: Request) -> None:
        """Only the embedded model, when installed, is "pulled": every other model is the
        config's to name, and nothing is downloaded through the gateway."""
        body_model = await self._model_of(req)
        target = await self.services.admit_model(req, self._route_name(body_model))
        if not await asyncio.to_thread(_installed, target):
            raise BadRequestError(
                f"pull is not available on this gateway: {body_model!r} is served by {target.provider.name}, not stored here",
                hint="the model can be used as it is; the embedded model is installed with `modelport pull`",
            )
        await req.respond(dialect.encode_status("success"))

    async def unknown(self, req: Request) -> None:
        method = self._paths.get(req.path)
        if method is not None:
            raise BadRequestError(f"{req.method} is not allowed on {req.path}; use {method}", status=405, code="method_not_allowed")
        raise NotFoundError(f"no such endpoint: {req.method} {req.path}; this gateway serves {', '.join(sorted(self._paths))}", code="unknown_url")

    async def unavailable(self, req: Request) -> None:
        what = req.path.rpartition("/")[2]
        raise BadRequestError(
            f"{what} is not available on this gateway: its models come from its config, not from a model store",
            hint="GET /api/tags lists the models; add a name under [aliases] in the modelport config to offer another",
        )


def _owner(req: Request) -> str:
    return req.caller.record.id if req.caller is not None else ""


def _installed(target: Target) -> bool:
    """Whether the target is the embedded model with its weights on disk (a file check)."""
    if target.provider.backend != "local":
        return False
    from ..local_model import MODEL_NAME, default_model_path

    return target.model_id == MODEL_NAME and default_model_path().is_file()
