"""A fake Gemini (Generative Language API) upstream on the loopback interface.

Written by hand from Gemini's generateContent wire format, deliberately without modelport's dialect.

Default behaviour, derived from the request:

* served under both ``/v1`` and ``/v1beta`` (google-genai 3.x defaults to ``v1``).
* the answer is ``"echo: <text of the last user content>"``; when
  ``toolConfig.functionCallingConfig.mode`` is ``ANY`` the answer is one ``functionCall`` of
  the first allowed (or first declared) function with args ``{"echo": "<that text>"}``,
  without an id (as older models send it) and with a ``thoughtSignature``.
* usage: prompt tokens = words in all texts, candidate tokens = words answered.
* ``:streamGenerateContent?alt=sse``: one chunk per word, function calls whole, the last
  chunk with ``finishReason`` and ``usageMetadata``; no end marker. Without ``alt=sse`` the
  same chunks go out as one JSON array.

``script(Answer(...))`` queues exact answers (``Answer`` is shared with the OpenAI fake; an
empty call id means "no id"; ``finish_reason`` is Gemini's own value). ``gemini_error`` and
``rate_limited`` build faults in Google's error envelope; the 429 carries the wait only in
``details[RetryInfo].retryDelay``, with no ``Retry-After`` header, as Gemini does.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import deque
from typing import Any

from tests.fakes.openai_upstream import Answer, fake_vector
from tests.fakes.server import Fault, FakeServer, Recorded, Reply, http_error

__all__ = ["Answer", "GeminiUpstream", "fake_signature", "gemini_error", "rate_limited"]

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def fake_signature(n: int) -> str:
    """thoughtSignature is a bytes field: base64 on the wire, as google-genai insists."""
    return base64.b64encode(f"fake-sig-{n}".encode()).decode()


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _error_body(code: int, message: str, details: list | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def gemini_error(code: int, message: str, details: list | None = None) -> Fault:
    return http_error(code, _error_body(code, message, details))


def rate_limited(retry_delay: str = "37.4s", per_day: bool = False) -> Fault:
    quota = "GenerateRequestsPerDayPerProjectPerModel" if per_day else "GenerateRequestsPerMinutePerProjectPerModel"
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_requests", "quotaId": quota}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
    ]
    return gemini_error(429, f"You exceeded your current quota. Please retry in {retry_delay}.", details)


class GeminiUpstream(FakeServer):
    """``url`` is what a google-genai client takes as ``base_url``."""

    def __init__(self, api_key: str | None = None, models: tuple[str, ...] = ("gemini-fake",), latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.api_key = api_key
        self.models = models
        self._answers: deque[Answer] = deque()
        self.route("POST", r"/(?P<version>v1|v1beta)/models/(?P<model>[^/]+):(?P<method>[A-Za-z]+)", self._authorised(self._model_call))
        self.route("GET", r"/(?P<version>v1|v1beta)/models", self._authorised(self._list_models))

    def base_url_for(self, version: str = "v1beta") -> str:
        """A base URL with the API version, as modelport's provider table spells Gemini's."""
        return f"{self.url}/{version}"

    def script(self, *answers: Answer | str) -> None:
        self._answers.extend(Answer(text=a) if isinstance(a, str) else a for a in answers)

    def _authorised(self, handler):
        def guarded(request: Recorded) -> Reply:
            given = request.headers.get("x-goog-api-key") or request.query.get("key")
            if self.api_key is not None and given != self.api_key:
                info = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]
                return Reply.json(_error_body(400, "API key not valid. Please pass a valid API key.", info), 400)
            return handler(request)

        return guarded

    def _model_call(self, request: Recorded) -> Reply:
        method, model, body = request.params["method"], request.params["model"], request.body
        if not isinstance(body, dict):
            return Reply.json(_error_body(400, "Invalid JSON payload received."), 400)
        if method in ("generateContent", "streamGenerateContent"):
            if not isinstance(body.get("contents"), list):
                return Reply.json(_error_body(400, "* GenerateContentRequest.contents: contents is not specified"), 400)
            answer = self._answers.popleft() if self._answers else _default_answer(body)
            chunks = _chunks(body, answer, model)
            if method == "generateContent":
                return Reply.json(_merge(chunks))
            if request.query.get("alt") == "sse":
                return Reply.stream([f"data: {_json_text(c)}\r\n\r\n".encode() for c in chunks])
            return Reply.stream([("[" + ",\r\n".join(_json_text(c) for c in chunks) + "]").encode()], content_type="application/json")
        if method == "countTokens":
            inner = body.get("generateContentRequest") or body
            return Reply.json({"totalTokens": _prompt_words(inner)})
        if method == "batchEmbedContents":
            return Reply.json({"embeddings": [{"values": fake_vector(_text(r.get("content")))} for r in body.get("requests") or ()]})
        if method == "embedContent":
            return Reply.json({"embedding": {"values": fake_vector(_text(body.get("content")))}})
        return Reply.json(_error_body(404, f"Method {method} not found."), 404)

    def _list_models(self, request: Recorded) -> Reply:
        models = [
            {"name": f"models/{m}", "baseModelId": m, "version": "001", "displayName": m, "inputTokenLimit": 1048576, "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens"]}
            for m in self.models
        ]
        return Reply.json({"models": models})


def _text(content: Any) -> str:
    return " ".join(p.get("text", "") for p in (content or {}).get("parts") or () if isinstance(p, dict) and "text" in p)


def _prompt_words(body: dict[str, Any]) -> int:
    texts = [_text(body.get("systemInstruction"))] + [_text(c) for c in body.get("contents") or ()]
    return sum(len(t.split()) for t in texts)


def _default_answer(body: dict[str, Any]) -> Answer:
    users = [_text(c) for c in body["contents"] if c.get("role", "user") == "user" and _text(c)]
    last = users[-1] if users else ""
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if calling.get("mode") == "ANY":
        allowed = calling.get("allowedFunctionNames") or [d["name"] for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
        if allowed:
            return Answer(tool_calls=[("", allowed[0], _json_text({"echo": last}))])
    return Answer(text=f"echo: {last}")


def _chunks(body: dict[str, Any], answer: Answer, model: str) -> list[dict[str, Any]]:
    head = {"modelVersion": model, "responseId": "fakeresp" + hashlib.sha256(_json_text(body).encode()).hexdigest()[:12]}
    parts: list[dict[str, Any]] = []
    if answer.reasoning:
        parts.append({"text": answer.reasoning, "thought": True})
    words = (answer.text or "").split(" ")
    parts.extend({"text": w if i == len(words) - 1 else w + " "} for i, w in enumerate(words) if answer.text)
    for n, (call_id, name, arguments) in enumerate(answer.tool_calls):
        call = {"name": name, "args": json.loads(arguments)}
        if call_id:
            call = {"id": call_id, **call}
        parts.append({"functionCall": call, "thoughtSignature": fake_signature(n)})
    prompt = answer.prompt_tokens if answer.prompt_tokens is not None else _prompt_words(body)
    output = answer.completion_tokens if answer.completion_tokens is not None else len((answer.text or "").split()) + len(answer.tool_calls)
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": prompt + output + answer.reasoning_tokens}
    if answer.reasoning_tokens:
        usage["thoughtsTokenCount"] = answer.reasoning_tokens
    if answer.cached_tokens:
        usage["cachedContentTokenCount"] = answer.cached_tokens
    chunks = [{"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}], "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt}, **head} for part in parts]
    if not chunks:
        chunks = [{"candidates": [{"content": {"role": "model", "parts": []}, "index": 0}], **head}]
    last = chunks[-1]
    last["candidates"][0]["finishReason"] = answer.finish_reason or "STOP"  # STOP even for function calls
    last["usageMetadata"] = usage
    return chunks


def _merge(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streamed response: all parts (adjacent text joined) in one candidate."""
    parts: list[dict[str, Any]] = []
    for chunk in chunks:
        for part in chunk["candidates"][0]["content"]["parts"]:
            if parts and set(part) == {"text"} and set(parts[-1]) == {"text"}:
                parts[-1] = {"text": parts[-1]["text"] + part["text"]}
            else:
                parts.append(dict(part))
    last = chunks[-1]
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": last["candidates"][0]["finishReason"], "index": 0}
    return {"candidates": [candidate], "usageMetadata": last["usageMetadata"], "modelVersion": last["modelVersion"], "responseId": last["responseId"]}
