"""A fake OpenAI-compatible upstream on the loopback interface.

Written by hand from OpenAI's chat-completions wire format, deliberately without modelport's own dialect, so a
mistake in the dialect cannot hide behind the same mistake in the fake.

Default behaviour, derived from the request so tests can see it was understood:

* chat: the answer is ``"echo: <text of the last user message>"``; when ``tool_choice``
  forces a tool (``required`` or a named function) the answer is one call to that tool
  (the first tool for ``required``) with arguments ``{"echo": "<that text>"}``.
* usage: prompt tokens = words in all message texts, completion tokens = words answered.
* streams: the text goes out word by word, tool arguments in two fragments, and the usage
  chunk only when ``stream_options.include_usage`` is true, exactly as OpenAI does.
* ``send_usage=False`` plays a server that never reports usage, streamed or not.
* embeddings: a deterministic vector per input (``dimensions`` long, default 8).

``script(Answer(...))`` queues exact answers for the next chat calls; ``openai_error(...)``
builds faults with OpenAI's error body.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import Fault, FakeServer, Recorded, Reply, http_error

try:
    import orjson

    def _json_text(value: Any) -> str:
        return orjson.dumps(value).decode()

except ImportError:  # pragma: no cover
    import json

    def _json_text(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))


CREATED = 1767225600


@dataclass
class Answer:
    """One scripted chat answer. ``tool_calls`` holds ``(id, name, arguments JSON text)``."""

    text: str | None = None
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)
    finish_reason: str | None = None
    reasoning: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0


def openai_error(status: int, message: str, type: str, code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None) -> Fault:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return http_error(status, body, headers)


def rate_limited(retry_after: float = 1.0) -> Fault:
    return openai_error(
        429, f"Rate limit reached for requests. Please try again in {retry_after}s.", "requests", "rate_limit_exceeded",
        headers={"retry-after": str(retry_after)},
    )


class OpenAIUpstream(FakeServer):
    """``base_url`` (with ``/v1``) is what an OpenAI client is pointed at."""

    def __init__(self, api_key: str | None = None, models: tuple[str, ...] = ("gpt-fake", "gpt-fake-mini"), latency: float = 0.0,
                 send_usage: bool = True) -> None:
        super().__init__(latency=latency)
        self.api_key = api_key
        self.send_usage = send_usage
        self.models = models
        self._answers: deque[Answer] = deque()
        self.route("POST", "/v1/chat/completions", self._authorised(self._chat))
        self.route("GET", "/v1/models", self._authorised(self._list_models))
        self.route("GET", "/v1/models/(?P<model>.+)", self._authorised(self._get_model))
        self.route("POST", "/v1/embeddings", self._authorised(self._embeddings))

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def script(self, *answers: Answer | str) -> None:
        self._answers.extend(Answer(text=a) if isinstance(a, str) else a for a in answers)

    def _authorised(self, handler):
        def guarded(request: Recorded) -> Reply:
            if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
                return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            return handler(request)

        return guarded

    # -- chat ------------------------------------------------------------------------------

    def _chat(self, request: Recorded) -> Reply:
        body = request.body
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        for required in ("model", "messages"):
            if required not in body:
                return _error(400, f"Missing required parameter: '{required}'.", "invalid_request_error", "missing_required_parameter", required)
        answer = self._answers.popleft() if self._answers else _default_answer(body)
        completion = _completion(body, answer)
        if body.get("stream"):
            options = body.get("stream_options") or {}
            return Reply.stream(_stream(completion, answer, self.send_usage and options.get("include_usage") is True))
        if not self.send_usage:
            del completion["usage"]
        return Reply.json(completion)

    # -- models and embeddings ---------------------------------------------------------------

    def _list_models(self, request: Recorded) -> Reply:
        return Reply.json({"object": "list", "data": [_model(m) for m in self.models]})

    def _get_model(self, request: Recorded) -> Reply:
        model = request.params["model"]
        if model not in self.models:
            return _error(404, f"The model '{model}' does not exist", "invalid_request_error", "model_not_found", "model")
        return Reply.json(_model(model))

    def _embeddings(self, request: Recorded) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "'input' is required", "invalid_request_error", "missing_required_parameter", "input")
        dimensions = body.get("dimensions") or 8
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = fake_vector(str(text), dimensions)
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(str(t).split()) for t in inputs)
        return Reply.json({"object": "list", "data": data, "model": body.get("model"), "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def fake_vector(text: str, dimensions: int = 8) -> list[float]:
    """The embedding the fake gives ``text``: float32-exact values in [-1, 1)."""
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dimensions:
        digest += hashlib.sha256(digest).digest()
    return [(b - 128) / 128 for b in digest[:dimensions]]


def _error(status: int, message: str, type: str, code: str | None = None, param: str | None = None) -> Reply:
    return Reply.json({"error": {"message": message, "type": type, "param": param, "code": code}}, status)


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "fake"}


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def _default_answer(body: dict[str, Any]) -> Answer:
    user_texts = [_message_text(m) for m in body["messages"] if m.get("role") == "user"]
    last = user_texts[-1] if user_texts else ""
    forced = _forced_tool(body)
    if forced:
        return Answer(tool_calls=[("call_fake0", forced, _json_text({"echo": last}))])
    return Answer(text=f"echo: {last}")


def _forced_tool(body: dict[str, Any]) -> str | None:
    choice, tools = body.get("tool_choice"), body.get("tools") or []
    if isinstance(choice, dict):
        return (choice.get("function") or {}).get("name")
    if choice == "required" and tools:
        return tools[0]["function"]["name"]
    return None


def _completion(body: dict[str, Any], answer: Answer) -> dict[str, Any]:
    prompt = answer.prompt_tokens
    if prompt is None:
        prompt = sum(len(_message_text(m).split()) for m in body["messages"])
    completion = answer.completion_tokens
    if completion is None:
        completion = len((answer.text or "").split()) + len(answer.tool_calls)
    message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in answer.tool_calls
        ]
    return {
        "id": "chatcmpl-fake" + hashlib.sha256(_json_text(body).encode()).hexdigest()[:12],
        "object": "chat.completion",
        "created": CREATED,
        "model": body["model"],
        "choices": [
            {"index": 0, "message": message, "logprobs": None,
             "finish_reason": answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop")}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": answer.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": answer.reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _stream(completion: dict[str, Any], answer: Answer, include_usage: bool) -> list[bytes]:
    head = {k: completion[k] for k in ("id", "created", "model", "service_tier", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            payload["usage"] = None
        return b"data: " + _json_text(payload).encode() + b"\n\n"

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    if answer.reasoning:
        chunks.append(chunk({"reasoning_content": answer.reasoning}))
    words = (answer.text or "").split(" ")
    for i, word in enumerate(words):
        piece = word if i == len(words) - 1 else word + " "
        if piece:
            chunks.append(chunk({"content": piece}))
    for index, (call_id, name, arguments) in enumerate(answer.tool_calls):
        half = len(arguments) // 2
        chunks.append(chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                             "function": {"name": name, "arguments": arguments[:half]}}]}))
        chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]}))
    chunks.append(chunk({}, completion["choices"][0]["finish_reason"]))
    if include_usage:
        chunks.append(b"data: " + _json_text({**head, "choices": [], "usage": completion["usage"]}).encode() + b"\n\n")
    chunks.append(b"data: [DONE]\n\n")
    return chunks
