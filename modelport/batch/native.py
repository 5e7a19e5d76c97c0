"""``--mode native``: the job goes through the provider's own batch API (about half price,
answers within hours instead of seconds), with the live engine's output and guarantees.

Shape of a run (``NativeEngine``, an ``Engine`` whose dispatch submits instead of sending):

1. Open rows are rendered, grouped by (provider, model) and cut into *parts*, each one
   provider batch. A part is written to the journal (status ``submitting``, with its rows)
   *before* the provider hears of it, and tagged with the job (batch metadata or display
   name), so a run killed between the provider's answer and the journal's commit finds
   the batch again on resume by listing the provider's batches, instead of paying twice.
2. Submitted parts are polled with a growing interval; the remote counts show as progress.
3. An ended part's results are mapped back to rows by ``custom_id`` (``<job tag>-<row>``)
   and committed with the part's ``collected`` mark in one transaction; the engine's writer
   then extends the output in input order, exactly as in live mode.

Rows a provider did not answer (cancelled, missing) stay open and go into a new part, at
most ``max_retries`` times. The journal's ``finish`` never overwrites a final row, so a
result seen twice still counts once.

Providers differ only in their adapter (``NATIVE``, keyed by dialect): how a row is
encoded, how a batch is created, found, polled, read and cancelled.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from .. import dialects
from ..errors import ConfigError, ModelportError, ServerError, TimeoutError, error_for_status
from ..jsonio import JSONDecodeError, dumps, loads
from ..types import ChatRequest, ChatResponse
from .engine import PAGE, Engine, JobAborted
from .spec import estimate_input_tokens

if TYPE_CHECKING:
    from ..client import AsyncClient
    from .journal import Journal

SUBMITTING, SUBMITTED, COLLECTED = "submitting", "submitted", "collected"
# Poll interval: starts at POLL_FIRST seconds and grows by POLL_GROWTH up to a cap
# (MODELPORT_BATCH_POLL_SECONDS, default POLL_MAX): provider batches take minutes to hours.
POLL_FIRST, POLL_GROWTH, POLL_MAX = 1.0, 1.5, 60.0
# Errors after which a submission may or may not have reached the provider.
_UNSURE_KINDS = frozenset({"timeout", "connection", "server", "overloaded", "rate_limit"})

Outcome = ChatResponse | ModelportError | None  # None: no answer for this row (cancelled); it stays open


@dataclass
class Remote:
    """A provider batch as seen by one poll."""

    id: str
    ended: bool
    state: str
    total: int = 0
    finished: int = 0
    raw: Any = None
    # Set when the whole batch failed (e.g. validation): every row it held gets this error.
    error: ModelportError | None = None


@dataclass
class Part:
    name: str
    first: int
    last: int
    remote_id: str | None
    status: str
    info: dict[str, Any]
    items: list[dict[str, Any]] | None = field(default=None, repr=False)
    # Budget held for the part's rows until its results are counted (this run only).
    reserve: float = 0.0


def job_tag(job_id: str) -> str:
    """A short id for the job, safe inside every provider's custom_id alphabet."""
    return "mp" + hashlib.sha256(job_id.encode()).hexdigest()[:10]


def _decode_json(raw: bytes, provider: str) -> Any:
    try:
        return loads(raw)
    except JSONDecodeError:
        raise ServerError(f"{provider} answered its batch API with invalid JSON", provider=provider, status=502) from None


def _jsonl(raw: bytes) -> list[Any]:
    return [loads(line) for line in raw.splitlines() if line.strip()]


def _count(value: Any) -> int:
    # Gemini spells int64 counts as strings and omits zeros.
    return int(value) if value else 0


# -- OpenAI (and OpenAI-compatible providers with the same Files + Batch API) -------------------


