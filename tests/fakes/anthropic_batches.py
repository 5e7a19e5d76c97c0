"""A fake Anthropic Message Batches API (``/v1/messages/batches``) on the loopback interface.

Written by hand from Anthropic's wire format, without modelport's dialect. Each request is answered ``"echo: <last user
text>"`` (the texts of its blocks joined, as the model reads one turn); params with ``model == "bad-model"`` get an ``errored`` result. While ``hold`` is
set, batches stay ``in_progress``. ``creates`` counts batch creations.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Reply

BASE = "/v1/messages/batches"


class AnthropicBatchesUpstream(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.creates = 0
        self.batches: dict[str, dict[str, Any]] = {}
        self.requests_of: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.route("POST", BASE, self._create)
        self.route("GET", BASE, self._list)
        self.route("GET", BASE + r"/(?P<id>[^/]+)", self._get)
        self.route("GET", BASE + r"/(?P<id>[^/]+)/results", self._results)
        self.route("POST", BASE + r"/(?P<id>[^/]+)/cancel", self._cancel)

    @property
    def base_url(self) -> str:
        return self.url

    def _create(self, r: Recorded) -> Reply:
        assert r.headers.get("x-api-key") and r.headers.get("anthropic-version")
        self.creates += 1
        requests = r.body["requests"]
        for item in requests:
            assert item["params"]["max_tokens"] > 0 and "stream" not in item["params"]
        batch_id = f"msgbatch_{next(self._ids):04d}"
        self.requests_of[batch_id] = requests
        self.batches[batch_id] = {
            "id": batch_id, "type": "message_batch", "processing_status": "in_progress",
            "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"), "ended_at": None, "results_url": None,
        }
        return Reply.json(self.batches[batch_id])

    def _list(self, r: Recorded) -> Reply:
        data = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        return Reply.json({"data": data, "has_more": False, "first_id": None, "last_id": None})

    def _get(self, r: Recorded) -> Reply:
        batch = self.batches[r.params["id"]]
        if batch["processing_status"] == "in_progress" and not self.hold:
            errored = sum(item["params"]["model"] == "bad-model" for item in self.requests_of[batch["id"]])
            total = len(self.requests_of[batch["id"]])
            batch.update(processing_status="ended", results_url=f"{self.url}{BASE}/{batch['id']}/results",
                         request_counts={"processing": 0, "succeeded": total - errored, "errored": errored, "canceled": 0, "expired": 0})
        return Reply.json(batch)

    def _cancel(self, r: Recorded) -> Reply:
        batch = self.batches[r.params["id"]]
        batch["processing_status"] = "canceling"
        return Reply.json(batch)

    def _results(self, r: Recorded) -> Reply:
        lines = []
        for item in self.requests_of[r.params["id"]]:
            params = item["params"]
            if params["model"] == "bad-model":
                result = {"type": "errored", "error": {"type": "error", "error": {"type": "not_found_error", "message": "model: bad-model"}}}
            else:
                content = params["messages"][-1]["content"]
                text = "echo: " + (content if isinstance(content, str) else "".join(b.get("text", "") for b in content))
                result = {"type": "succeeded", "message": {
                    "id": "msg_fake", "type": "message", "role": "assistant", "model": params["model"],
                    "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": len(text.split())}}}
            lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}))
        # Any order is allowed: answer in reverse to prove matching is by custom_id.
        return Reply(200, "\n".join(reversed(lines)).encode() + b"\n", {"content-type": "application/x-jsonl"})
