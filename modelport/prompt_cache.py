"""Automatic prompt-cache breakpoints: where caching certainly pays, on requests that set none.

Providers that cache only where the request says so (Anthropic's ``cache_control``) declare
how many breakpoints one request may carry as their dialect's ``CACHE_BREAKPOINTS``; the
others cache prefixes on their own or not at all, and get nothing placed. What is stable
from one call to the next is the tool list, the system prompt and the conversation before
its newest turn, so those ends get the breakpoints; a request that carries any marker of
its own is the caller's decision and is left as it is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .types import ChatRequest, ImagePart, Message, TextPart


def has_breakpoints(request: ChatRequest) -> bool:
    """Whether the request carries any cache marker of its own."""
    if request.cache or any(t.cache for t in request.tools):
        return True
    return any(m.cache or any(getattr(p, "cache", False) for p in m.content) or any(c.cache for c in m.tool_calls)
               for m in request.messages)


def wanted(request: ChatRequest, provider_default: bool) -> bool:
    """Whether breakpoints are to be placed: the request's own choice, else the provider's."""
    return request.auto_cache if request.auto_cache is not None else provider_default


def may_write_cache(request: ChatRequest, provider_default: bool) -> bool:
    """Whether the request may write to a provider's prompt cache (billed above the input
    rate): it carries breakpoints, or gets them placed."""
    return wanted(request, provider_default) or has_breakpoints(request)


def for_upstream(request: ChatRequest, dialect: Any, provider_default: bool) -> ChatRequest:
    """``request`` as it goes to an upstream of ``dialect``: with breakpoints placed when
    they are wanted, the dialect takes them and the request has none."""
    limit = breakpoints_for(dialect)
    if not limit or not wanted(request, provider_default) or has_breakpoints(request):
        return request
    return mark_stable_prefix(request, limit)


def mark_stable_prefix(request: ChatRequest, limit: int, *, turns: bool = True) -> ChatRequest:
    """A copy with at most ``limit`` breakpoints: on the last tool, the last system part and,
    with ``turns``, the end of the conversation before its newest message (the caller's
    request is kept). A batch passes ``turns=False``: its rows share no conversation."""
    placed = 0
    tools = list(request.tools)
    if tools and placed < limit:
        tools[-1] = replace(tools[-1], cache=True)
        placed += 1
    messages = list(request.messages)
    systems = [i for i, m in enumerate(messages) if m.role == "system" and _last_markable(m) is not None]
    if systems and placed < limit:
        messages[systems[-1]] = _mark_end(messages[systems[-1]])
        placed += 1
    conversation = [i for i, m in enumerate(messages) if m.role != "system"]
    if turns and len(conversation) > 1 and placed < limit:
        # The newest message changes on every call; everything before it was sent before.
        messages[conversation[-2]] = _mark_end(messages[conversation[-2]])
    return replace(request, tools=tools, messages=messages)


def breakpoints_for(dialect: Any) -> int:
    """How many breakpoints a request in ``dialect`` may carry; 0: it takes none."""
    return getattr(dialect, "CACHE_BREAKPOINTS", 0)


def _last_markable(message: Message) -> int | None:
    for i in range(len(message.content) - 1, -1, -1):
        if isinstance(message.content[i], (TextPart, ImagePart)):
            return i
    return None


def _mark_end(message: Message) -> Message:
    """The message with a breakpoint on its last item: a tool result as a whole, else the
    last tool call, else the last text or image part; unchanged when it has none of them."""
    if message.role == "tool":
        return replace(message, cache=True)
    if message.tool_calls:
        calls = list(message.tool_calls)
        calls[-1] = replace(calls[-1], cache=True)
        return replace(message, tool_calls=calls)
    i = _last_markable(message)
    if i is None:
        return message
    content = list(message.content)
    part = content[i]
    assert isinstance(part, (TextPart, ImagePart))  # what _last_markable finds
    content[i] = replace(part, cache=True)
    return replace(message, content=content)
