"""A fake Anthropic Messages upstream on the loopback interface.

Written by hand from Anthropic's Messages wire format, deliberately without modelport's dialect, so a mistake
in the dialect cannot hide behind the same mistake in the fake.

Default behaviour, derived from the request:

* the answer is ``"echo: <text of the last user message>"``; when ``tool_choice`` forces a
  tool (``any`` or ``tool``) the answer is one ``tool_use`` of that tool (the first tool for
  ``any``) with input ``{"echo": "<that text>"}``.
* usage: input tokens = words in all texts, output tokens = words answered.
* prompt caching as the Messages API describes it: the prompt is read in Anthropic's order
  (tools, system, messages, block by block; tools, images and tool calls weigh no words) and each
  ``cache_control`` breakpoint (a block's, or the top-level one on the last block) names the
  prefix up to it. The longest prefix written before that ends at a breakpoint or up to
  ``LOOKBACK`` blocks before one is a cache read; the rest up to the
  last breakpoint is a cache write (``cache_creation_input_tokens``); ``input_tokens`` is
  what is left. A scripted ``Answer.cached_tokens`` overrides it.
* streams: every event has its ``event:`` line; text goes out word by word, tool input in
  two ``input_json_delta`` fragments, with a ``ping`` after the first block starts.

``script(Answer(...))`` queues exact answers (``Answer`` is shared with the OpenAI fake;
``finish_reason`` there is Anthropic's own ``stop_reason``, and reasoning becomes a signed
thinking block). ``anthropic_error``, ``rate_limited``, ``overloaded`` and ``error_mid_stream``
build faults in Anthropic's error form.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from typing import Any

from tests.fakes.openai_upstream import Answer
from tests.fakes.server import Fault, FakeServer, Recorded, Reply, http_error

# How many blocks before a breakpoint the cache is searched for an earlier prefix.
LOOKBACK = 20

__all__ = ["Answer", "AnthropicUpstream", "anthropic_error", "error_mid_stream", "overloaded", "rate_limited"]


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_fake01"}


def anthropic_error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> Fault:
    return http_error(status, _error_body(error_type, message), {"request-id": "req_fake01", **(headers or {})})


def rate_limited(retry_after: int = 1) -> Fault:
    """Anthropic's 429: the wait in whole seconds in ``retry-after``."""
    return anthropic_error(429, "rate_limit_error", "Number of requests has exceeded your rate limit.", {"retry-after": str(retry_after)})


def overloaded() -> Fault:
    return anthropic_error(529, "overloaded_error", "Overloaded")


def error_mid_stream(error_type: str = "overloaded_error", message: str = "Overloaded") -> Fault:
    """A stream that starts (status 200) and then reports an error event."""
    start = {"type": "message_start", "message": _message("msg_fakeerr", "claude-fake", [], None, {"input_tokens": 1, "output_tokens": 1})}
    body = _event(start) + _event({"type": "error", "error": {"type": error_type, "message": message}})
    return Fault("reply", Reply(200, body, {"content-type": "text/event-stream"}))


def _event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {_json_text(payload)}\n\n".encode()


def _message(message_id: str, model: str, content: list, stop_reason: str | None, usage: dict[str, Any]) -> dict[str, Any]:
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content, "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}