class OpenAIBatches:
    """Files upload (purpose=batch), ``POST /batches``, poll, then the output and error files."""

    max_requests = 50_000
    max_bytes = 190 * 2**20
    endpoint = "/v1/chat/completions"
    _ENDED = ("completed", "failed", "expired", "cancelled")

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.provider = backend.name
        self.dialect = dialects.get("openai")

    def encode(self, request: ChatRequest, model_id: str, custom_id: str) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": self.dialect.encode_request(request, model_id)}

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        raw = await self.backend.arequest(method, path, None if body is None else dumps(body))
        return _decode_json(raw.content, self.provider)

    async def submit(self, items: list[dict[str, Any]], model_id: str, label: dict[str, str], info: dict[str, Any],
                     save: Callable[[dict[str, Any]], None]) -> str:
        if "file_id" not in info:
            data = b"".join(dumps(item) + b"\n" for item in items)
            body, content_type = multipart({"purpose": "batch"}, "file", f"{label['job']}-{label['part']}.jsonl", data)
            raw = await self.backend.arequest("POST", "/files", body, content_type)
            info["file_id"] = _decode_json(raw.content, self.provider)["id"]
            # Remembered, so a retried submission does not upload the file again.
            save(info)
        created = await self._json("POST", "/batches", {"input_file_id": info["file_id"], "endpoint": self.endpoint,
                                                         "completion_window": "24h", "metadata": self._metadata(label)})
        return str(created["id"])

    @staticmethod
    def _metadata(label: dict[str, str]) -> dict[str, str]:
        return {"modelport_job": label["job"], "modelport_part": label["part"]}

    async def find(self, label: dict[str, str], info: dict[str, Any]) -> str | None:
        wanted = self._metadata(label)
        since = info.get("started", 0) - 3600
        after = None
        while True:
            page = await self._json("GET", "/batches?limit=100" + (f"&after={after}" if after else ""))
            data = page.get("data") or []
            for batch in data:
                if (batch.get("metadata") or {}) == wanted:
                    return str(batch["id"])
            # Newest first: once past the submission's time, it is not there.
            if not page.get("has_more") or not data or (data[-1].get("created_at") or 0) < since:
                return None
            after = data[-1]["id"]

    async def status(self, remote_id: str) -> Remote:
        batch = await self._json("GET", f"/batches/{remote_id}")
        counts = batch.get("request_counts") or {}
        state = batch.get("status", "")
        error = None
        if state == "failed" and not batch.get("output_file_id"):
            errors = ((batch.get("errors") or {}).get("data")) or [{}]
            first = errors[0]
            error = error_for_status(400, f"the provider's batch failed: {first.get('message') or 'no reason given'}",
                                     code=first.get("code"), provider=self.provider)
        return Remote(remote_id, state in self._ENDED, state, _count(counts.get("total")),
                      _count(counts.get("completed")) + _count(counts.get("failed")), batch, error)

    async def results(self, remote: Remote) -> AsyncIterator[tuple[str, Outcome]]:
        for key in ("output_file_id", "error_file_id"):
            file_id = remote.raw.get(key)
            if not file_id:
                continue
            raw = await self.backend.arequest("GET", f"/files/{file_id}/content")
            for line in _jsonl(raw.content):
                yield str(line.get("custom_id")), self._outcome(line)

    def _outcome(self, line: dict[str, Any]) -> Outcome:
        response = line.get("response")
        error = line.get("error")
        if response and response.get("status_code") == 200:
            return self.dialect.decode_response(response.get("body") or {}, self.provider)
        if response:
            return self.dialect.decode_error(int(response.get("status_code") or 500), response.get("body"), {}, self.provider)
        error = error or {}
        if error.get("code") == "batch_cancelled":
            return None
        if error.get("code") == "batch_expired":
            return TimeoutError("the provider's batch expired before answering this row", provider=self.provider)
        return self.dialect.decode_error(500, {"error": error}, {}, self.provider)

    async def cancel(self, remote_id: str) -> None:
        await self._json("POST", f"/batches/{remote_id}/cancel", {})


# -- Anthropic Message Batches -------------------------------------------------------------------


