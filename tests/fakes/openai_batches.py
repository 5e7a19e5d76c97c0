"""A fake OpenAI Files + Batch API (``/v1/files``, ``/v1/batches``) on the loopback interface.

Written by hand from OpenAI's wire format, without modelport's dialect. Every chat line is
answered ``"echo: <last user text>"``; a line whose model is ``"bad-model"`` gets a 404 line
in the error file. While ``hold`` is set, batches stay ``in_progress``; the first poll after
it is cleared completes them. ``creates`` counts ``POST /v1/batches``.
"""

from __future__ import annotations

import itertools
import json
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Reply


class OpenAIBatchesUpstream(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.creates = 0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.route("POST", "/v1/files", self._upload)
        self.route("GET", r"/v1/files/(?P<id>[^/]+)/content", self._content)
        self.route("POST", "/v1/batches", self._create)
        self.route("GET", "/v1/batches", self._list)
        self.route("GET", r"/v1/batches/(?P<id>[^/]+)", self._get)
        self.route("POST", r"/v1/batches/(?P<id>[^/]+)/cancel", self._cancel)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def _upload(self, r: Recorded) -> Reply:
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.raw)
        fields = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in message.iter_parts()}
        assert fields["purpose"] == b"batch"
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = fields["file"]
        return Reply.json({"id": file_id, "object": "file", "bytes": len(fields["file"]), "purpose": "batch", "status": "processed"})

    def _content(self, r: Recorded) -> Reply:
        return Reply(200, self.files[r.params["id"]], {"content-type": "application/octet-stream"})

    def _create(self, r: Recorded) -> Reply:
        self.creates += 1
        body = r.body
        assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
        batch_id = f"batch_{next(self._ids)}"
        lines = [json.loads(line) for line in self.files[body["input_file_id"]].splitlines() if line.strip()]
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
            "status": "in_progress", "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        return Reply.json(self.batches[batch_id])

    def _list(self, r: Recorded) -> Reply:
        data = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        return Reply.json({"object": "list", "data": data, "has_more": False})

    def _get(self, r: Recorded) -> Reply:
        batch = self.batches[r.params["id"]]
        if batch["status"] == "in_progress" and not self.hold:
            self._complete(batch)
        return Reply.json(batch)

    def _cancel(self, r: Recorded) -> Reply:
        batch = self.batches[r.params["id"]]
        batch["status"] = "cancelled"
        return Reply.json(batch)

    def _complete(self, batch: dict[str, Any]) -> None:
        good, bad = [], []
        for line in self.files[batch["input_file_id"]].splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            body = item["body"]
            if body["model"] == "bad-model":
                error = {"error": {"message": "The model `bad-model` does not exist", "type": "invalid_request_error", "code": "model_not_found"}}
                bad.append({"id": "r", "custom_id": item["custom_id"], "response": {"status_code": 404, "body": error}, "error": None})
                continue
            text = "echo: " + body["messages"][-1]["content"]
            completion = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 10 + len(text.split())}}
            good.append({"id": "r", "custom_id": item["custom_id"], "response": {"status_code": 200, "body": completion}, "error": None})
        for key, lines in (("output_file_id", good), ("error_file_id", bad)):
            if lines:
                file_id = f"file-{next(self._ids)}"
                self.files[file_id] = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
                batch[key] = file_id
        batch.update(status="completed", request_counts={"total": len(good) + len(bad), "completed": len(good), "failed": len(bad)})
