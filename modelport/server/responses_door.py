"""The Responses front door: ``/v1/responses`` and the endpoints around it, over any backend.

The door resolves what needs state (``previous_response_id``, ``item_reference``) from the
store, hands the whole history to the dialect, and runs the answer through the gateway's
``chat``/``stream`` like every other door (routing, keys, limits, budgets, metrics, call
log). With ``store`` (the default) the response and its input items are saved for the
caller's key; ``store: false`` keeps nothing.
"""

from __future__ import annotations

import os
import re
from typing import Any, Awaitable, Callable, Iterable

from ..dialects import openai_responses as dialect
from ..dialects.base import StreamEncoderBase
from ..errors import BadRequestError, NotFoundError
from .fair import HEAVY_BYTES
from .http import Request
from .limits import estimate_tokens
from .responses_store import ChainLimits, ResponseStore, Stored, StoreQuota, committed, decode_chain, default_responses_path
from .routes import Route
from .services import Services

_SSE = b"text/event-stream"
_ID_PREFIX = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}


class ResponsesDoor:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._store: ResponseStore | None = None

    def routes(self) -> Iterable[Route]:
        yield Route("POST", "/v1/responses", self.create, dialect, "responses", runs_model=True)
        yield Route("POST", "/v1/responses/input_tokens", self.input_tokens, dialect, "responses")
        # One stored response; the door tells its methods and sub-resources apart.
        yield Route("*", re.compile(r"^/v1/responses/([^/]+)((?:/input_items|/cancel)?)$"), self.stored, dialect, "responses")

    @property
    def store(self) -> ResponseStore:
        """Opened on first use, so a gateway that never sees a stored response leaves no file."""
        if self._store is None:
            settings = self.services.settings
            self._store = ResponseStore(default_responses_path(self.services.config), settings.responses_ttl_days * 86400.0,
                                        settings.records)
        return self._store

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
            self._store = None

    # -- POST /v1/responses ----------------------------------------------------------------

    async def create(self, req: Request) -> None:
        pipeline = self.services.pipeline
        body = await req.json(self.services.settings.max_body_bytes)
        if not isinstance(body, dict):
            raise BadRequestError("body: expected a JSON object", param="body")
        own_input, history = await self._resolve(req, body)
        pipeline.refuse_unaffordable(req, _framed(history) + _framed(own_input))
        request = await req.decode(dialect.decode_request, {**body, "input": history + own_input, "previous_response_id": None})
        echo = dialect.echo_fields(body)
        store = echo["store"]
        owner = _owner(req)
        if store:
            settings = self.services.settings
            await self.store.ensure_room(owner, StoreQuota(settings.max_stored_responses, int(settings.max_stored_mb * 2**20)))
        if request.stream:
            encoder = dialect.StreamEncoder(request.model, True, echo)
            await pipeline.stream(req, request, _Storing(encoder, self.store, owner, own_input) if store else encoder)
            return
        response = await pipeline.chat(req, request)
        # The gateway's own id, never an upstream's: it keys the store.
        obj = dialect.encode_response(response, request.model, echo, "resp_" + os.urandom(12).hex())
        if store:
            await self.store.persist(owner, Stored(obj, own_input))
        await req.respond(obj)

    async def _resolve(self, req: Request, body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(this request's own input items, with references resolved and ids given; the
        stored history of ``previous_response_id``)."""
        raw = body.get("input")
        if isinstance(raw, str):
            raw = [{"type": "message", "role": "user", "content": raw}]
        if raw is None:
            raise BadRequestError("input: required", param="input", code="missing_required_parameter")
        if not isinstance(raw, list):
            raise BadRequestError("input: expected a string or an array of input items", param="input", code="invalid_type")
        owner = _owner(req)
        refs = [item["id"] for item in raw if isinstance(item, dict) and item.get("type") == "item_reference" and isinstance(item.get("id"), str)]
        settings = self.services.settings
        if len(refs) > settings.max_item_references:
            raise BadRequestError(f"input: {len(refs)} item references, over this gateway's limit of {settings.max_item_references}",
                                  param="input", code="too_many_item_references",
                                  hint="send the items themselves, or raise max_item_references under [server] in the config")
        found = await self.store.items(owner, refs) if refs else {}
        items: list[dict[str, Any]] = []
        for i, item in enumerate(raw):
            if isinstance(item, dict) and item.get("type") == "item_reference":
                ref = item.get("id")
                if ref not in found:
                    raise NotFoundError(
                        f"Item with id {ref!r} not found. Items are kept only for responses made with store: true by this key, "
                        "for a limited time; send the item itself instead of a reference.",
                        param=f"input[{i}].id", code="item_not_found")
                items.append(found[ref])
            else:
                items.append(_stored_item(item))
        previous = body.get("previous_response_id")
        if previous is None:
            return items, []
        if not isinstance(previous, str):
            raise BadRequestError("previous_response_id: expected a string", param="previous_response_id")
        limits = ChainLimits(settings.max_chain_turns, int(settings.max_chain_mb * 2**20))
        blobs = await self.store.chain(owner, previous, limits)
        if blobs is None:
            raise BadRequestError(f"Previous response with id {previous!r} not found.", param="previous_response_id",
                                  code="previous_response_not_found",
                                  hint="responses are kept only with store: true, for this gateway key, for a limited time")
        # A few bytes of request can stand for megabytes of history: decode it as a heavy body.
        req.heavy = req.heavy or sum(len(a) + len(b) for a, b in blobs) > HEAVY_BYTES
        return items, await req.off_loop(decode_chain, blobs)

    # -- the stored response endpoints -----------------------------------------------------

    async def stored(self, req: Request, response_id: str, action: str) -> None:
        """GET/DELETE /v1/responses/{id}, GET .../input_items, POST .../cancel."""
        action = action.lstrip("/")
        handler = self._actions.get((req.method, action))
        if handler is None:
            allowed = ", ".join(f"{m} /v1/responses/{{id}}{'/' + a if a else ''}" for m, a in self._actions)
            raise BadRequestError(f"{req.method} is not allowed on {req.path}; this gateway serves {allowed}", status=405,
                                  code="method_not_allowed")
        stored = await self.store.get(_owner(req), response_id)
        if stored is None:
            raise NotFoundError(f"Response with id {response_id!r} not found.", param="response_id", code="response_not_found",
                                hint="responses are kept only with store: true, for the gateway key that made them, for a limited time")
        await handler(self, req, stored)

    async def _retrieve(self, req: Request, stored: Stored) -> None:
        if req.query.get("stream") == "true":
            after = req.query.get("starting_after", "-1")
            start = int(after) if after.lstrip("-").isdigit() else -1
            await req.respond(dialect.replay(stored.response, start), content_type=_SSE)
            return
        await req.respond(stored.response)

    async def _delete(self, req: Request, stored: Stored) -> None:
        response_id = stored.response["id"]
        await self.store.delete(_owner(req), response_id)
        await req.respond({"id": response_id, "object": "response", "deleted": True})

    async def _input_items(self, req: Request, stored: Stored) -> None:
        query = req.query
        limit = query.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            raise BadRequestError("limit: expected an integer from 1 to 100", param="limit", code="invalid_value")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise BadRequestError("order: expected asc or desc", param="order", code="invalid_value")
        items = stored.input if order == "asc" else stored.input[::-1]
        after = query.get("after")
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = items[: int(limit)]
        await req.respond({
            "object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > len(page),
        })

    async def _cancel(self, req: Request, stored: Stored) -> None:
        raise BadRequestError("Cannot cancel a synchronous response: only background responses can be cancelled, "
                              "and this gateway does not run background responses.", param="response_id")

    _actions: dict[tuple[str, str], Callable[[ResponsesDoor, Request, Stored], Awaitable[None]]] = {("GET", ""): _retrieve, ("DELETE", ""): _delete, ("GET", "input_items"): _input_items, ("POST", "cancel"): _cancel}

    # -- POST /v1/responses/input_tokens ----------------------------------------------------

    async def input_tokens(self, req: Request) -> None:
        # An estimate, as for Anthropic's and Gemini's token counting: backends offer no tokenizer call.
        body = await req.json(self.services.settings.max_body_bytes)
        if not isinstance(body, dict):
            raise BadRequestError("body: expected a JSON object", param="body")
        own_input, history = await self._resolve(req, body)
        request = await req.decode(dialect.decode_request, {**body, "input": history + own_input, "previous_response_id": None})
        await self.services.admit_model(req, request.model)
        await req.respond({"object": "response.input_tokens", "input_tokens": estimate_tokens(request)})


class _Storing(StreamEncoderBase):
    """The stream encoder, saving the final response as the terminal event is made; the
    gateway awaits ``flush`` (the write committed) before it sends that event, so the
    caller's next turn finds the response on any worker."""

    def __init__(self, encoder: dialect.StreamEncoder, store: ResponseStore, owner: str, own_input: list[dict[str, Any]]) -> None:
        self.encoder, self._store, self._owner, self._input = encoder, store, owner, own_input
        self._saving: Any = None

    async def flush(self) -> None:
        if self._saving is not None:
            await committed(self._saving)

    def encode(self, event: Any) -> bytes:
        return self.encoder.encode(event)

    def _save(self, tail: bytes) -> bytes:
        if self.encoder.response is not None:
            self._saving = self._store.save(self._owner, Stored(self.encoder.response, self._input))
        return tail

    def close(self) -> bytes:
        return self._save(self.encoder.close())

    def error(self, exc: BaseException) -> bytes:
        return self._save(self.encoder.error(exc))


# Input items that each become a message or a tool call of their own (a reasoning item joins
# the message after it), so each books at least one message's framing.
_FRAMED = frozenset({"message", "function_call", "function_call_output"})


def _framed(items: list[Any]) -> int:
    return sum(1 for item in items if isinstance(item, dict) and (item.get("type") or "message") in _FRAMED)


def _owner(req: Request) -> str:
    """The key a stored response belongs to; "" for callers of an open gateway without one."""
    return req.caller.record.id if req.caller is not None else ""


def _stored_item(item: Any) -> Any:
    """An input item as stored and listed by ``input_items``: with an id (so later requests
    can reference it) and, for messages, in the full item form (typed, parts, status)."""
    if not isinstance(item, dict):
        return item
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind == "message":
        content = item.get("content")
        if isinstance(content, str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            content = [{"type": part, "text": content}]
        item = {**item, "type": "message", "content": content, "status": item.get("status") or "completed"}
    prefix = _ID_PREFIX.get(kind or "")
    if prefix and not isinstance(item.get("id"), str):
        item = {**item, "id": prefix + os.urandom(12).hex()}
    return item
