"""OpenAI's Files and Batches API on the gateway, run by the batch engine.

The HTTP handling is here; the files, batches and their jobs are ``batch.files_api``'s.
Every row of a batch goes through the gateway's call pipeline on behalf of the key that
made the batch: routed as a chat call is (aliases, the offered list, fallbacks, no local
file paths), logged in the call log with that key, and counted in its usage.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..dialects import openai as dialect
from ..errors import ModelportError, PermissionDeniedError
from ..jsonio import JSONDecodeError, loads
from ..providers import Provider
from ..types import ChatRequest, ChatResponse
from .auth import Caller
from .http import Request
from .pipeline import BatchRow
from .router import DEFAULT_NAME
from .routes import Route
from .services import Services

if TYPE_CHECKING:
    from ..batch.files_api import FilesAPI, Owner


class BatchesDoor:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._files_api: FilesAPI | None = None

    def routes(self) -> Iterable[Route]:
        for collection in ("/v1/files", "/v1/batches"):
            for method in ("GET", "POST"):
                yield Route(method, collection, self.handle, dialect, "batches")
        # One file or batch: the Files/Batches handlers tell the methods apart themselves.
        yield Route("*", re.compile(r"^/v1/(?:files|batches)/[^/]+(?:/[a-z]+)?$"), self.handle, dialect, "batches")

    def files_api(self) -> FilesAPI:
        """Made on first use, so a gateway that never sees a batch leaves no files behind."""
        if self._files_api is None:
            from ..batch.files_api import FilesAPI

            settings = self.services.settings
            self._files_api = FilesAPI(self._root(), self.client(), records=settings.records,
                                       lease_seconds=settings.batch_lease_seconds,
                                       owned_client=lambda owner: GatewayBatchClient(self.services, owner))
        return self._files_api

    def client(self) -> GatewayBatchClient:
        """The batch engine's client for work of no key in particular (estimates, rendering)."""
        return GatewayBatchClient(self.services)

    def _root(self) -> Path:
        if self.services.settings.batch_dir:
            return Path(self.services.settings.batch_dir)
        from ..config import data_dir

        return data_dir() / "gateway"

    async def startup(self) -> None:
        # Batches a stopped or dead gateway (this one before, a sibling worker, or another
        # instance sharing the records) left open carry on, now and whenever a lease runs out.
        await self.files_api().startup()

    async def aclose(self) -> None:
        if self._files_api is not None:
            await self._files_api.shutdown()

    async def handle(self, req: Request) -> None:
        from ..batch.files_api import Owner
        from .batches_http import handle

        api = self.files_api()
        caller = req.caller
        # Without a key (an open server) every caller is the one anonymous owner.
        owner = Owner() if caller is None else Owner(caller.record.id, caller.record.admin)
        body = await req.body(self.services.settings.max_body_bytes) if req.method == "POST" else b""
        if caller is not None and req.method == "POST" and req.path == "/v1/batches":
            refuse_metered_batches(caller)
            await self._check_batch_models(caller, api, body, owner)
        result = await handle(api, req.method, req.path, req.query, req.headers, body, owner)
        if isinstance(result, bytes):
            await req.respond(result, content_type=b"application/octet-stream")
        else:
            await req.respond(result)

    async def _check_batch_models(self, caller: Caller, api: FilesAPI, body: bytes, owner: Owner) -> None:
        """A key limited to some models may not reach others through a batch file."""
        try:
            file_id = loads(body).get("input_file_id")
        except (JSONDecodeError, ValueError, AttributeError):
            return  # the handler answers the malformed body
        if not isinstance(file_id, str):
            return
        for model in await api.file_models(file_id, owner):
            try:
                target = self.services.router.targets(model)[0]
            except ModelportError:
                continue  # an unknown model fails its own lines
            self.services.keys.check_model(caller, model, target.name)


class GatewayBatchClient:
    """The batch engine's client inside the gateway: every row goes through the call
    pipeline for ``owner`` (the key id that made the batch), on the gateway's own backends,
    which never retry (the engine does)."""

    def __init__(self, services: Services, owner: str | None = None) -> None:
        self.services = services
        self.owner = owner
        self.config = services.config

    def resolve(self, model: str | None) -> tuple[Provider, str]:
        target = self.services.router.targets(model or DEFAULT_NAME)[0]
        return target.provider, target.model_id

    def request(self, model: str | None, prompt: Any = None, **params: Any) -> ChatRequest:
        return self.services.router.client.request(model, prompt, **params)

    async def send(self, request: ChatRequest) -> ChatResponse:
        caller = self.services.keys.caller_for_id(self.owner) if self.owner else None
        row = BatchRow(f"row_{id(request):x}", caller)
        if not request.model:
            request.model = DEFAULT_NAME
        return await self.services.pipeline.chat(row, request, source="batch")

    async def aclose(self) -> None:
        """The gateway closes its client itself, after the batches have stopped."""


def refuse_metered_batches(caller: Caller) -> None:
    """The batch engine paces rows by the provider's limits, not by a key's: a key with an
    rpm, tpm or budget would see its rows refused one by one in the middle of a job, so it
    may not start batches."""
    limits = caller.record.limits
    if limits.rpm is not None or limits.tpm is not None or limits.budget is not None:
        raise PermissionDeniedError(
            f"the gateway key {caller.name!r} has rate or budget limits, which batches cannot be metered against yet",
            hint="start batches with a key made without --rpm, --tpm or --budget",
        )