class AnthropicBatches:
    """``POST /v1/messages/batches`` with inline requests, poll, then the results JSONL."""

    max_requests = 10_000
    max_bytes = 200 * 2**20
    # Anthropic's error types and the HTTP statuses its API sends them with.
    _STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402, "permission_error": 403,
               "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
               "overloaded_error": 529}
    path = "/v1/messages/batches"

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.provider = backend.name
        self.dialect = dialects.get("anthropic")

    def encode(self, request: ChatRequest, model_id: str, custom_id: str) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": self.dialect.encode_request(request, model_id)}

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        raw = await self.backend.arequest(method, path, None if body is None else dumps(body))
        return _decode_json(raw.content, self.provider)

    async def submit(self, items: list[dict[str, Any]], model_id: str, label: dict[str, str], info: dict[str, Any],
                     save: Callable[[dict[str, Any]], None]) -> str:
        return str((await self._json("POST", self.path, {"requests": items}))["id"])

    async def find(self, label: dict[str, str], info: dict[str, Any]) -> str | None:
        """Message batches carry no metadata: the candidate is a batch of the part's size
        created since the submission began (allowing for clock skew), and no other part's.
        A wrong guess costs nothing twice: results whose custom_id is not this job's are
        ignored, and the rows they left open are submitted again."""
        since = info.get("started", 0) - 120
        size = len(info.get("rows") or ())
        taken = set(info.get("known_remotes") or ())
        page = await self._json("GET", self.path + "?limit=100")
        found = []
        for batch in page.get("data") or []:
            counts = batch.get("request_counts") or {}
            if batch.get("id") in taken or sum(_count(v) for v in counts.values()) != size:
                continue
            if _timestamp(batch.get("created_at")) >= since:
                found.append(batch)
        if len(found) != 1:
            return None
        info["adopted"] = True
        return str(found[0]["id"])

    async def status(self, remote_id: str) -> Remote:
        batch = await self._json("GET", f"{self.path}/{remote_id}")
        counts = {k: _count(v) for k, v in (batch.get("request_counts") or {}).items()}
        state = batch.get("processing_status", "")
        return Remote(remote_id, state == "ended", state, sum(counts.values()), sum(counts.values()) - counts.get("processing", 0), batch)

    async def results(self, remote: Remote) -> AsyncIterator[tuple[str, Outcome]]:
        raw = await self.backend.arequest("GET", f"{self.path}/{remote.id}/results")
        for line in _jsonl(raw.content):
            yield str(line.get("custom_id")), self._outcome(line.get("result") or {})

    def _outcome(self, result: dict[str, Any]) -> Outcome:
        kind = result.get("type")
        if kind == "succeeded":
            return self.dialect.decode_response(result.get("message") or {}, self.provider)
        if kind == "errored":
            body = result.get("error") or {}
            error_type = (body.get("error") or {}).get("type")
            return self.dialect.decode_error(self._STATUS.get(error_type or "", 500), body, {}, self.provider)
        if kind == "expired":
            return TimeoutError("the provider's batch expired before answering this row", provider=self.provider)
        return None

    async def cancel(self, remote_id: str) -> None:
        await self._json("POST", f"{self.path}/{remote_id}/cancel", {})


