"""A fake Gemini Batch Mode API (``models/{m}:batchGenerateContent`` with inline requests,
``batches/{id}`` operations) on the loopback interface, from the saved v1beta spec.

Each inline request is answered ``"echo: <last user text>"``. While ``hold`` is set,
batches stay ``BATCH_STATE_RUNNING``. ``creates`` counts batch creations.
"""

from __future__ import annotations

import itertools
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Reply

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"


class GeminiBatchesUpstream(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.creates = 0
        self.operations: dict[str, dict[str, Any]] = {}
        self.requests_of: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.route("POST", r"/v1beta/models/(?P<model>[^:/]+):batchGenerateContent", self._create)
        self.route("GET", "/v1beta/batches", self._list)
        self.route("GET", r"/v1beta/batches/(?P<id>[^:/]+)", self._get)
        self.route("POST", r"/v1beta/batches/(?P<id>[^:/]+):cancel", self._cancel)

    @property
    def base_url(self) -> str:
        return self.url + "/v1beta"

    def _create(self, r: Recorded) -> Reply:
        assert r.headers.get("x-goog-api-key")
        self.creates += 1
        batch = r.body["batch"]
        assert batch["model"] == f"models/{r.params['model']}" and batch["displayName"]
        requests = batch["inputConfig"]["requests"]["requests"]
        name = f"batches/b{next(self._ids)}"
        self.requests_of[name] = requests
        self.operations[name] = {"name": name, "done": False, "metadata": {
            "@type": BATCH_TYPE, "name": name, "model": batch["model"], "displayName": batch["displayName"],
            "state": "BATCH_STATE_PENDING", "batchStats": {"requestCount": str(len(requests)), "pendingRequestCount": str(len(requests))}}}
        return Reply.json(self.operations[name])

    def _list(self, r: Recorded) -> Reply:
        return Reply.json({"operations": list(self.operations.values())})

    def _get(self, r: Recorded) -> Reply:
        name = "batches/" + r.params["id"]
        operation = self.operations[name]
        if not operation["done"]:
            if self.hold:
                operation["metadata"]["state"] = "BATCH_STATE_RUNNING"
            else:
                self._complete(name, operation)
        return Reply.json(operation)

    def _cancel(self, r: Recorded) -> Reply:
        operation = self.operations["batches/" + r.params["id"]]
        operation["metadata"]["state"] = "BATCH_STATE_CANCELLED"
        operation["done"] = True
        return Reply.json({})

    def _complete(self, name: str, operation: dict[str, Any]) -> None:
        responses = []
        for item in self.requests_of[name]:
            text = "echo: " + item["request"]["contents"][-1]["parts"][-1]["text"]
            words = len(text.split())
            responses.append({"metadata": item.get("metadata"), "response": {
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": words, "totalTokenCount": 10 + words},
                "modelVersion": "gemini-fake"}})
        n = str(len(responses))
        operation["done"] = True
        operation["metadata"].update(state="BATCH_STATE_SUCCEEDED", batchStats={"requestCount": n, "successfulRequestCount": n},
                                     output={"inlinedResponses": {"inlinedResponses": responses}})
        operation["response"] = {"@type": BATCH_TYPE.replace("GenerateContentBatch", "GenerateContentBatchOutput"),
                                 "inlinedResponses": {"inlinedResponses": responses}}
