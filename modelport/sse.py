"""Server-Sent Events, sans I/O: bytes in, (event, data) pairs out; and the reverse."""

from __future__ import annotations


class SSEParser:
    """Incremental parser: feed it any chunking of the byte stream, get whole events back.

    Comment lines (``:``) are dropped; several ``data:`` lines join with a newline; an event
    ends at a blank line. Lines that are not ``field: value`` (some servers send raw JSON
    error bodies) are reported as data of an event named ``raw``.
    """

    __slots__ = ("_buffer", "_event", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        self._buffer += chunk
        events: list[tuple[str | None, str]] = []
        while True:
            nl = self._buffer.find(b"\n")
            if nl < 0:
                return events
            line = self._buffer[:nl].rstrip(b"\r").decode("utf-8")
            self._buffer = self._buffer[nl + 1 :]
            self._line(line, events)

    def close(self) -> list[tuple[str | None, str]]:
        """Flush what is left when the connection ends without a final blank line."""
        events: list[tuple[str | None, str]] = []
        if self._buffer:
            self._line(self._buffer.rstrip(b"\r").decode("utf-8"), events)
            self._buffer = b""
        self._line("", events)
        return events

    def _line(self, line: str, events: list[tuple[str | None, str]]) -> None:
        if not line:
            if self._data:
                events.append((self._event, "\n".join(self._data)))
            self._event, self._data = None, []
            return
        if line[0] == ":":
            return
        name, sep, value = line.partition(":")
        if not sep:
            events.append(("raw", line))
            return
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name not in ("id", "retry"):
            events.append(("raw", line))


def format_event(data: str, event: str | None = None) -> bytes:
    """One SSE event; always ``data: `` with the space (google-genai needs it)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()