def _timestamp(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# -- Gemini Batch Mode -----------------------------------------------------------------------------


class GeminiBatches:
    """``models/{m}:batchGenerateContent`` with inline requests (a long-running operation
    ``batches/{id}``), poll it, then read its inline responses."""

    max_requests = 10_000
    # Inline requests share one request body, which Google caps at 20 MB.
    max_bytes = 18 * 2**20
    _ENDED = ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED")
    # google.rpc.Code -> HTTP status, for per-request errors.
    _HTTP = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400, 12: 501, 13: 500,
             14: 503, 15: 500, 16: 401}

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.provider = backend.name
        self.dialect = dialects.get("gemini")

    def encode(self, request: ChatRequest, model_id: str, custom_id: str) -> dict[str, Any]:
        return {"request": self.dialect.encode_request(request, model_id), "metadata": {"key": custom_id}}

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        raw = await self.backend.arequest(method, path, None if body is None else dumps(body))
        return _decode_json(raw.content, self.provider)

    @staticmethod
    def _display_name(label: dict[str, str]) -> str:
        return f"modelport:{label['job']}:{label['part']}"

    async def submit(self, items: list[dict[str, Any]], model_id: str, label: dict[str, str], info: dict[str, Any],
                     save: Callable[[dict[str, Any]], None]) -> str:
        model = model_id if "/" in model_id else f"models/{model_id}"
        batch = {"displayName": self._display_name(label), "model": model, "inputConfig": {"requests": {"requests": items}}}
        operation = await self._json("POST", f"/{model}:batchGenerateContent", {"batch": batch})
        return str(operation["name"])

    async def find(self, label: dict[str, str], info: dict[str, Any]) -> str | None:
        wanted = self._display_name(label)
        token = None
        for _ in range(20):
            page = await self._json("GET", "/batches?pageSize=100" + (f"&pageToken={token}" if token else ""))
            for operation in page.get("operations") or page.get("batches") or []:
                batch = operation.get("metadata") or operation
                if batch.get("displayName") == wanted:
                    return str(operation.get("name") or batch.get("name"))
            token = page.get("nextPageToken")
            if not token:
                return None
        return None

    async def status(self, remote_id: str) -> Remote:
        operation = await self._json("GET", f"/{remote_id}")
        batch = operation.get("metadata") or {}
        state = batch.get("state", "")
        stats = batch.get("batchStats") or {}
        ended = bool(operation.get("done")) or state in self._ENDED
        error = None
        if operation.get("error") and state != "BATCH_STATE_CANCELLED":
            error = self.dialect.decode_error(self._HTTP.get(operation["error"].get("code"), 500), {"error": operation["error"]}, {}, self.provider)
        finished = _count(stats.get("successfulRequestCount")) + _count(stats.get("failedRequestCount"))
        return Remote(remote_id, ended, state, _count(stats.get("requestCount")), finished, operation, error)

    async def results(self, remote: Remote) -> AsyncIterator[tuple[str, Outcome]]:
        operation = remote.raw
        response = operation.get("response") or {}
        output = (operation.get("metadata") or {}).get("output") or response.get("output") or response
        inlined = (output.get("inlinedResponses") or {}).get("inlinedResponses") or []
        for item in inlined:
            key = (item.get("metadata") or {}).get("key")
            if item.get("response") is not None:
                yield str(key), self.dialect.decode_response(item["response"], self.provider)
            elif item.get("error") is not None:
                status = item["error"]
                yield str(key), self.dialect.decode_error(self._HTTP.get(status.get("code"), 500), {"error": status}, {}, self.provider)

    async def cancel(self, remote_id: str) -> None:
        await self._json("POST", f"/{remote_id}:cancel", {})


# Adapters by dialect name: an OpenAI-dialect provider with the Files + Batch API (OpenAI,
# Groq) works as is; one without answers the upload with its own error.
NATIVE: dict[str, type] = {"openai": OpenAIBatches, "anthropic": AnthropicBatches, "gemini": GeminiBatches}


def native_adapter_class(provider: Any) -> type:
    """The batch adapter for the provider's API; ConfigError when it has none (in-process models)."""
    cls = NATIVE.get(provider.dialect) if provider.backend == "http" else None
    if cls is None:
        raise ConfigError(f"{provider.name} has no batch API for --mode native",
                          hint=f"native mode works with {', '.join(sorted(NATIVE))}-style APIs; use --mode live")
    return cls


