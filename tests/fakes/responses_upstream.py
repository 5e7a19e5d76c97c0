"""A fake OpenAI Responses upstream (``POST /v1/responses``) on the loopback interface.

Written by hand from the Responses API's objects and stream events, deliberately without modelport's dialect, so a
mistake in the dialect cannot hide behind the same mistake in the fake. Stateless, as
modelport's client side expects: it refuses ``previous_response_id`` and ``item_reference``.

Default behaviour, derived from the request:

* the answer is ``"echo: <text of the last user message>"``; when ``tool_choice`` forces a
  tool (``required`` or a named function) the answer is one ``function_call`` of that tool
  (the first tool for ``required``) with arguments ``{"echo": "<that text>"}``.
* a ``reasoning`` item (summary ``"thinking"``, ``encrypted_content`` ``"gAAAA-fake-<n>"``)
  comes first when the request asks for ``reasoning``; replayed reasoning items are
  recorded in ``replayed_reasoning``.
* usage: input tokens = words in all input texts, output tokens = words answered.
* streams: every event with its ``event:`` line and ``sequence_number``; text word by word,
  arguments in two deltas; no ``[DONE]``.

``script(Answer(...))`` queues exact answers (``finish_reason`` ``"max_output_tokens"`` makes
an incomplete response); ``fail_mid_stream()`` queues a stream that ends in
``response.failed`` after one delta.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from tests.fakes.openai_upstream import Answer
from tests.fakes.server import FakeServer, Recorded, Reply

CREATED = 1767225600


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> Reply:
    return Reply.json({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}, status)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [p.get("text", "") for p in content or () if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")]


class ResponsesUpstream(FakeServer):
    """``base_url`` (with ``/v1``) is what a client is pointed at."""

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self._answers: deque[Answer | str] = deque()
        self.replayed_reasoning: list[dict[str, Any]] = []
        self._count = 0
        self.route("POST", "/v1/responses", self._responses)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def script(self, *answers: Answer | str) -> None:
        self._answers.extend(Answer(text=a) if isinstance(a, str) else a for a in answers)

    def fail_mid_stream(self) -> None:
        self._answers.append("fail")

    def _responses(self, request: Recorded) -> Reply:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply.json({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": None,
                                         "code": "invalid_api_key"}}, 401)
        body = request.body
        if not isinstance(body, dict) or "model" not in body:
            return _error(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter")
        if body.get("previous_response_id") is not None:
            return _error(400, f"Previous response with id '{body['previous_response_id']}' not found.", "previous_response_id",
                          "previous_response_not_found")
        items = body.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
        for item in items:
            if item.get("type") == "item_reference":
                return _error(404, f"Item with id '{item.get('id')}' not found. Items are not persisted when `store` is set to false.")
            if item.get("type") == "reasoning":
                self.replayed_reasoning.append(item)
        self._count += 1
        scripted = self._answers.popleft() if self._answers else None
        if scripted == "fail":
            return Reply.stream(_failing_stream(body))
        answer = scripted or _default_answer(body, items)
        response = self._response(body, items, answer)
        if body.get("stream"):
            return Reply.stream(_stream(response))
        return Reply.json(response)

    def _response(self, body: dict[str, Any], items: list[dict[str, Any]], answer: Answer) -> dict[str, Any]:
        n = self._count
        output: list[dict[str, Any]] = []
        if answer.reasoning or body.get("reasoning"):
            output.append({"id": f"rs_fake{n}", "type": "reasoning", "summary": [{"type": "summary_text", "text": answer.reasoning or "thinking"}],
                           "encrypted_content": f"gAAAA-fake-{n}"})
        incomplete = answer.finish_reason == "max_output_tokens"
        if answer.text:
            output.append({"id": f"msg_fake{n}", "type": "message", "status": "incomplete" if incomplete else "completed", "role": "assistant",
                           "content": [{"type": "output_text", "text": answer.text, "annotations": [], "logprobs": []}]})
        for k, (call_id, name, arguments) in enumerate(answer.tool_calls):
            output.append({"id": f"fc_fake{n}_{k}", "type": "function_call", "status": "completed", "call_id": call_id, "name": name, "arguments": arguments})
        words_in = sum(len(t.split()) for item in items for t in _texts(item.get("content"))) + len((body.get("instructions") or "").split())
        words_out = len((answer.text or "").split()) + len(answer.tool_calls)
        return {
            "id": f"resp_fake{n}", "object": "response", "created_at": CREATED, "status": "incomplete" if incomplete else "completed",
            "error": None, "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": body.get("instructions"), "model": body["model"], "output": output, "parallel_tool_calls": True,
            "previous_response_id": None, "store": body.get("store", True), "temperature": 1, "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []), "top_p": 1, "truncation": "disabled",
            "usage": {"input_tokens": words_in, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": words_out,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": words_in + words_out},
            "metadata": body.get("metadata") or {},
        }


def _default_answer(body: dict[str, Any], items: list[dict[str, Any]]) -> Answer:
    users = [" ".join(_texts(i.get("content"))) for i in items if i.get("role") == "user"]
    last = users[-1] if users else ""
    choice, tools = body.get("tool_choice"), body.get("tools") or []
    forced = choice.get("name") if isinstance(choice, dict) else (tools[0]["name"] if choice == "required" and tools else None)
    if forced:
        return Answer(tool_calls=[("call_fake0", forced, json.dumps({"echo": last}))])
    return Answer(text=f"echo: {last}")


class _Events:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, kind: str, **fields: Any) -> None:
        data = json.dumps({"type": kind, "sequence_number": len(self.chunks), **fields})
        self.chunks.append(f"event: {kind}\ndata: {data}\n\n".encode())


def _stream(response: dict[str, Any]) -> list[bytes]:
    emit = _Events()
    head = {**response, "status": "in_progress", "output": [], "usage": None}
    emit("response.created", response=head)
    emit("response.in_progress", response=head)
    for index, item in enumerate(response["output"]):
        kind, item_id = item["type"], item["id"]
        if kind == "message":
            emit("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
            part = item["content"][0]
            emit("response.content_part.added", item_id=item_id, output_index=index, content_index=0, part={**part, "text": ""})
            words = part["text"].split(" ")
            for i, word in enumerate(words):
                emit("response.output_text.delta", item_id=item_id, output_index=index, content_index=0,
                     delta=word if i == len(words) - 1 else word + " ", logprobs=[])
            emit("response.output_text.done", item_id=item_id, output_index=index, content_index=0, text=part["text"], logprobs=[])
            emit("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part)
        elif kind == "reasoning":
            emit("response.output_item.added", output_index=index, item={**item, "summary": []})
            summary = item["summary"][0]
            emit("response.reasoning_summary_part.added", item_id=item_id, output_index=index, summary_index=0, part={"type": "summary_text", "text": ""})
            emit("response.reasoning_summary_text.delta", item_id=item_id, output_index=index, summary_index=0, delta=summary["text"])
            emit("response.reasoning_summary_text.done", item_id=item_id, output_index=index, summary_index=0, text=summary["text"])
            emit("response.reasoning_summary_part.done", item_id=item_id, output_index=index, summary_index=0, part=summary)
        else:
            emit("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "arguments": ""})
            half = len(item["arguments"]) // 2
            for piece in (item["arguments"][:half], item["arguments"][half:]):
                emit("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece)
            emit("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=item["arguments"])
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.incomplete" if response["status"] == "incomplete" else "response.completed", response=response)
    return emit.chunks


def _failing_stream(body: dict[str, Any]) -> list[bytes]:
    emit = _Events()
    head = {"id": "resp_fakefail", "object": "response", "created_at": CREATED, "status": "in_progress", "model": body["model"], "output": []}
    emit("response.created", response=head)
    emit("response.in_progress", response=head)
    item = {"id": "msg_fakefail", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    emit("response.output_item.added", output_index=0, item=item)
    emit("response.content_part.added", item_id="msg_fakefail", output_index=0, content_index=0, part={"type": "output_text", "text": "", "annotations": []})
    emit("response.output_text.delta", item_id="msg_fakefail", output_index=0, content_index=0, delta="partial ", logprobs=[])
    emit("response.failed", response={**head, "status": "failed", "error": {"code": "server_error", "message": "The upstream model crashed."}})
    return emit.chunks
