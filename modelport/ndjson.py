"""Newline-delimited JSON streams (Ollama's native API), sans I/O.

``NDJSONParser`` has the same interface as ``sse.SSEParser`` (bytes in, ``(event, data)``
pairs out), so a backend reads either framing through one code path: each non-blank line is
one event with no name.
"""

from __future__ import annotations


class NDJSONParser:
    """Incremental parser: feed it any chunking of the byte stream, get whole lines back."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        self._buffer += chunk
        if b"\n" not in chunk:
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        return [(None, text) for text in (line.strip().decode("utf-8") for line in lines) if text]

    def close(self) -> list[tuple[str | None, str]]:
        """The last line, when the connection ends without a newline after it."""
        text = self._buffer.strip().decode("utf-8")
        self._buffer = b""
        return [(None, text)] if text else []
