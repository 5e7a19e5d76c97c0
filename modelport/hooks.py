"""Hooks: code outside the call pipeline that sees, changes or refuses model calls.

A hook is any object with some of these methods (each optional)::

    async def before_request(self, call: CallInfo, request: ChatRequest) -> ChatRequest | None
        # before the request is admitted and sent upstream: return a changed request (or
        # None to keep it); raise a ModelportError (e.g. PermissionDeniedError) to refuse it
    async def after_response(self, call: CallInfo, request: ChatRequest, response: ChatResponse) -> ChatResponse | None
        # a whole answer, before the caller and the call log see it
    async def on_error(self, call: CallInfo, request: ChatRequest, error: BaseException) -> None
        # the call failed (after fallbacks): observe only
    def on_stream_event(self, call: CallInfo, event: StreamEvent) -> StreamEvent | None
        # each streamed event before it is encoded: return a changed event, or None to keep it
    def log_view(self, request: ChatRequest, response: ChatResponse | None) -> tuple[ChatRequest, ChatResponse | None]
        # what the call log stores of this call (the caller's answer is not affected)

Hooks come from the config (``[log] redact = true`` turns on ``RedactHook``) and from
plugins (the ``modelport.hooks`` entry-point group: a class or factory, called with no
arguments). ``Hooks`` sorts them by hook point once, so a point no hook uses costs one truth test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Protocol

from .types import ChatRequest, ChatResponse, Message, StreamEvent, TextPart


@dataclass(slots=True)
class CallInfo:
    """What a hook may know of the call: who made it and where it came from."""

    request_id: str
    key_name: str | None
    source: str  # "gateway", "batch", "sdk", "cli"


class BeforeRequest(Protocol):
    async def before_request(self, call: CallInfo, request: ChatRequest) -> ChatRequest | None: ...


class AfterResponse(Protocol):
    async def after_response(self, call: CallInfo, request: ChatRequest, response: ChatResponse) -> ChatResponse | None: ...


class OnError(Protocol):
    async def on_error(self, call: CallInfo, request: ChatRequest, error: BaseException) -> None: ...


class OnStreamEvent(Protocol):
    def on_stream_event(self, call: CallInfo, event: StreamEvent) -> StreamEvent | None: ...


class LogView(Protocol):
    def log_view(self, request: ChatRequest, response: ChatResponse | None) -> tuple[ChatRequest, ChatResponse | None]: ...


class Hooks:
    """The hooks of one pipeline, grouped by the point each serves."""

    __slots__ = ("all", "before", "after", "errors", "events", "log_views")

    def __init__(self, hooks: Iterable[object] = ()) -> None:
        self.all = tuple(hooks)
        self.before: tuple[BeforeRequest, ...] = tuple(h for h in self.all if hasattr(h, "before_request"))
        self.after: tuple[AfterResponse, ...] = tuple(h for h in self.all if hasattr(h, "after_response"))
        self.errors: tuple[OnError, ...] = tuple(h for h in self.all if hasattr(h, "on_error"))
        self.events: tuple[OnStreamEvent, ...] = tuple(h for h in self.all if hasattr(h, "on_stream_event"))
        self.log_views: tuple[LogView, ...] = tuple(h for h in self.all if hasattr(h, "log_view"))

    async def before_request(self, call: CallInfo, request: ChatRequest) -> ChatRequest:
        for hook in self.before:
            request = await hook.before_request(call, request) or request
        return request

    async def after_response(self, call: CallInfo, request: ChatRequest, response: ChatResponse) -> ChatResponse:
        for hook in self.after:
            response = await hook.after_response(call, request, response) or response
        return response

    async def on_error(self, call: CallInfo, request: ChatRequest, error: BaseException) -> None:
        for hook in self.errors:
            await hook.on_error(call, request, error)

    def on_stream_event(self, call: CallInfo, event: StreamEvent) -> StreamEvent:
        for hook in self.events:
            event = hook.on_stream_event(call, event) or event
        return event

    def log_view(self, request: ChatRequest, response: ChatResponse | None) -> tuple[ChatRequest, ChatResponse | None]:
        for hook in self.log_views:
            request, response = hook.log_view(request, response)
        return request, response


def configured_hooks(config: dict[str, Any]) -> list[object]:
    """The hooks a config turns on, then every hook plugin."""
    from .plugins import hooks as plugin_hooks

    found: list[object] = []
    if (config.get("log") or {}).get("redact"):
        found.append(RedactHook())
    found.extend(factory() for factory in plugin_hooks().values())
    return found


# -- the built-in redaction hook ------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# International or North American numbers written with separators: +33 6 12 34 56 78,
# (415) 555-0100, 415.555.0100. Seven digits at least, so years and counts stay; ISO dates
# and IPv4 addresses are not numbers to call.
_PHONE = re.compile(r"(?<![\w.:-])(?!\d{4}-\d{2}-\d{2}\b)(?!\d{1,3}(?:\.\d{1,3}){3}\b)"
                    r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?![\w])")
# Provider and gateway keys: sk-..., sk-ant-..., gsk_..., AIza..., mpk_..., xai-..., hf_...
_API_KEY = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{16,}|sk_[A-Za-z0-9_-]{16,}|gsk_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{30,}"
                      r"|mpk_[A-Za-z0-9_]{16,}|xai-[A-Za-z0-9]{16,}|hf_[A-Za-z0-9]{16,}|ghp_[A-Za-z0-9]{20,})")


def redact_text(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers and API-key-shaped strings masked."""
    text = _API_KEY.sub("[key]", text)
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub(lambda m: "[phone]" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)


class RedactHook:
    """Masks personal data and secrets in what the call log stores (``[log] redact = true``);
    the model and the caller see the call unchanged."""

    def log_view(self, request: ChatRequest, response: ChatResponse | None) -> tuple[ChatRequest, ChatResponse | None]:
        masked = replace(request, messages=[_redact_message(m) for m in request.messages])
        if response is None:
            return masked, None
        return masked, replace(response, message=_redact_message(response.message), raw=None)


def _redact_message(message: Message) -> Message:
    content = [TextPart(redact_text(p.text)) if isinstance(p, TextPart) else p for p in message.content]
    calls = [replace(c, arguments=redact_text(c.arguments)) for c in message.tool_calls]
    return replace(message, content=content, tool_calls=calls)
