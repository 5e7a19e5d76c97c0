"""The console's door: its static pages (``/ui``) and JSON endpoints (``/ui/api/...``).

The pages are plain files shipped in the wheel, read once and served with a strict
Content-Security-Policy. The endpoints are token-authenticated JSON (no cookies, so no
CSRF surface): on an open loopback gateway anyone local may use them; with auth on, an
admin key sees everything and a normal key only the models it may call and its own usage.
Every read goes through the stores' public methods, off the event loop; no secret is ever
sent back except a new key's, once, in the answer that made it.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from ...dialects import openai as openai_dialect
from ...errors import BadRequestError, ModelportError, NotFoundError, PermissionDeniedError
from ...jsonio import JSONDecodeError, dumps
from ..batches_door import BatchesDoor, refuse_metered_batches
from ..routes import Route
from ..services import Services

if TYPE_CHECKING:
    from ...batch.files_api import Spend
    from ...calllog import CallFilter, CallLog, CallSummary, UsageBucket

T = TypeVar("T")

STATIC_DIR = Path(__file__).with_name("static")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}
# Nothing from another origin, no inline script or style; images may be data: URLs (uploads).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
_SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                     "x-frame-options": "DENY"}
# Sent by the console's own script on every call; a custom header cannot cross origins unasked.
CONSOLE_HEADER = "x-modelport-console"
PAGE_SIZE = 50
MAX_PAGE = 500
MAX_UPLOAD_ROWS = 50_000
# The usage series' columns, in the CSV export's order.
_USAGE_NAMES = ("time", "group", "calls", "errors", "input_tokens", "output_tokens", "cost", "unpriced_calls", "cached_tokens",
                "cache_saved")
_CALL_ID = re.compile(r"^[0-9A-Za-z]{26}$")
_BATCH_ID = re.compile(r"^batch_[0-9a-f]{24}$")




class ConsoleDoor:
    """``page`` for the files, ``api`` for the JSON."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._files: dict[str, tuple[bytes, str, str]] | None = None
        # The default call log, read when the gateway logs no calls itself (opened once found,
        # by whichever reading thread looks first).
        self._default_log: CallLog | None = None
        self._default_log_lock = threading.Lock()
        self._routes: dict[tuple[str, str], Callable[..., Any]] = {
            ("GET", "me"): self.me, ("GET", "models"): self.models, ("GET", "logs"): self.logs, ("GET", "usage"): self.usage,
            ("GET", "keys"): self.keys, ("POST", "keys"): self.create_key, ("GET", "batches"): self.batches,
            ("POST", "batches"): self.start_batch, ("POST", "batches/estimate"): self.estimate_batch,
        }
        self._item_routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = [
            ("GET", re.compile(r"^logs/([^/]+)$"), self.call),
            ("DELETE", re.compile(r"^keys/([^/]+)$"), self.revoke_key),
            ("POST", re.compile(r"^batches/([^/]+)/cancel$"), self.cancel_batch),
            ("GET", re.compile(r"^batches/([^/]+)/output$"), self.batch_output),
        ]

    def routes(self) -> Iterable[Route]:
        # Its JSON (keys checked per endpoint) and its pages (open: the page asks for a key).
        yield Route("*", re.compile(r"^/ui/api/(.+)$"), self.api, openai_dialect, "ui")
        yield Route("*", re.compile(r"^/ui/?((?:[A-Za-z0-9_-]+\.[a-z]+)?)$"), self.page, openai_dialect, "ui-page", public=True)

    def _batches_door(self) -> BatchesDoor:
        return self.services.find_door(BatchesDoor)

    def files_api(self) -> Any:
        return self._batches_door().files_api()

    async def aclose(self) -> None:
        """Close the default call log if this door opened it (the gateway closes its own)."""
        if self._default_log is not None:
            await asyncio.to_thread(self._default_log.close)

    # -- static pages ----------------------------------------------------------------------

    def _load_files(self) -> dict[str, tuple[bytes, str, str]]:
        files = {}
        for path in STATIC_DIR.iterdir():
            content_type = _TYPES.get(path.suffix)
            if content_type and path.is_file():
                data = path.read_bytes()
                files[path.name] = (data, content_type, '"' + hashlib.sha256(data).hexdigest()[:20] + '"')
        return files

    async def page(self, req: Any, arg: str) -> None:
        if req.method not in ("GET", "HEAD"):
            raise BadRequestError(f"{req.method} is not allowed on {req.path}; use GET", status=405, code="method_not_allowed")
        if self._files is None:
            self._files = await asyncio.to_thread(self._load_files)
        name = arg or "index.html"
        found = self._files.get(name)
        if found is None:
            raise NotFoundError(f"no such console file: {req.path}", code="unknown_url", hint="open /ui")
        data, content_type, etag = found
        # The page may change with an upgrade: it is revalidated each time; the rest by ETag too.
        headers = {**_SECURITY_HEADERS, "etag": etag, "cache-control": "no-cache" if name == "index.html" else "public, max-age=300"}
        if req.headers.get("if-none-match") == etag:
            await req.respond(b"", 304, headers, content_type=content_type.encode())
            return
        await req.respond(data, 200, headers, content_type=content_type.encode())

    # -- JSON endpoints --------------------------------------------------------------------

    async def api(self, req: Any, arg: str) -> None:
        if req.method not in ("GET", "HEAD") and CONSOLE_HEADER not in req.headers and "authorization" not in req.headers:
            # Either header makes a browser ask first (a CORS preflight), which a page of
            # another origin is refused; a plain form or text/plain post carries neither.
            raise PermissionDeniedError(f"console calls that change something must carry the {CONSOLE_HEADER} header "
                                        "(the console sends it) or a gateway key", code="console_header_required")
        handler = self._routes.get((req.method, arg))
        item = ""
        if handler is None:
            for method, pattern, candidate in self._item_routes:
                match = pattern.match(arg)
                if match is not None and method == req.method:
                    handler, item = candidate, match.group(1)
                    break
        if handler is None:
            raise NotFoundError(f"no such console endpoint: {req.method} {req.path}", code="unknown_url")
        result = await handler(req, item) if item else await handler(req)
        if isinstance(result, tuple):
            body, content_type, filename = result
            await req.respond(body, 200, {"content-disposition": f'attachment; filename="{filename}"',
                                                        "x-content-type-options": "nosniff", "cache-control": "no-store"},
                                       content_type=content_type.encode())
        else:
            await req.respond(result, 200, {"cache-control": "no-store"})

    def _admin(self, req: Any) -> None:
        """Only an admin key (or anyone, on an open gateway) may use this endpoint."""
        caller = req.caller
        if self.services.auth_required and (caller is None or not caller.record.admin):
            raise PermissionDeniedError("this console page needs an admin gateway key",
                                        hint="make one with `modelport keys create NAME --admin`")

    def _is_admin(self, req: Any) -> bool:
        caller = req.caller
        return not self.services.auth_required or (caller is not None and caller.record.admin)

    async def me(self, req: Any) -> dict[str, Any]:
        caller = req.caller
        return {"auth": self.services.auth_required, "admin": self._is_admin(req), "key": caller.name if caller else None}

    async def models(self, req: Any) -> dict[str, Any]:
        router = self.services.router
        groups: dict[str, list[str]] = {}
        for info in self.services.list_models(req):
            groups.setdefault(info.provider, []).append(info.id)
        providers: list[dict[str, Any]] = []
        for name, provider in sorted(router.client.providers.items()):
            # Whether a key is set, never the key: the router already knows, once per provider.
            providers.append({"provider": name, "key_required": provider.key_required,
                              "key_set": (not provider.key_required) or router.routable(provider), "models": groups.pop(name, [])})
        providers.extend({"provider": name, "key_required": False, "key_set": True, "models": ids} for name, ids in groups.items())
        prices: dict[str, Any] = {}
        for provider_row in providers:
            for model in provider_row["models"]:
                prices[model] = self._price(model)
        return {"default": router.default, "providers": [p for p in providers if p["models"] or self._is_admin(req)], "prices": prices}

    def _price(self, model: str) -> dict[str, float] | None:
        """USD per million tokens, so the page can show what an answer cost (None: unknown)."""
        try:
            price = self.services.router.targets(model)[0].price
        except ModelportError:
            return None
        return None if price is None else {"input": price.input, "output": price.output}

    # -- the call log ----------------------------------------------------------------------

    def _log(self) -> CallLog | None:
        """The call log to read: the gateway's, else the default file's; None while no call
        was logged there (reading must not make the file). Blocking: off the event loop."""
        if self.services.call_log is not None:
            return self.services.call_log
        with self._default_log_lock:
            if self._default_log is None:
                from ...calllog import CallLog, default_log_path

                path = default_log_path()
                if not path.exists():
                    return None
                self._default_log = CallLog(path)
            return self._default_log

    async def _read_log(self, read: Callable[[CallLog], T], empty: T) -> T:
        def run() -> T:
            log = self._log()
            return empty if log is None else read(log)

        return await asyncio.to_thread(run)

    def _filter(self, req: Any, query: dict[str, str]) -> CallFilter:
        """The page's filters as the call log's, checked here so a bad one is a 400 naming it."""
        from ...calllog import CallFilter, FilterError

        # A normal key sees its own calls: those of its id, never those of an earlier key
        # that held its name (revoked, its name given to this one). An admin filters by name.
        admin = self._is_admin(req)
        found = CallFilter(model=query.get("model") or None, provider=query.get("provider") or None,
                           source=query.get("source") or None, key_name=(query.get("key") or None) if admin else None,
                           key_id=None if admin else req.caller.record.id, status=query.get("status") or None,
                           since=query.get("since") or None, until=query.get("until") or None,
                           search=query.get("q", "").strip() or None)
        try:
            found.where()
        except FilterError as exc:
            raise BadRequestError(str(exc), param="q" if exc.field == "search" else exc.field) from None
        return found

    async def logs(self, req: Any) -> dict[str, Any]:
        self._admin(req)
        query = req.query
        limit = _int(query, "limit", PAGE_SIZE, 1, MAX_PAGE)
        before = _int(query, "before", 0, 0, 2**62) or None
        where = self._filter(req, query)
        none: list[CallSummary] = []
        found = await self._read_log(lambda log: log.summaries(where, limit=limit + 1, before=before), none)
        calls = [summary.to_dict() for summary in found[:limit]]
        return {"calls": calls, "next": calls[-1]["seq"] if len(found) > limit else None}

    async def call(self, req: Any, call_id: str) -> dict[str, Any]:
        self._admin(req)
        if not _CALL_ID.match(call_id):
            raise BadRequestError(f"{call_id!r} is not a call id", param="id")
        found = await self._read_log(lambda log: log.get(call_id), None)
        if found is None:
            raise NotFoundError(f"no call {call_id} in the log", param="id")
        return found.to_dict()

    async def usage(self, req: Any) -> Any:
        """Calls, tokens and spend per time bucket and group; a normal key sees its own only."""
        from ...calllog import BUCKETS, USAGE_BY

        query = req.query
        by = query.get("by", "model")
        bucket = query.get("bucket", "day")
        if by not in USAGE_BY:
            raise BadRequestError(f"by must be one of {', '.join(USAGE_BY)}", param="by")
        if bucket not in BUCKETS:
            raise BadRequestError(f"bucket must be one of {', '.join(BUCKETS)}", param="bucket")
        if not self._is_admin(req) and query.get("key") not in (None, "", req.caller.name):
            raise PermissionDeniedError("a normal gateway key sees only its own usage", param="key")
        where = self._filter(req, query)
        none: list[UsageBucket] = []
        series = await self._read_log(lambda log: log.usage_series(by, bucket, where), none)
        rows = [_usage_view(bucket_row) for bucket_row in series]
        if query.get("format") == "csv":
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=_USAGE_NAMES)
            writer.writeheader()
            writer.writerows(rows)
            return out.getvalue().encode(), "text/csv; charset=utf-8", f"usage-by-{by}.csv"
        totals: dict[str, dict[str, Any]] = {}
        for row in rows:
            total = totals.setdefault(row["group"], {"group": row["group"], **dict.fromkeys(_USAGE_NAMES[2:], 0)})
            for name in _USAGE_NAMES[2:]:
                total[name] += row[name]
        return {"by": by, "bucket": bucket, "series": rows, "totals": sorted(totals.values(), key=lambda t: -t["cost"])}

    # -- gateway keys ----------------------------------------------------------------------

    async def keys(self, req: Any) -> dict[str, Any]:
        self._admin(req)
        await self.services.sync_keys()
        records = await self.services.keys.run(lambda store: store.records())
        return {"keys": [_key_view(r) for r in records]}

    async def create_key(self, req: Any) -> dict[str, Any]:
        self._admin(req)
        body = await req.json(64 * 1024)
        if not isinstance(body, dict):
            raise BadRequestError("send a JSON object: {name, rpm?, tpm?, budget?, models?, admin?}", param="body")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise BadRequestError("name: a non-empty string of at most 100 characters", param="name")
        options: dict[str, Any] = {}
        for field, kind in (("rpm", int), ("tpm", int), ("budget", float)):
            value = body.get(field)
            if value is None or value == "":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (kind is int and value != int(value)):
                raise BadRequestError(f"{field}: a positive {'whole ' if kind is int else ''}number", param=field)
            options[field] = kind(value)
        models = body.get("models") or []
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        if not isinstance(models, list) or not all(isinstance(m, str) and m and "," not in m for m in models):
            raise BadRequestError("models: a list of model names or patterns", param="models")
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise BadRequestError("admin: true or false", param="admin")
        key = await self.services.keys.run(lambda store: store.create(name.strip(), models=models, admin=admin, **options))
        await self.services.sync_keys()
        # The one and only time this secret leaves the server.
        return {"name": name.strip(), "key": key, "admin": admin, "models": models, **options}

    async def revoke_key(self, req: Any, name: str) -> dict[str, Any]:
        self._admin(req)
        from urllib.parse import unquote

        name = unquote(name)
        if not await self.services.keys.run(lambda store: store.revoke(name)):
            raise NotFoundError(f"no live gateway key named {name!r}", param="name")
        await self.services.sync_keys()
        return {"name": name, "revoked": True}

    # -- batches ---------------------------------------------------------------------------

    def _owner(self, req: Any) -> Any:
        from ...batch.files_api import Owner

        caller = req.caller
        return Owner() if caller is None else Owner(caller.record.id, caller.record.admin)

    async def batches(self, req: Any) -> dict[str, Any]:
        self._admin(req)
        api = self.files_api()
        listed = await api.list_batches(limit=_int(req.query, "limit", 50, 1, MAX_PAGE), owner=self._owner(req))
        spends = await api.spends([b["id"] for b in listed["data"]])
        now = time.time()
        return {"batches": [_progress(b, spends.get(b["id"]), now) for b in listed["data"]]}

    async def cancel_batch(self, req: Any, batch_id: str) -> dict[str, Any]:
        self._admin(req)
        _check_batch_id(batch_id)
        return await self.files_api().cancel_batch(batch_id, self._owner(req))

    async def batch_output(self, req: Any, batch_id: str) -> tuple[bytes, str, str]:
        self._admin(req)
        _check_batch_id(batch_id)
        api = self.files_api()
        batch = await api.get_batch(batch_id, self._owner(req))
        file_id = batch.get("output_file_id") or batch.get("error_file_id")
        if not file_id:
            raise NotFoundError(f"batch {batch_id} has no output yet (status {batch['status']})", param="batch_id")
        return await api.file_content(file_id, self._owner(req)), "application/jsonl", f"{batch_id}_output.jsonl"

    async def _job_body(self, req: Any) -> tuple[Any, list[Any]]:
        """The upload and template from the page: ``{filename, content, prompt, model, system?, max_tokens?}``."""
        body = await req.json(self.services.settings.max_body_bytes)
        if not isinstance(body, dict):
            raise BadRequestError("send a JSON object: {filename, content, prompt, model, system?, max_tokens?}", param="body")
        for field in ("filename", "content", "prompt"):
            if not isinstance(body.get(field), str) or not body[field]:
                raise BadRequestError(f"{field}: required, a non-empty string", param=field)
        model = body.get("model") or None
        if model is not None and not isinstance(model, str):
            raise BadRequestError("model: a model name", param="model")
        system = body.get("system") or None
        if system is not None and not isinstance(system, str):
            raise BadRequestError("system: a string", param="system")
        params: dict[str, Any] = {}
        max_tokens = body.get("max_tokens")
        if max_tokens not in (None, ""):
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
                raise BadRequestError("max_tokens: a positive whole number", param="max_tokens")
            params["max_tokens"] = max_tokens
        suffix = Path(body["filename"]).suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise BadRequestError("filename: upload a .csv or .jsonl file", param="filename")
        from ...batch.spec import JobSpec

        spec = JobSpec(job_id="console", model=model, prompt=body["prompt"], system=system, params=params,
                       input_format=suffix[1:])
        rows = await asyncio.to_thread(_read_rows, body["content"], spec.input_format)
        if model is not None:
            # An unknown model is the page's mistake (404 naming the models), not N unrenderable rows.
            target = self.services.router.targets(model)[0]
            if req.caller is not None:
                self.services.keys.check_model(req.caller, model, target.name)
        return spec, rows

    async def estimate_batch(self, req: Any) -> dict[str, Any]:
        self._admin(req)
        spec, rows = await self._job_body(req)
        from ...batch import estimate

        return await asyncio.to_thread(_estimate, estimate, spec, rows, self._batches_door().client())

    async def start_batch(self, req: Any) -> dict[str, Any]:
        """Render each row with the template into an OpenAI batch line, then run it as any
        Files/Batches job (so it lists, cancels and downloads like one)."""
        self._admin(req)
        spec, rows = await self._job_body(req)
        api = self.files_api()
        lines = await asyncio.to_thread(_batch_lines, spec, rows, self._batches_door().client())
        owner = self._owner(req)
        if req.caller is not None:
            refuse_metered_batches(req.caller)
        uploaded = await api.upload_file("console-batch.jsonl", lines, "batch", owner)
        return await api.create_batch({"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                                       "completion_window": "24h", "metadata": {"source": "console"}}, owner)


def _read_rows(content: str, fmt: str) -> list[Any]:
    from ...batch.readers import read_rows

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload.{fmt}"
        path.write_text(content, encoding="utf-8")
        try:
            rows = []
            for row in read_rows(path, fmt):
                rows.append(row)
                if len(rows) > MAX_UPLOAD_ROWS:
                    raise BadRequestError(f"the upload has over {MAX_UPLOAD_ROWS} rows; split it", param="content")
        except (ValueError, JSONDecodeError, UnicodeError) as exc:
            raise BadRequestError(f"content: cannot read it as {fmt}: {exc}", param="content") from None
    if not rows:
        raise BadRequestError("content: the upload has no rows", param="content")
    return rows


def _estimate(estimate: Callable[..., dict[str, Any]], spec: Any, rows: list[Any], client: Any) -> dict[str, Any]:
    from ...batch.spec import Renderer

    renderer = Renderer(spec, client)
    try:
        # The first row shows the template works, and what a rendered prompt looks like.
        sample = renderer.render_text(rows[0][1])
        result = estimate(spec, rows, client=client)
    except ModelportError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRequestError(f"cannot build the requests: {exc}") from None
    return {**result, "sample_prompt": sample}


def _batch_lines(spec: Any, rows: list[Any], client: Any) -> bytes:
    from ...batch.spec import Renderer

    renderer = Renderer(spec, client)
    lines = []
    for i, (_, data) in enumerate(rows):
        messages = ([{"role": "system", "content": spec.system}] if spec.system else []) + [{"role": "user", "content": renderer.render_text(data)}]
        body: dict[str, Any] = {"model": spec.model or "default", "messages": messages, **spec.params}
        lines.append(dumps({"custom_id": f"row-{i + 1}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
    return b"\n".join(lines) + b"\n"


def _progress(batch: dict[str, Any], spend: Spend | None, now: float) -> dict[str, Any]:
    counts = batch.get("request_counts") or {}
    total, completed, failed = counts.get("total", 0), counts.get("completed", 0), counts.get("failed", 0)
    done = completed + failed
    started = batch.get("in_progress_at")
    ended = batch.get("completed_at") or batch.get("failed_at") or batch.get("cancelled_at")
    elapsed = ((ended or now) - started) if started else 0
    rate = done / elapsed if elapsed > 0 and done else None
    eta = (total - done) / rate if rate and total > done and not ended else None
    return {"id": batch["id"], "status": batch["status"], "created_at": batch["created_at"], "total": total, "done": done,
            "failed": failed, "rate": rate, "eta_seconds": eta, "cost": spend.cost if spend else 0.0,
            "unknown_cost_rows": spend.unknown_cost_rows if spend else 0,
            "output_file_id": batch.get("output_file_id"), "error_file_id": batch.get("error_file_id"),
            "errors": (batch.get("errors") or {}).get("data") or []}


def _usage_view(bucket: UsageBucket) -> dict[str, Any]:
    usage = bucket.usage
    return dict(zip(_USAGE_NAMES, (bucket.time, usage.group, usage.calls, usage.errors, usage.input_tokens, usage.output_tokens,
                                   round(usage.cost, 9), usage.unpriced_calls, usage.cached_tokens, usage.cache_saved)))


def _key_view(record: Any) -> dict[str, Any]:
    """A key row without its salt and hash."""
    limits = record.limits
    return {"id": record.id, "name": record.name, "admin": record.admin, "models": list(record.models), "rpm": limits.rpm,
            "tpm": limits.tpm, "budget": limits.budget, "created": record.created, "expires": record.expires,
            "requests": record.requests, "input_tokens": record.input_tokens, "output_tokens": record.output_tokens,
            "cost": record.cost, "last_used": record.last_used}


def _check_batch_id(batch_id: str) -> None:
    if not _BATCH_ID.match(batch_id):
        raise BadRequestError(f"{batch_id!r} is not a batch id", param="batch_id")


def _int(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequestError(f"{name}: a whole number", param=name) from None
    if not low <= number <= high:
        raise BadRequestError(f"{name}: between {low} and {high}", param=name)
    return number
