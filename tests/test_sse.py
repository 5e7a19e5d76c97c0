"""The SSE parser: bytes in any chunking give the same (event, data) pairs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.sse import SSEParser, format_event


def parse_all(*chunks: bytes) -> list[tuple[str | None, str]]:
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.close()


def test_data_only_events_as_openai_sends_them():
    stream = b'data: {"a":1}\n\ndata: {"a":2}\n\ndata: [DONE]\n\n'
    assert parse_all(stream) == [(None, '{"a":1}'), (None, '{"a":2}'), (None, "[DONE]")]


def test_named_events_as_anthropic_sends_them():
    stream = b'event: message_start\ndata: {"type":"message_start"}\n\nevent: ping\ndata: {}\n\n'
    assert parse_all(stream) == [("message_start", '{"type":"message_start"}'), ("ping", "{}")]


def test_the_event_name_does_not_leak_into_the_next_event():
    assert parse_all(b"event: a\ndata: 1\n\ndata: 2\n\n") == [("a", "1"), (None, "2")]


def test_comments_and_id_and_retry_fields_are_dropped():
    assert parse_all(b": keep-alive\nid: 7\nretry: 1000\ndata: x\n\n") == [(None, "x")]


def test_several_data_lines_join_with_a_newline():
    assert parse_all(b"data: line one\ndata: line two\n\n") == [(None, "line one\nline two")]


def test_crlf_line_endings():
    assert parse_all(b"data: a\r\n\r\ndata: b\r\n\r\n") == [(None, "a"), (None, "b")]


def test_only_one_space_after_the_colon_is_stripped():
    assert parse_all(b"data:no-space\n\ndata:  two\n\n") == [(None, "no-space"), (None, " two")]


def test_a_line_that_is_not_a_field_is_reported_raw():
    # Some servers answer a failed stream with a bare JSON error body.
    assert parse_all(b'{"error": {"message": "boom"}}\n') == [("raw", '{"error": {"message": "boom"}}')]


def test_close_flushes_an_event_without_the_final_blank_line():
    parser = SSEParser()
    assert parser.feed(b"data: last") == []
    assert parser.close() == [(None, "last")]


def test_utf8_split_across_chunks():
    encoded = "data: héllo wörld ✓\n\n".encode()
    assert parse_all(encoded[:8], encoded[8:9], encoded[9:]) == [(None, "héllo wörld ✓")]


def test_format_event_always_writes_the_space_after_data():
    assert format_event('{"x":1}') == b'data: {"x":1}\n\n'
    assert format_event("{}", "ping") == b"event: ping\ndata: {}\n\n"


payloads = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1).filter(
    lambda s: not s.startswith(" ") and "\n" not in s and "\r" not in s
)


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(["delta", "error", "message_stop"])), payloads), min_size=1, max_size=8),
    st.data(),
)
def test_any_chunking_parses_to_the_events_that_were_formatted(events, data):
    stream = b"".join(format_event(payload, name) for name, payload in events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    assert parse_all(*chunks) == events
