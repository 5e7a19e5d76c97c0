"""A fake Ollama server (the native API) on the loopback interface.

Written by hand from Ollama's OpenAPI description (shared/specs/ollama/openapi.yaml, which
the contract tests read beside the repo) and its server's behaviour, deliberately
without modelport's own dialect, so a mistake in the dialect cannot hide behind the same
mistake in the fake. It checks what the spec says a request must be and answers 400 with
Ollama's ``{"error": ...}`` otherwise, so a test sees a malformed request fail.

Default behaviour, derived from the request so tests can see it was understood:

* chat: the answer is ``"echo: <text of the last user message>"``; when ``tools`` are given
  and the last message is the user's, the answer is one call to the first tool with
  arguments ``{"echo": "<that text>"}``.
* ``options.num_predict`` = n cuts the answer to n words with ``done_reason: "length"``.
* counts: prompt_eval_count = words in all message texts, eval_count = words answered.
* ``stream`` defaults to true (as on Ollama): NDJSON, the text word by word, tool calls whole
  in one line, then the ``done`` line with counts and durations.
* an unknown model (not in ``models``) is a 404 ``{"error": "model 'x' not found"}``.
* embed: a deterministic vector per input (8 long).

``script(OllamaAnswer(...))`` queues exact answers for the next chat calls.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Reply

try:
    import orjson

    def _line(value: Any) -> bytes:
        return orjson.dumps(value) + b"\n"

except ImportError:  # pragma: no cover
    import json

    def _line(value: Any) -> bytes:
        return json.dumps(value).encode() + b"\n"


CREATED_AT = "2026-03-01T10:00:00.1Z"
_ROLES = ("system", "user", "assistant", "tool")
# ModelOptions fields the spec types (additionalProperties: true allows others).
_OPTION_TYPES = {"seed": int, "temperature": (int, float), "top_k": int, "top_p": (int, float), "min_p": (int, float),
                 "num_ctx": int, "num_predict": int}


@dataclass
class OllamaAnswer:
    """One scripted answer. ``tool_calls`` holds ``(name, arguments object)``; ``error``
    makes a stream end with an ``{"error": ...}`` line after the first word."""

    text: str = ""
    thinking: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    done_reason: str = "stop"
    error: str | None = None


def fake_vector(text: str, dimensions: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [(b - 128) / 128 for b in digest[:dimensions]]


def _error(status: int, message: str) -> Reply:
    return Reply.json({"error": message}, status)


class OllamaUpstream(FakeServer):
    """``base_url`` (no ``/api``, no ``/v1``) is what a native Ollama client is pointed at."""

    def __init__(self, models: tuple[str, ...] = ("llama3.2:latest", "llama3.2", "qwen3:8b", "nomic-embed-text")) -> None:
        super().__init__()
        self.models = models
        self._answers: deque[OllamaAnswer] = deque()
        self.route("POST", "/api/chat", self._chat)
        self.route("POST", "/api/embed", self._embed)
        self.route("GET", "/api/tags", self._tags)
        self.route("GET", "/api/version", lambda r: Reply.json({"version": "0.12.0"}))

    @property
    def base_url(self) -> str:
        return self.url

    def script(self, *answers: OllamaAnswer | str) -> None:
        self._answers.extend(OllamaAnswer(text=a) if isinstance(a, str) else a for a in answers)

    # -- request checks, from the spec ---------------------------------------------------------

    def _check_model(self, body: dict[str, Any]) -> Reply | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "model is required")
        if model not in self.models:
            return _error(404, f"model '{model}' not found")
        return None

    @staticmethod
    def _check_chat(body: dict[str, Any]) -> str | None:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return "messages must be an array"
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES or not isinstance(message.get("content"), str):
                return f"messages[{i}] needs a role ({', '.join(_ROLES)}) and string content"
            for image in message.get("images") or ():
                if not isinstance(image, str) or image.startswith("data:"):
                    return f"messages[{i}].images must be raw base64 strings"
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    return f"messages[{i}].tool_calls need function.name"
                if not isinstance(function.get("arguments", {}), dict):
                    return f"messages[{i}].tool_calls function.arguments must be an object"
        for tool in body.get("tools") or ():
            if tool.get("type") != "function" or not isinstance(tool.get("function", {}).get("parameters"), dict):
                return "tools need type function and function.parameters"
        fmt = body.get("format")
        if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
            return 'format must be "json" or a JSON schema object'
        think = body.get("think")
        if think is not None and not isinstance(think, bool) and think not in ("high", "medium", "low", "max"):
            return "think must be a boolean or high, medium, low, max"
        options = body.get("options", {})
        if not isinstance(options, dict):
            return "options must be an object"
        for key, kind in _OPTION_TYPES.items():
            value = options.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                return f"options.{key} has the wrong type"
        stop = options.get("stop")
        if stop is not None and not isinstance(stop, (str, list)):
            return "options.stop must be a string or an array"
        keep_alive = body.get("keep_alive")
        if keep_alive is not None and not isinstance(keep_alive, (str, int, float)):
            return "keep_alive must be a string or a number"
        return None

    # -- chat ------------------------------------------------------------------------------

    def _chat(self, request: Recorded) -> Reply:
        body = request.body
        if not isinstance(body, dict):
            return _error(400, "invalid JSON body")
        problem = self._check_model(body)
        if problem is not None:
            return problem
        message = self._check_chat(body)
        if message is not None:
            return _error(400, message)
        answer = self._answers.popleft() if self._answers else self._default_answer(body)
        limit = (body.get("options") or {}).get("num_predict")
        words = answer.text.split(" ") if answer.text else []
        if isinstance(limit, int) and 0 <= limit < len(words):
            words, answer.done_reason = words[:limit], "length"
        prompt_words = sum(len(m["content"].split()) for m in body["messages"])
        counts = {"prompt_eval_count": prompt_words, "eval_count": len(words) + len(answer.tool_calls)}
        durations = {"total_duration": 912000000, "load_duration": 1200000, "prompt_eval_duration": 130000000, "eval_duration": 700000000}
        calls = [{"function": {"name": n, "arguments": a}} for n, a in answer.tool_calls]
        head = {"model": body["model"], "created_at": CREATED_AT}
        if body.get("stream", True):
            return Reply.stream(self._lines(head, words, answer, calls, counts, durations), content_type="application/x-ndjson")
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(words)}
        if answer.thinking:
            message["thinking"] = answer.thinking
        if calls:
            message["tool_calls"] = calls
        return Reply.json({**head, "message": message, "done": True, "done_reason": answer.done_reason, **durations, **counts})

    @staticmethod
    def _lines(head: dict[str, Any], words: list[str], answer: OllamaAnswer, calls: list[dict[str, Any]],
                counts: dict[str, int], durations: dict[str, int]) -> list[bytes]:
        lines = []
        if answer.thinking:
            lines.append(_line({**head, "message": {"role": "assistant", "content": "", "thinking": answer.thinking}, "done": False}))
        for i, word in enumerate(words):
            lines.append(_line({**head, "message": {"role": "assistant", "content": word if i == 0 else " " + word}, "done": False}))
            if answer.error:
                return lines + [_line({"error": answer.error})]
        if calls:
            lines.append(_line({**head, "message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": False}))
        final = {**head, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": answer.done_reason}
        lines.append(_line({**final, **durations, **counts}))
        return lines

    @staticmethod
    def _default_answer(body: dict[str, Any]) -> OllamaAnswer:
        messages = body["messages"]
        users = [m["content"] for m in messages if m["role"] == "user"]
        last = users[-1] if users else ""
        tools = body.get("tools") or []
        if tools and messages and messages[-1]["role"] == "user":
            return OllamaAnswer(tool_calls=[(tools[0]["function"]["name"], {"echo": last})])
        return OllamaAnswer(text=f"echo: {last}")

    # -- embeddings and models ---------------------------------------------------------------

    def _embed(self, request: Recorded) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        problem = self._check_model(body)
        if problem is not None:
            return problem
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return _error(400, "input must be a string or an array of strings")
        return Reply.json({"model": body["model"], "embeddings": [fake_vector(t) for t in inputs], "total_duration": 14143917,
                           "load_duration": 1019500, "prompt_eval_count": sum(len(t.split()) for t in inputs)})

    def _tags(self, request: Recorded) -> Reply:
        return Reply.json({"models": [{"name": m, "model": m, "modified_at": CREATED_AT, "size": 1, "digest": "0" * 64,
                                       "details": {"format": "gguf", "family": "llama"}} for m in self.models]})