def multipart(fields: dict[str, str], file_field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = "modelport-" + secrets.token_hex(12)
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n").encode()
    out += data + f"\r\n--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


# -- the engine ------------------------------------------------------------------------------------


class NativeEngine(Engine):
    # Native mode keeps its provider batches in a journal file and reaches the providers'
    # batch APIs through the client's own backends: more than the live engine's seams.
    journal: Journal
    client: AsyncClient

    def __init__(self, *args: Any, poll_max: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cap = poll_max if poll_max is not None else float(os.environ.get("MODELPORT_BATCH_POLL_SECONDS") or POLL_MAX)
        self.poll_first, self.poll_max = min(POLL_FIRST, cap), cap
        self.tag = job_tag(self.spec.job_id)
        self._adapters: dict[str, Any] = {}

    def _discount(self) -> float:
        from ..prices import NATIVE_BATCH_DISCOUNT

        return NATIVE_BATCH_DISCOUNT

    # -- parts ---------------------------------------------------------------------------

    def _adapter(self, provider_name: str) -> Any:
        adapter = self._adapters.get(provider_name)
        if adapter is None:
            provider = self.client.providers[provider_name]
            cls = native_adapter_class(provider)
            adapter = self._adapters[provider_name] = cls(self.client.backend(provider))
        return adapter

    def _label(self, part: Part) -> dict[str, str]:
        return {"job": self.spec.job_id, "part": part.name}

    def _save(self, part: Part) -> None:
        self.journal.set_remote(part.name, part.first, part.last, part.remote_id, part.status, part.info)

    async def _dispatch(self) -> None:
        parts = [Part(r["name"], r["first"], r["last"], r["remote_id"], r["status"], r["info"])
                 for r in self.journal.remotes() if r["status"] != COLLECTED]
        self._serial = len(self.journal.remotes())
        for part in parts:
            if part.status == SUBMITTING:
                await self._submit(part, maybe_sent=True)
        # Rounds: parts for every open row, polled to their end; rows a provider left
        # unanswered make the next round (each row's tries are bounded in _new_parts).
        while not self._stop and self._fatal is None:
            if not parts:
                if self.stats.status == "budget":
                    break
                parts = await self._new_parts()
                if not parts:
                    break
            await self._poll(parts)
            parts = [p for p in parts if p.status != COLLECTED]
            if parts:
                return  # stopped (a cancel or a fatal error) while provider batches still run
        if self.stats.status != "budget":
            self.stats.message = ""

    async def _new_parts(self) -> list[Part]:
        """Every open row into parts, submitted as each fills up, the rest at the end."""
        groups: dict[tuple[str, str], tuple[list[int], list[dict[str, Any]], list[float]]] = {}
        parts: list[Part] = []
        cursor = -1
        while self.stats.status != "budget":
            page = self.journal.open_rows(after=cursor, limit=PAGE)
            if not page:
                break
            for idx, key, data in page:
                cursor = idx
                if self.journal.attempts(idx) > self.spec.max_retries:
                    self._finish(idx, key, data, error=ServerError(
                        f"the provider's batches gave no answer for this row in {self.journal.attempts(idx)} tries"))
                    continue
                try:
                    request = self.renderer(data)
                    provider, model_id = self.client.resolve(request.model)
                    adapter = self._adapter(provider.name)
                except ConfigError as exc:
                    self._fatal = JobAborted(exc)
                    return parts
                except ModelportError as exc:
                    self._finish(idx, key, data, error=exc)
                    continue
                if not self._within_budget(request):
                    self.stats.status = "budget"
                    self.stats.message = f"stopped at the budget of ${self.spec.max_cost:.4f}; resume with a higher --max-cost"
                    break
                reserve = self._cost_of(self._price(provider.name, model_id), request,
                                        estimate_input_tokens(request) + (request.max_tokens or self._output_estimate()))
                self._reserved += reserve
                item = adapter.encode(request, model_id, f"{self.tag}-{idx}")
                rows, items, sums = groups.setdefault((provider.name, model_id), ([], [], [0.0, 0.0]))
                rows.append(idx)
                items.append(item)
                sums[0] += len(dumps(item)) + 1
                sums[1] += reserve
                if len(rows) >= adapter.max_requests or sums[0] >= adapter.max_bytes:
                    parts.append(await self._open_part(provider.name, model_id, rows, items, sums[1]))
                    del groups[(provider.name, model_id)]
                    if self._fatal is not None:
                        return parts
        for (provider_name, model_id), (rows, items, sums) in groups.items():
            parts.append(await self._open_part(provider_name, model_id, rows, items, sums[1]))
            if self._fatal is not None:
                break
        self._dirty = True
        return parts

    async def _open_part(self, provider_name: str, model_id: str, rows: list[int], items: list[dict[str, Any]], reserve: float) -> Part:
        self._serial += 1
        info = {"provider": provider_name, "model": model_id, "rows": rows, "started": time.time()}
        part = Part(f"part-{self._serial}", rows[0], rows[-1], None, SUBMITTING, info, items, reserve)
        # Committed before the provider hears of the batch: a resume knows to look for it.
        self._save(part)
        await self._submit(part, maybe_sent=False)
        return part

    async def _submit(self, part: Part, *, maybe_sent: bool) -> None:
        """Create the part's remote batch, unless an earlier attempt already did."""
        adapter = self._adapter(part.info["provider"])
        label = self._label(part)
        part.info["known_remotes"] = [r["remote_id"] for r in self.journal.remotes() if r["remote_id"]]
        attempt = 0
        while True:
            try:
                remote_id = await adapter.find(label, part.info) if maybe_sent else None
                if remote_id is None:
                    items = part.items if part.items is not None else self._items(part, adapter)
                    remote_id = await adapter.submit(items, part.info["model"], label, part.info, lambda info: self._save(part))
                break
            except ModelportError as exc:
                if exc.kind not in _UNSURE_KINDS or attempt >= self.spec.max_retries:
                    self._fatal = self._fatal or JobAborted(exc)
                    return
                # The batch may exist although the answer was lost: look before sending again.
                maybe_sent = True
                attempt += 1
                self.stats.retries += 1
                await asyncio.sleep(exc.retry_after if exc.retry_after is not None else min(2.0**attempt, 60.0))
        part.remote_id, part.status, part.items = remote_id, SUBMITTED, None
        part.info.pop("known_remotes", None)
        for idx in part.info["rows"]:
            self.journal.mark_inflight(idx)
        self.stats.sent += len(part.info["rows"])
        self._save(part)  # commits the rows' marks with it

    def _items(self, part: Part, adapter: Any) -> list[dict[str, Any]]:
        """The part's requests again (a resumed part that never reached the provider)."""
        wanted = set(part.info["rows"])
        items = []
        for idx, _, data, state in self.journal.rows_between(part.first, part.last):
            if idx in wanted:
                request = self.renderer(data)
                items.append(adapter.encode(request, self.client.resolve(request.model)[1], f"{self.tag}-{idx}"))
        return items

    # -- polling and results ---------------------------------------------------------------

    async def _poll(self, parts: list[Part]) -> None:
        delay = self.poll_first
        failures = 0
        while not self._stop and self._fatal is None:
            active = [p for p in parts if p.status == SUBMITTED]
            if not active:
                return
            if self._cancel_requested():
                await self._cancel(active)
                return
            total = finished = 0
            for part in active:
                try:
                    remote = await self._adapter(part.info["provider"]).status(part.remote_id)
                except ModelportError as exc:
                    failures += 1
                    if exc.kind not in _UNSURE_KINDS or failures > self.spec.max_retries:
                        self._fatal = self._fatal or JobAborted(exc)
                        return
                    continue
                failures = 0
                if remote.ended:
                    await self._collect(part, remote)
                else:
                    total += remote.total or len(part.info["rows"])
                    finished += remote.finished
            still = sum(p.status == SUBMITTED for p in parts)
            if still:
                self.stats.message = f"{still} provider batch{'es' if still > 1 else ''} running: {finished:,}/{total:,} answered remotely"
                self._progress()
                await asyncio.sleep(delay)
                delay = min(delay * POLL_GROWTH, self.poll_max)

    async def _cancel(self, active: list[Part]) -> None:
        for part in active:
            try:
                await self._adapter(part.info["provider"]).cancel(part.remote_id)
            except ModelportError:
                pass  # the remote batch ends by itself within its window; resume collects it
        self.stats.status = "cancelled"
        self.stats.message = "the provider's batches were asked to cancel; resume collects what they answered"
        self._stop = True

    async def _collect(self, part: Part, remote: Remote) -> None:
        provider, model_id = part.info["provider"], part.info["model"]
        price = self._price(provider, model_id)
        rows = set(part.info["rows"])
        prefix = self.tag + "-"
        async for custom_id, outcome in self._adapter(provider).results(remote):
            if not custom_id.startswith(prefix) or not custom_id[len(prefix):].isdigit():
                continue  # not this job's row (an adopted batch that was someone else's)
            idx = int(custom_id[len(prefix):])
            if idx not in rows or outcome is None:
                continue
            if isinstance(outcome, ChatResponse):
                outcome.provider = provider
                outcome.model = outcome.model or model_id
                self._finish(idx, None, None, response=outcome, price=price)
            else:
                self._finish(idx, None, None, error=outcome)
        if remote.error is not None:
            for idx in rows:
                self._finish(idx, None, None, error=remote.error)
        part.status = COLLECTED
        part.info["remote_state"] = remote.state
        self._save(part)  # the rows' answers and the part's mark, in one commit
        # What the rows cost is counted now; they hold no budget any more.
        self._reserved -= part.reserve
        part.reserve = 0.0
        self._wake.set()
