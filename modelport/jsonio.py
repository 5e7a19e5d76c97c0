"""JSON at the edges: orjson when installed (several times faster on every call), else json."""

from __future__ import annotations

from typing import Any

try:
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    loads = orjson.loads
    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps odd platforms working
    import json

    def dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

    def loads(data: bytes | bytearray | memoryview | str) -> Any:
        # orjson reads a memoryview as it is; json wants bytes.
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)

    JSONDecodeError = json.JSONDecodeError