class AnthropicUpstream(FakeServer):
    """``url`` (no ``/v1``) is what an Anthropic client is pointed at."""

    def __init__(self, api_key: str | None = None, models: tuple[str, ...] = ("claude-fake",), latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.api_key = api_key
        self.models = models
        self._answers: deque[Answer] = deque()
        self.cached_prefixes: set[str] = set()
        self.route("POST", "/v1/messages", self._authorised(self._messages))
        self.route("POST", "/v1/messages/count_tokens", self._authorised(self._count_tokens))
        self.route("GET", "/v1/models", self._authorised(self._list_models))

    @property
    def base_url(self) -> str:
        return self.url

    def script(self, *answers: Answer | str) -> None:
        self._answers.extend(Answer(text=a) if isinstance(a, str) else a for a in answers)

    def _authorised(self, handler):
        def guarded(request: Recorded) -> Reply:
            # SDK 0.x sends x-api-key, SDK 2.x sends Authorization: Bearer.
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
            if self.api_key is not None and given != self.api_key:
                return Reply.json(_error_body("authentication_error", "invalid x-api-key"), 401)
            return handler(request)

        return guarded

    def _messages(self, request: Recorded) -> Reply:
        body = request.body
        if not isinstance(body, dict):
            return Reply.json(_error_body("invalid_request_error", "request body is not valid JSON"), 400)
        for required in ("model", "messages", "max_tokens"):
            if required not in body:
                return Reply.json(_error_body("invalid_request_error", f"{required}: Field required"), 400)
        answer = self._answers.popleft() if self._answers else _default_answer(body)
        message = _completion(body, answer, self._cache_usage(body))
        if body.get("stream"):
            return Reply.stream(_stream(message))
        return Reply.json(message, headers={"request-id": "req_fake01"})

    def _cache_usage(self, body: dict[str, Any]) -> tuple[int, int]:
        """(words read from the cache, words written to it) for this request; remembers
        every marked prefix it writes."""
        blocks = _prompt_blocks(body)
        marks = [i for i, (block, _) in enumerate(blocks) if block.get("cache_control")]
        if body.get("cache_control") and blocks:
            marks.append(len(blocks) - 1)
        if not marks:
            return 0, 0
        def key(i: int) -> str:
            return _prefix_key(body["model"], blocks[: i + 1])

        def upto(i: int) -> int:
            return sum(words for _, words in blocks[: i + 1])

        # A breakpoint also finds a prefix cached at any of the LOOKBACK blocks before it, so
        # a conversation whose marker moved on by a turn reads what the last turn wrote.
        candidates = {j for i in marks for j in range(max(0, i - LOOKBACK), i + 1)}
        hits = [j for j in candidates if key(j) in self.cached_prefixes]
        read = upto(max(hits)) if hits else 0
        written = max(0, upto(max(marks)) - read)
        self.cached_prefixes.update(key(i) for i in marks)
        return read, written

    def _count_tokens(self, request: Recorded) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        return Reply.json({"input_tokens": _prompt_words(body)})

    def _list_models(self, request: Recorded) -> Reply:
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"} for m in self.models]
        return Reply.json({"data": data, "has_more": False, "first_id": self.models[0], "last_id": self.models[-1]})


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [t for b in content or () if isinstance(b, dict) for t in _block_texts(b)]


def _plain_texts(content: Any) -> list[str]:
    """The caller's own words in a turn: its text blocks, not the tool results it carries."""
    if isinstance(content, str):
        return [content]
    return [b.get("text", "") for b in content or () if isinstance(b, dict) and b.get("type") == "text"]


def _block_texts(block: dict[str, Any]) -> list[str]:
    """The text a block puts in the prompt: its own, or a tool result's content."""
    if block.get("type") == "text":
        return [block.get("text", "")]
    if block.get("type") == "tool_result":
        return _texts(block.get("content"))
    return []


def _prompt_blocks(body: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """The prompt as (block, words) in the order a cache prefix runs: tools, system, messages."""
    def blocks(content: Any) -> list[dict[str, Any]]:
        return [{"type": "text", "text": content}] if isinstance(content, str) else [b for b in content or () if isinstance(b, dict)]

    found = [(tool, 0) for tool in body.get("tools") or () if isinstance(tool, dict)]
    for block in blocks(body.get("system")) + [b for m in body.get("messages") or () for b in blocks(m.get("content"))]:
        found.append((block, sum(len(t.split()) for t in _block_texts(block))))
    return found


def _prefix_key(model: str, blocks: list[tuple[dict[str, Any], int]]) -> str:
    """What a cached prefix is known by: the model and the blocks, breakpoints aside."""
    plain = [{k: v for k, v in block.items() if k != "cache_control"} for block, _ in blocks]
    return hashlib.sha256(_json_text([model, plain]).encode()).hexdigest()


def _prompt_words(body: dict[str, Any]) -> int:
    texts = _texts(body.get("system")) + [t for m in body.get("messages") or () for t in _texts(m.get("content"))]
    return sum(len(t.split()) for t in texts)


def _default_answer(body: dict[str, Any]) -> Answer:
    users = [" ".join(_plain_texts(m.get("content"))) for m in body["messages"] if m.get("role") == "user"]
    last = users[-1] if users else ""
    choice, tools = body.get("tool_choice") or {}, body.get("tools") or []
    forced = choice.get("name") if choice.get("type") == "tool" else (tools[0]["name"] if choice.get("type") == "any" and tools else None)
    if forced:
        return Answer(tool_calls=[("toolu_fake0", forced, _json_text({"echo": last}))])
    return Answer(text=f"echo: {last}")


def _completion(body: dict[str, Any], answer: Answer, cache: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.reasoning:
        content.append({"type": "thinking", "thinking": answer.reasoning, "signature": "fake-signature"})
    if answer.text:
        content.append({"type": "text", "text": answer.text, "citations": None})
    for call_id, name, arguments in answer.tool_calls:
        content.append({"type": "tool_use", "id": call_id, "name": name, "input": json.loads(arguments)})
    prompt = answer.prompt_tokens if answer.prompt_tokens is not None else _prompt_words(body)
    output = answer.completion_tokens if answer.completion_tokens is not None else len((answer.text or "").split()) + len(answer.tool_calls)
    read, written = (answer.cached_tokens, 0) if answer.cached_tokens else cache
    usage = {
        "input_tokens": prompt - read - written,  # Anthropic's input excludes cache reads and writes
        "output_tokens": output,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "cache_creation": None,
        "server_tool_use": None,
        "service_tier": "standard",
    }
    stop = answer.finish_reason or ("tool_use" if answer.tool_calls else "end_turn")
    # the same request streamed or not gets the same id, so tests can compare the two
    same = {k: v for k, v in body.items() if k != "stream"}
    message_id = "msg_fake" + hashlib.sha256(_json_text(same).encode()).hexdigest()[:12]
    return _message(message_id, body["model"], content, stop, usage)


def _stream(message: dict[str, Any]) -> list[bytes]:
    usage = message["usage"]
    start_usage = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")} | {"output_tokens": 1}
    chunks = [_event({"type": "message_start", "message": {**message, "content": [], "stop_reason": None, "usage": start_usage}})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        empty = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {**block, "input": {}}
        chunks.append(_event({"type": "content_block_start", "index": index, "content_block": empty}))
        if index == 0:
            chunks.append(_event({"type": "ping"}))
        if kind == "text":
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                piece = word if i == len(words) - 1 else word + " "
                chunks.append(_event({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}))
        elif kind == "thinking":
            chunks.append(_event({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": block["thinking"]}}))
            chunks.append(_event({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": block["signature"]}}))
        else:
            arguments = _json_text(block["input"])
            half = len(arguments) // 2
            for piece in ("", arguments[:half], arguments[half:]):
                chunks.append(_event({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}))
        chunks.append(_event({"type": "content_block_stop", "index": index}))
    delta = {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}, "usage": {"output_tokens": usage["output_tokens"]}}
    chunks.append(_event(delta))
    chunks.append(_event({"type": "message_stop"}))
    return chunks
