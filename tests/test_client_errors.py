"""Every retry and error path of the client, sync and async, against a live loopback upstream.

Each test scripts the fake OpenAI server (``inject`` queues one fault per request), makes one
call, and then asks the server how many requests it really received: that count is the
proof that a retry happened, or did not.

The retry rules, the official SDKs': 408, 409, 429 and 5xx are retried, as are dropped
connections and timeouts, at most ``max_retries`` times; a quota 429 never is; a stream is
never retried once its first byte has arrived; the provider's retry-after is honoured.

Retried faults mostly carry ``retry-after-ms: 10`` so the tests do not sit through backoff;
the backoff itself is arithmetic, proven in test_retry.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from modelport import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    ChatResponse,
    Client,
    ConfigError,
    ConnectionError,
    ContextLengthError,
    ModelportError,
    NotFoundError,
    OverloadedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    StreamError,
    StreamEvent,
    Timeouts,
    TimeoutError,
)
from tests.fakes.openai_upstream import OpenAIUpstream, openai_error, rate_limited
from tests.fakes.server import cut_stream, drop_connection, http_error, malformed_json, stall_stream

KEY = "sk-proj-TESTKEY0123456789abcdefSECRET"
MODEL = "openai/gpt-fake"
FAST = {"retry-after-ms": "10"}  # "try again in 10 ms": a retry without a backoff wait


def server_error(status: int = 500, message: str = "The server had an error while processing your request.", headers: dict[str, str] | None = FAST):
    return openai_error(status, message, "server_error", headers=headers)


class Api:
    """One way of calling: ``Client`` (sync) or ``AsyncClient`` inside ``asyncio.run`` (async).

    Every call builds a fresh client pointed at the upstream and closes it afterwards.
    """

    def __init__(self, mode: str, upstream: OpenAIUpstream, key: str | None = KEY, **options: Any) -> None:
        self.mode, self.upstream, self.key, self.options = mode, upstream, key, options

    def using(self, **changes: Any) -> Api:
        options = {"key": self.key, **self.options, **changes}
        return Api(self.mode, self.upstream, **options)

    def _client_options(self) -> dict[str, Any]:
        keys = {"openai": self.key} if self.key else None
        return {"api_keys": keys, "base_urls": {"openai": self.upstream.base_url}, **self.options}

    def chat(self, prompt: str = "hello", model: str = MODEL, **params: Any) -> ChatResponse:
        if self.mode == "sync":
            with Client(**self._client_options()) as client:
                return client.chat(model, prompt, **params)

        async def run() -> ChatResponse:
            async with AsyncClient(**self._client_options()) as client:
                return await client.chat(model, prompt, **params)

        return asyncio.run(run())

    def stream(self, prompt: str = "hello", model: str = MODEL, into: list[StreamEvent] | None = None, **params: Any) -> ChatResponse:
        """Stream to the end and return the assembled answer; events also go to ``into``,
        so a test can see what arrived before an error."""
        events = into if into is not None else []
        if self.mode == "sync":
            with Client(**self._client_options()) as client:
                stream = client.stream(model, prompt, **params)
                for event in stream:
                    events.append(event)
                return stream.response

        async def run() -> ChatResponse:
            async with AsyncClient(**self._client_options()) as client:
                stream = client.stream(model, prompt, **params)
                async for event in stream:
                    events.append(event)
                return stream.response

        return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, openai_upstream: OpenAIUpstream) -> Api:
    return Api(request.param, openai_upstream)


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if e.kind == "text")


# -- 429: rate limits and quota --------------------------------------------------------------


def test_429_with_retry_after_is_retried_after_waiting_the_hint(api, openai_upstream):
    openai_upstream.inject(rate_limited(retry_after=1))
    started = time.monotonic()
    answer = api.chat("hello")
    assert answer.text == "echo: hello"
    assert openai_upstream.request_count == 2
    assert time.monotonic() - started >= 0.9  # it waited the server's 1 s, not a 0.5 s backoff


def test_retry_after_ms_wins_over_retry_after(api, openai_upstream):
    openai_upstream.inject(openai_error(429, "Rate limit reached", "requests", "rate_limit_exceeded",
                                       headers={"retry-after-ms": "20", "retry-after": "30"}))
    assert api.chat().text == "echo: hello"
    assert openai_upstream.request_count == 2


def test_429_asking_for_a_longer_wait_than_max_retry_after_goes_to_the_caller(api, openai_upstream):
    openai_upstream.inject(openai_error(429, "Rate limit reached for requests. Please try again in 2m0s.", "requests",
                                       "rate_limit_exceeded", headers={"retry-after": "120"}))
    with pytest.raises(RateLimitError) as caught:
        api.chat()
    assert openai_upstream.request_count == 1  # not waited for, not retried
    assert caught.value.retry_after == 120  # so the caller can decide
    assert caught.value.status == 429 and caught.value.provider == "openai"


def test_quota_429_is_final_and_not_retried(api, openai_upstream):
    message = "You exceeded your current quota, please check your plan and billing details."
    # Even with a retry-after: waiting does not refill a quota.
    openai_upstream.inject(openai_error(429, message, "insufficient_quota", "insufficient_quota", headers=FAST))
    with pytest.raises(QuotaExceededError) as caught:
        api.chat()
    assert openai_upstream.request_count == 1
    assert caught.value.message == message
    assert isinstance(caught.value, RateLimitError)  # code that catches rate limits still sees it


def test_429s_until_retries_run_out_raise_rate_limit_error(api, openai_upstream):
    openai_upstream.inject(openai_error(429, "Rate limit reached", "requests", "rate_limit_exceeded", headers=FAST), times=3)
    with pytest.raises(RateLimitError) as caught:
        api.chat()
    assert not isinstance(caught.value, QuotaExceededError)
    assert openai_upstream.request_count == 3  # max_retries=2: three attempts in all


def test_max_retries_is_the_callers_choice(api, openai_upstream):
    openai_upstream.inject(server_error(), times=5)
    with pytest.raises(ServerError):
        api.using(max_retries=4).chat()
    assert openai_upstream.request_count == 5
    openai_upstream.clear()
    openai_upstream.inject(server_error())
    with pytest.raises(ServerError):
        api.using(max_retries=0).chat()
    assert openai_upstream.request_count == 1


# -- 5xx -------------------------------------------------------------------------------------


def test_500_is_retried_with_backoff_then_succeeds(api, openai_upstream):
    openai_upstream.inject(server_error(headers=None))  # no hint: the policy's own backoff
    started = time.monotonic()
    assert api.chat().text == "echo: hello"
    assert openai_upstream.request_count == 2
    assert time.monotonic() - started >= 0.3  # backoff 0.5 s less at most 25 % jitter


def test_503_is_retried_then_succeeds(api, openai_upstream):
    openai_upstream.inject(server_error(503, "The engine is currently overloaded, please try again later"), times=2)
    assert api.chat().text == "echo: hello"
    assert openai_upstream.request_count == 3


def test_500s_until_retries_run_out_raise_server_error_with_the_providers_words(api, openai_upstream):
    openai_upstream.inject(server_error(500, "The server had an error while processing your request. Sorry!"), times=3)
    with pytest.raises(ServerError) as caught:
        api.chat()
    error = caught.value
    assert openai_upstream.request_count == 3
    assert (error.provider, error.status) == ("openai", 500)
    assert error.message == "The server had an error while processing your request. Sorry!"
    assert str(error).startswith("[openai] The server had an error")


def test_503s_until_retries_run_out_raise_overloaded_error(api, openai_upstream):
    openai_upstream.inject(server_error(503, "The engine is currently overloaded"), times=3)
    with pytest.raises(OverloadedError) as caught:
        api.chat()
    assert openai_upstream.request_count == 3
    assert isinstance(caught.value, ServerError)
    assert (caught.value.provider, caught.value.status) == ("openai", 503)
    assert "currently overloaded" in caught.value.message


def test_a_non_json_error_page_still_becomes_a_clear_error(api, openai_upstream):
    openai_upstream.inject(http_error(502, "<html><body>502 Bad Gateway</body></html>", FAST), times=3)
    with pytest.raises(ServerError) as caught:
        api.chat()
    assert openai_upstream.request_count == 3
    assert caught.value.status == 502 and "502 Bad Gateway" in caught.value.message


def test_x_should_retry_false_stops_a_retry_the_status_would_allow(api, openai_upstream):
    openai_upstream.inject(server_error(503, "overloaded", headers={"x-should-retry": "false"}))
    with pytest.raises(OverloadedError):
        api.chat()
    assert openai_upstream.request_count == 1


def test_x_should_retry_true_forces_a_retry_the_status_would_not_allow(api, openai_upstream):
    openai_upstream.inject(openai_error(400, "try me again", "invalid_request_error",
                                       headers={"x-should-retry": "true", "retry-after-ms": "10"}))
    assert api.chat().text == "echo: hello"
    assert openai_upstream.request_count == 2


@pytest.mark.parametrize("status", [408, 409])
def test_408_and_409_are_retried(api, openai_upstream, status):
    openai_upstream.inject(openai_error(status, "Request timed out / conflict", "invalid_request_error", headers=FAST))
    assert api.chat().text == "echo: hello"
    assert openai_upstream.request_count == 2


# -- 4xx: final at once ----------------------------------------------------------------------


def test_401_is_final_and_the_hint_says_how_to_set_the_key(api, openai_upstream):
    openai_upstream.inject(openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
    with pytest.raises(AuthenticationError) as caught:
        api.chat()
    error = caught.value
    assert openai_upstream.request_count == 1
    assert (error.provider, error.status, error.code) == ("openai", 401, "invalid_api_key")
    assert "OPENAI_API_KEY" in error.hint
    assert "modelport keys set openai" in error.hint
    assert "modelport keys set openai" in str(error)


def test_a_wrong_key_is_refused_by_the_upstream_itself(api):
    with OpenAIUpstream(api_key="sk-the-right-one-0000") as upstream:
        with pytest.raises(AuthenticationError):
            Api(api.mode, upstream).chat()
        assert upstream.request_count == 1
        assert upstream.last_request.headers["authorization"] == f"Bearer {KEY}"
        assert Api(api.mode, upstream, key="sk-the-right-one-0000").chat().text == "echo: hello"


def test_the_key_never_shows_in_an_error_even_when_the_upstream_echoes_it(api, openai_upstream):
    # OpenAI really does put (part of) the key it received into its 401 message.
    echoed = f"Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys."
    for _ in range(2):
        openai_upstream.inject(openai_error(401, echoed, "invalid_request_error", "invalid_api_key"))
    with pytest.raises(AuthenticationError) as caught:
        api.chat()
    error = caught.value
    for shown in (str(error), repr(error), error.message, " ".join(map(str, error.args)), str(error.body)):
        assert KEY not in shown
    assert "Incorrect API key provided" in error.message  # the provider's words survive
    with pytest.raises(AuthenticationError) as caught:
        api.stream()
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


def test_404_is_not_found(api, openai_upstream):
    openai_upstream.inject(openai_error(404, "The model `gpt-nope` does not exist or you do not have access to it.",
                                       "invalid_request_error", "model_not_found"))
    with pytest.raises(NotFoundError) as caught:
        api.chat(model="openai/gpt-nope")
    assert openai_upstream.request_count == 1
    assert caught.value.code == "model_not_found" and "gpt-nope" in caught.value.message


def test_400_is_bad_request_and_not_retried(api, openai_upstream):
    openai_upstream.inject(openai_error(400, "Invalid value for 'temperature'.", "invalid_request_error", "invalid_value", "temperature"))
    with pytest.raises(BadRequestError) as caught:
        api.chat(temperature=1.9)  # in range here; the upstream refuses it
    assert openai_upstream.request_count == 1
    assert not isinstance(caught.value, ContextLengthError)
    assert caught.value.param == "temperature" and caught.value.status == 400


def test_400_about_context_length_is_context_length_error(api, openai_upstream):
    message = ("This model's maximum context length is 128000 tokens. However, your messages resulted in "
               "130001 tokens. Please reduce the length of the messages.")
    openai_upstream.inject(openai_error(400, message, "invalid_request_error", "context_length_exceeded", "messages"))
    with pytest.raises(ContextLengthError) as caught:
        api.chat()
    assert openai_upstream.request_count == 1
    assert isinstance(caught.value, BadRequestError)  # catching bad requests catches it too
    assert caught.value.message == message


# -- the connection itself -------------------------------------------------------------------


def test_a_dropped_connection_is_retried(api, openai_upstream):
    openai_upstream.inject(drop_connection())
    assert api.chat().text == "echo: hello"
    assert openai_upstream.request_count == 2


def test_a_connection_that_keeps_dropping_ends_in_connection_error(api, openai_upstream):
    openai_upstream.inject(drop_connection(), times=2)
    with pytest.raises(ConnectionError) as caught:
        api.using(max_retries=1).chat()
    assert openai_upstream.request_count == 2
    assert caught.value.provider == "openai"
    assert caught.value.hint


def test_nobody_listening_is_connection_error_naming_the_url():
    with OpenAIUpstream() as upstream:
        url = upstream.base_url
    # The server is gone; its port is closed.
    with Client(api_keys={"openai": KEY}, base_urls={"openai": url}, max_retries=0) as client:
        with pytest.raises(ConnectionError) as caught:
            client.chat(MODEL, "hello")
    # The SDK's user sees the URL (str(), the detail); the message, which a gateway passes on
    # to its callers, names the provider only (#9 item 18).
    assert url in str(caught.value) and url not in caught.value.message and caught.value.provider == "openai"


def test_malformed_json_in_a_200_is_a_clear_error_and_not_retried(api, openai_upstream):
    openai_upstream.inject(malformed_json())
    with pytest.raises(ModelportError) as caught:
        api.chat()
    assert openai_upstream.request_count == 1
    assert caught.value.provider == "openai"
    assert "invalid JSON" in caught.value.message
    assert "base URL" in caught.value.hint


@pytest.mark.parametrize("body", [[1, 2], "a bare string", 42])
def test_json_that_is_not_an_object_is_the_same_clear_error(api, openai_upstream, body):
    openai_upstream.inject(http_error(200, json.dumps(body).encode()))  # valid JSON, but no object
    with pytest.raises(ModelportError) as caught:
        api.chat()
    assert "invalid JSON" in caught.value.message and caught.value.provider == "openai"


def test_a_stalled_answer_times_out_and_is_retried(api, openai_upstream):
    openai_upstream.inject(stall_stream(0))  # headers, then silence
    assert api.using(timeout=Timeouts(read=0.5)).chat().text == "echo: hello"
    assert openai_upstream.request_count == 2


def test_an_answer_that_stays_stalled_ends_in_timeout_error(api, openai_upstream):
    openai_upstream.inject(stall_stream(0))
    with pytest.raises(TimeoutError) as caught:
        api.using(timeout=Timeouts(read=0.5), max_retries=0).chat()
    assert openai_upstream.request_count == 1
    assert caught.value.provider == "openai"


# -- streams ---------------------------------------------------------------------------------


def test_a_stalled_stream_times_out_with_timeout_error_and_keeps_what_arrived(api, openai_upstream):
    openai_upstream.inject(stall_stream(2))  # the role chunk and "echo: ", then silence
    events: list[StreamEvent] = []
    with pytest.raises(TimeoutError) as caught:
        api.using(timeout=Timeouts(read=0.5)).stream("one two three", into=events)
    assert text_of(events) == "echo: "
    assert openai_upstream.request_count == 1  # text had arrived: never retried
    assert caught.value.provider == "openai"


def test_a_stream_cut_after_its_first_events_is_stream_error_and_not_retried(api, openai_upstream):
    openai_upstream.inject(cut_stream(3))
    events: list[StreamEvent] = []
    with pytest.raises(StreamError) as caught:
        api.stream("one two three", into=events)
    assert text_of(events) == "echo: one "
    assert openai_upstream.request_count == 1  # a retry would repeat text the caller already has
    assert caught.value.provider == "openai"
    assert "not retried" in caught.value.hint


def test_a_stream_refused_with_429_before_its_first_byte_is_retried(api, openai_upstream):
    openai_upstream.inject(rate_limited(retry_after=0.05))
    events: list[StreamEvent] = []
    answer = api.stream("one two", into=events)
    assert openai_upstream.request_count == 2
    assert text_of(events) == answer.text == "echo: one two"  # each word once


def test_a_stream_whose_connection_drops_before_the_answer_is_retried(api, openai_upstream):
    openai_upstream.inject(drop_connection())
    assert api.stream().text == "echo: hello"
    assert openai_upstream.request_count == 2


def test_a_stream_refused_until_retries_run_out_raises_the_status_error(api, openai_upstream):
    openai_upstream.inject(server_error(503, "overloaded"), times=3)
    with pytest.raises(OverloadedError) as caught:
        api.stream()
    assert not isinstance(caught.value, StreamError)
    assert openai_upstream.request_count == 3
    assert caught.value.provider == "openai"


def test_a_stream_that_keeps_dropping_ends_in_connection_error_naming_the_provider(api, openai_upstream):
    openai_upstream.inject(drop_connection(), times=2)
    with pytest.raises(ConnectionError) as caught:
        api.using(max_retries=1).stream()
    assert openai_upstream.request_count == 2
    assert caught.value.provider == "openai"


def test_a_quota_429_on_a_stream_is_final(api, openai_upstream):
    openai_upstream.inject(openai_error(429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota"))
    with pytest.raises(QuotaExceededError):
        api.stream()
    assert openai_upstream.request_count == 1


# -- the total timeout -----------------------------------------------------------------------


def test_total_timeout_bounds_the_retries(api, openai_upstream):
    # Backoff would wait 0.5 s, then 1 s, ...; a 1 s budget has room for one retry only.
    openai_upstream.inject(server_error(headers=None), times=10)
    with pytest.raises(ServerError):
        api.using(timeout=Timeouts(total=1.0), max_retries=10).chat()
    assert 2 <= openai_upstream.request_count <= 3
    assert openai_upstream.pending_faults >= 7


def test_total_timeout_bounds_a_single_stalled_request(api, openai_upstream):
    # The read timeout alone would wait 600 s for the next byte; the total budget is 1 s.
    openai_upstream.inject(stall_stream(0), times=3)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            api.using(timeout=Timeouts(total=1.0)).chat()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout=15)  # a loose bound: it hangs for 600 s if total is ignored
    assert not worker.is_alive(), "total=1.0 did not bound a stalled request"
    assert outcome and isinstance(outcome[0], TimeoutError)


# -- mistakes caught before anything is sent -------------------------------------------------


def test_a_missing_key_is_a_config_error_with_the_fix_and_nothing_is_sent(api, openai_upstream):
    keyless = api.using(key=None)
    for call in (keyless.chat, keyless.stream):
        with pytest.raises(ConfigError) as caught:
            call()
        assert caught.value.provider == "openai"
        assert "OPENAI_API_KEY" in caught.value.hint and "modelport keys set openai" in caught.value.hint
    assert openai_upstream.request_count == 0


@pytest.mark.parametrize("model", ["gpt-4o-mini", "openia/gpt-4o-mini", "openai/", "/gpt-4o-mini"])
def test_an_unknown_model_name_is_a_config_error_that_lists_the_providers(api, openai_upstream, model):
    with pytest.raises(ConfigError) as caught:
        api.chat(model=model)
    assert repr(model) in caught.value.message
    for provider in ("openai", "anthropic", "gemini", "groq", "local"):
        assert provider in caught.value.hint
    assert openai_upstream.request_count == 0


def test_an_unknown_keyword_is_a_bad_request_that_suggests_extra(api, openai_upstream):
    with pytest.raises(BadRequestError) as caught:
        api.chat(temprature=0.2)
    assert "temprature" in caught.value.message and caught.value.param == "temprature"
    assert "extra=" in caught.value.hint
    assert openai_upstream.request_count == 0


def test_extra_fields_reach_the_wire_as_given(api, openai_upstream):
    api.chat(extra={"user": "user-42", "logit_bias": {"50256": -100}, "service_tier": "flex"})
    body = openai_upstream.last_request.body
    assert body["user"] == "user-42"
    assert body["logit_bias"] == {"50256": -100}
    assert body["service_tier"] == "flex"


def test_events_before_an_in_stream_error_reach_the_caller_first():
    """The provider's start event arrives, then its error event in the same network chunk:
    the caller sees the start, then a StreamError, sync and async, with one request sent."""
    import asyncio

    from modelport import AsyncClient, Client, StreamError
    from tests.fakes.anthropic_upstream import AnthropicUpstream, error_mid_stream

    with AnthropicUpstream() as upstream:
        options = dict(base_urls={"anthropic": upstream.url}, api_keys={"anthropic": "sk-ant-test"})
        seen: list[str] = []
        upstream.inject(error_mid_stream())
        with pytest.raises(StreamError, match="Overloaded"):
            for event in Client(**options).stream("anthropic/claude-fake", "hi"):
                seen.append(event.kind)
        assert seen == ["start"]

        async def consume() -> list[str]:
            kinds: list[str] = []
            async with AsyncClient(**options) as client:
                with pytest.raises(StreamError, match="Overloaded"):
                    async for event in client.stream("anthropic/claude-fake", "hi"):
                        kinds.append(event.kind)
            return kinds

        upstream.inject(error_mid_stream())
        assert asyncio.run(consume()) == ["start"]
        assert upstream.request_count == 2
