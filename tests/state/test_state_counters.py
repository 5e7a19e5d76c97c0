"""Per-key counters in each store (memory, SQLite, real Redis): windows, budgets, settling,
exactness under concurrency from several OS processes, and failing closed through a real
gateway when Redis goes away."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import anthropic
import httpx
import openai
import pytest

from modelport.errors import QuotaExceededError, RateLimitError, StateUnavailableError
from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from modelport.state.counter_stores import open_counters
from modelport.state.counters import Counters, KeyLimits, MemoryCounters
from modelport.state.redis_counters import RedisCounters
from modelport.state.sqlite_counters import SQLiteCounters
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.servers import RedisServer, free_port
from tests.paths import ROOT

KINDS = ("memory", "sqlite", "redis")


class Clock:
    """The counters' time: a fake one that ``advance`` moves (memory, SQLite), or, for Redis
    (whose own clock times the windows), real time over a short window."""

    def __init__(self, fake: bool) -> None:
        self.fake = fake
        self.now = 1000.0
        self.window = 60.0 if fake else 1.0

    def __call__(self) -> float:
        return self.now

    def advance(self, fraction: float) -> None:
        """Let ``fraction`` of a window pass."""
        if self.fake:
            self.now += fraction * self.window
        else:
            time.sleep(fraction * self.window)


def make(kind: str, clock: Clock, tmp_path: Path, redis_url: str | None) -> Counters:
    if kind == "memory":
        return MemoryCounters(window=clock.window, clock=clock)
    if kind == "sqlite":
        return SQLiteCounters(f"sqlite:///{tmp_path / 'counters.db'}", window=clock.window, clock=clock)
    assert redis_url is not None
    return RedisCounters(redis_url, window=clock.window)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(kind: str, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if kind == "redis" else None


def run(kind: str, tmp_path: Path, redis_url: str | None, body: Callable[[Counters, Clock], Awaitable[None]]) -> None:
    clock = Clock(fake=kind != "redis")

    async def main() -> None:
        counters = make(kind, clock, tmp_path, redis_url)
        try:
            await body(counters, clock)
        finally:
            await counters.close()

    asyncio.run(main())


def test_rpm_window_slides(kind: str, store_url: str | None, tmp_path: Path) -> None:
    async def body(counters: Counters, clock: Clock) -> None:
        limits = KeyLimits(rpm=2)
        await counters.reserve("k", limits, 1, 0.0)
        clock.advance(0.1)
        await counters.reserve("k", limits, 1, 0.0)
        with pytest.raises(RateLimitError) as limited:
            await counters.reserve("k", limits, 1, 0.0)
        # The first request leaves the window 0.9 windows from now.
        assert 0.7 * clock.window < limited.value.retry_after <= 0.9 * clock.window + 0.01
        clock.advance(0.95)
        await counters.reserve("k", limits, 1, 0.0)  # the first request has left the window
        with pytest.raises(RateLimitError):
            await counters.reserve("k", limits, 1, 0.0)
        await counters.reserve("other", limits, 1, 0.0)  # keys do not share windows

    run(kind, tmp_path, store_url, body)


def test_tpm_books_the_worst_case_then_settles_to_real_usage(kind: str, store_url: str | None, tmp_path: Path) -> None:
    async def body(counters: Counters, clock: Clock) -> None:
        limits = KeyLimits(tpm=100)
        booking = await counters.reserve("k", limits, 80, 0.0)
        with pytest.raises(RateLimitError) as limited:
            await counters.reserve("k", limits, 30, 0.0)
        assert 0 < limited.value.retry_after <= clock.window
        await counters.settle(booking, 10, 0.0)
        await counters.settle(booking, 10, 0.0)  # settling twice changes nothing
        await counters.reserve("k", limits, 90, 0.0)  # 10 + 90 fit
        with pytest.raises(RateLimitError):
            await counters.reserve("k", limits, 1, 0.0)
        with pytest.raises(QuotaExceededError, match="more than the key's limit of 100"):
            await counters.reserve("k", limits, 101, 0.0)  # can never fit
        clock.advance(1.05)
        await counters.reserve("k", limits, 100, 0.0)  # the window emptied

    run(kind, tmp_path, store_url, body)


def test_budget_counts_held_and_spent_and_refunds_failures(kind: str, store_url: str | None, tmp_path: Path) -> None:
    async def body(counters: Counters, clock: Clock) -> None:
        limits = KeyLimits(budget=1.0)
        first = await counters.reserve("k", limits, 0, 0.6)
        with pytest.raises(QuotaExceededError):
            await counters.reserve("k", limits, 0, 0.6)  # 0.6 held + 0.6 > 1.0: no overshoot in flight
        await counters.settle(first, 0, 0.1)
        second = await counters.reserve("k", limits, 0, 0.6)
        with pytest.raises(QuotaExceededError, match=r"\$0\.1000 spent and \$0\.6000 held"):
            await counters.reserve("k", limits, 0, 0.6)
        await counters.settle(second, 0, 0.0)  # an upstream error: the hold is refunded, nothing spent
        third = await counters.reserve("k", limits, 0, 0.9)
        await counters.settle(third, 0, 0.9)
        with pytest.raises(QuotaExceededError, match=r"\$1\.0000 spent and \$0\.0000 held"):
            await counters.reserve("k", limits, 0, 0.01)

    run(kind, tmp_path, store_url, body)


def test_refund_frees_the_tokens_too(kind: str, store_url: str | None, tmp_path: Path) -> None:
    async def body(counters: Counters, clock: Clock) -> None:
        limits = KeyLimits(rpm=10, tpm=100)
        booking = await counters.reserve("k", limits, 100, 0.0)
        await counters.settle(booking, 0, 0.0)
        await counters.reserve("k", limits, 100, 0.0)

    run(kind, tmp_path, store_url, body)


def test_a_key_without_limits_books_nothing(kind: str, store_url: str | None, tmp_path: Path) -> None:
    async def body(counters: Counters, clock: Clock) -> None:
        assert await counters.reserve("free", KeyLimits(), 10**9, 10**6) is None
        await counters.settle(None, 5, 1.0)

    run(kind, tmp_path, store_url, body)


def test_stored_spend_seeds_the_budget(kind: str, store_url: str | None, tmp_path: Path) -> None:
    async def body(counters: Counters, clock: Clock) -> None:
        counters.seed("k", 0.9)
        with pytest.raises(QuotaExceededError, match=r"\$0\.9000 spent"):
            await counters.reserve("k", KeyLimits(budget=1.0), 0, 0.2)
        await counters.reserve("k", KeyLimits(budget=1.0), 0, 0.1)

    run(kind, tmp_path, store_url, body)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_shared_stores_take_the_stored_spend_once(kind: str, store_url: str | None, tmp_path: Path) -> None:
    """Two instances both seeded with the key store's 0.5: the shared figure counts it once,
    and each instance's settlements add up in it."""
    async def main() -> None:
        clock = Clock(fake=kind != "redis")
        a, b = make(kind, clock, tmp_path, store_url), make(kind, clock, tmp_path, store_url)
        limits = KeyLimits(budget=1.0)
        try:
            for counters in (a, b):
                counters.seed("k", 0.5)
            await a.settle(await a.reserve("k", limits, 0, 0.3), 0, 0.3)  # spent 0.8
            await b.reserve("k", limits, 0, 0.15)  # 0.8 + 0.15 fits; 0.5 counted twice would not
            with pytest.raises(QuotaExceededError, match=r"\$0\.8000 spent and \$0\.1500 held"):
                await b.reserve("k", limits, 0, 0.1)
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


# -- exactness under concurrency ----------------------------------------------------------

LIMITS = {"rpm": KeyLimits(rpm=50), "tpm": KeyLimits(tpm=1000), "budget": KeyLimits(budget=1.0)}
# Each attempt books 30 tokens and $0.07: exactly 50 requests, 33 token bookings and 14
# budget holds fit, however the attempts interleave.
EXPECTED = {"rpm": 50, "tpm": 1000 // 30, "budget": 14}
ATTEMPTS = 40  # per process and limit

_HAMMER = textwrap.dedent("""
    import asyncio, json, sys
    from modelport.errors import RateLimitError
    from modelport.state.counter_stores import open_counters
    from modelport.state.counters import KeyLimits

    async def main():
        counters = open_counters(sys.argv[1])
        limits = {"rpm": KeyLimits(rpm=50), "tpm": KeyLimits(tpm=1000), "budget": KeyLimits(budget=1.0)}
        sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.readline()  # start together

        async def attempt(name):
            try:
                await counters.reserve(name, limits[name], 30, 0.07)
                return name
            except RateLimitError:
                return None

        results = await asyncio.gather(*(attempt(name) for name in limits for _ in range(int(sys.argv[2]))))
        await counters.close()
        print(json.dumps({name: results.count(name) for name in limits}))

    asyncio.run(main())
""")


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_several_processes_admit_exactly_the_limits(kind: str, store_url: str | None, tmp_path: Path) -> None:
    url = store_url or f"sqlite:///{tmp_path / 'counters.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", _HAMMER, url, str(ATTEMPTS)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        counts = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    admitted = {name: sum(c[name] for c in counts) for name in LIMITS}
    assert admitted == EXPECTED


def test_concurrent_requests_in_one_process_admit_exactly_the_limits(kind: str, store_url: str | None, tmp_path: Path) -> None:
    async def body(counters: Counters, clock: Clock) -> None:
        async def attempt(name: str) -> str | None:
            try:
                await counters.reserve(name, LIMITS[name], 30, 0.07)
                return name
            except RateLimitError:
                return None

        results = await asyncio.gather(*(attempt(name) for name in LIMITS for _ in range(3 * ATTEMPTS)))
        assert {name: results.count(name) for name in LIMITS} == EXPECTED

    run(kind, tmp_path, store_url, body)


# -- the stores themselves -------------------------------------------------------------------

def test_open_counters_picks_by_scheme_and_imports_no_client_early(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from modelport.state.counter_stores import open_counters
        from modelport.state.counters import MemoryCounters
        assert isinstance(open_counters(None), MemoryCounters) and isinstance(open_counters("memory:"), MemoryCounters)
        sqlite = open_counters("sqlite:///{tmp_path}/c.db")
        redis = open_counters("redis://:hunter2@127.0.0.1:1/0")
        assert "redis" not in sys.modules, "opening must not import the client"
        print(type(sqlite).__name__, type(redis).__name__, redis.name)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SQLiteCounters", "RedisCounters", "redis://:***@127.0.0.1:1/0"]


def test_sqlite_counters_file_is_private(tmp_path: Path) -> None:
    async def main() -> None:
        counters = open_counters(f"sqlite:///{tmp_path / 'state' / 'counters.db'}")
        await counters.reserve("k", KeyLimits(rpm=1), 0, 0.0)
        assert await counters.healthy()
        await counters.close()

    asyncio.run(main())
    assert (tmp_path / "state" / "counters.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_unreachable_redis_fails_closed_with_the_password_redacted() -> None:
    async def main() -> None:
        counters = RedisCounters(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
        started = time.monotonic()
        with pytest.raises(StateUnavailableError) as failed:
            await counters.reserve("k", KeyLimits(rpm=5), 0, 0.0)
        assert time.monotonic() - started < 3
        # The caller's part names no URL; the operator's (str: logs, the terminal) masks it.
        caller, operator = f"{failed.value.message} {failed.value.hint}", str(failed.value)
        assert "redis://" not in caller and "rate-limit store is unavailable" in caller
        assert "hunter2" not in operator and "redis://:***@127.0.0.1" in operator and "check that it runs" in operator
        assert failed.value.status == 503
        assert not await counters.healthy()
        await counters.close()

    asyncio.run(main())


def test_a_redis_that_hangs_fails_closed_within_the_socket_timeout() -> None:
    """A server that takes the connection but never answers (a hung Redis, a dropped
    network): a 503 after the short socket timeout, then at once while it stays away."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)

        async def main() -> None:
            counters = RedisCounters(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.3)
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(StateUnavailableError):
                    await counters.reserve("k", KeyLimits(rpm=5), 0, 0.0)
                assert time.monotonic() - started < 2
            await counters.close()

        asyncio.run(main())


def test_redis_outage_settles_later_and_reconnects(redis_server: RedisServer, redis_url: str) -> None:
    async def main() -> None:
        counters = RedisCounters(redis_url)
        limits = KeyLimits(rpm=100, budget=1.0)
        booking = await counters.reserve("k", limits, 10, 0.5)
        redis_server.stop()
        try:
            with pytest.raises(StateUnavailableError):
                await counters.reserve("k", limits, 10, 0.1)
            assert not await counters.healthy()
            await counters.settle(booking, 5, 0.2)  # kept, not raised: the request already ran
        finally:
            redis_server.start()
        # Redis lost its data in the restart: the key's spend comes back from the key store.
        counters.seed("k", 0.7)
        await wait_until(counters.healthy, 5.0)
        await counters.reserve("k", limits, 10, 0.3)
        with pytest.raises(QuotaExceededError, match=r"\$0\.7000 spent and \$0\.3000 held"):
            # The kept settlement belonged to the lost state, so it was not added twice.
            await counters.reserve("k", limits, 10, 0.01)
        await counters.close()

    asyncio.run(main())


async def wait_until(check: Callable[[], Awaitable[bool]], seconds: float) -> float:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, f"not back within {seconds} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def test_redis_keys_expire_when_idle(redis_url: str) -> None:
    import redis

    async def main() -> None:
        counters = RedisCounters(redis_url)
        await counters.reserve("k", KeyLimits(rpm=3, budget=1.0), 1, 0.1)
        await counters.close()

    asyncio.run(main())
    client = redis.Redis.from_url(redis_url)
    try:
        keys = client.keys("*")
        assert keys and all(0 < client.ttl(key) <= 86400 for key in keys)
    finally:
        client.close()


# -- through a real gateway ------------------------------------------------------------------

@pytest.fixture
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as fake:
        yield fake


def gateway_for(upstream: OpenAIUpstream, keys: Path, counters: str) -> GatewayThread:
    config = {"aliases": {"fake": "openai/gpt-4o-mini"}, "providers": {"openai": {"base_url": upstream.base_url}}}
    settings = Settings(auth=True, log_calls=False, keys_path=str(keys), max_tokens=50, counters=counters)
    return GatewayThread(settings, config=config, api_keys={"openai": "sk-x"})


def openai_chat(gw: GatewayThread, key: str) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)


def three_dialects(gw: GatewayThread, key: str) -> dict[str, httpx.Response]:
    """One request in each dialect, raw, so the status and body shapes are visible."""
    return {
        "openai": openai_chat(gw, key),
        "anthropic": httpx.post(gw.url + "/v1/messages", headers={"x-api-key": key},
                                json={"model": "fake", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, timeout=10),
        "gemini": httpx.post(gw.url + "/v1beta/models/fake:generateContent", headers={"x-goog-api-key": key},
                             json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=10),
    }


def error_message(dialect: str, body: dict[str, Any]) -> str:
    if dialect == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
    elif dialect == "gemini":
        assert body["error"]["code"] == 503 and body["error"]["status"] == "UNAVAILABLE"
    else:
        assert body["error"]["type"] == "server_error" and body["error"]["code"] == "service_unavailable"
    return body["error"]["message"]


def test_gateway_fails_closed_in_every_dialect_and_recovers(redis_server: RedisServer, redis_url: str, upstream: OpenAIUpstream,
                                                            tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "gateway.db")
    limited = store.create("limited", rpm=1000, budget=10.0)
    free = store.create("free")
    with gateway_for(upstream, store.path, redis_url) as gw:
        assert {d: r.status_code for d, r in three_dialects(gw, limited).items()} == dict.fromkeys(("openai", "anthropic", "gemini"), 200)
        redis_server.stop()
        try:
            for dialect, response in three_dialects(gw, limited).items():
                assert response.status_code == 503, (dialect, response.text)
                message = error_message(dialect, response.json())
                assert "rate-limit store is unavailable" in message and "refused" in message and "redis://" not in message
            # A key with no limits needs no counters; /health answers throughout.
            assert all(r.status_code == 200 for r in three_dialects(gw, free).values())
            assert httpx.get(gw.url + "/health", timeout=5).status_code == 200
            with pytest.raises(openai.InternalServerError, match="rate-limit store"):
                openai.OpenAI(base_url=gw.url + "/v1", api_key=limited, max_retries=0).chat.completions.create(
                    model="fake", messages=[{"role": "user", "content": "hi"}])
            with pytest.raises(anthropic.InternalServerError, match="rate-limit store"):
                anthropic.Anthropic(base_url=gw.url, api_key=limited, max_retries=0).messages.create(
                    model="fake", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        finally:
            redis_server.start()
        started = time.monotonic()
        while openai_chat(gw, limited).status_code != 200:
            assert time.monotonic() - started < 5, "the gateway did not recover within 5 s of Redis's return"
            time.sleep(0.05)
        assert all(r.status_code == 200 for r in three_dialects(gw, limited).values())


def test_gateway_limits_hold_on_redis_and_free_keys_never_touch_it(redis_url: str, upstream: OpenAIUpstream, tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "gateway.db")
    limited = store.create("limited", rpm=3)
    free = store.create("free")
    import redis

    watcher = redis.Redis.from_url(redis_url)
    with gateway_for(upstream, store.path, redis_url) as gw:
        before = watcher.info("stats")["total_commands_processed"]
        for _ in range(5):
            assert all(r.status_code == 200 for r in three_dialects(gw, free).values())
        # The one command counted is the second INFO itself.
        assert watcher.info("stats")["total_commands_processed"] - before == 1
        watcher.close()
        statuses = [r.status_code for r in three_dialects(gw, limited).values()]
        statuses.append(openai_chat(gw, limited).status_code)
        assert statuses == [200, 200, 200, 429]


def test_two_gateways_share_one_rpm_through_sqlite(upstream: OpenAIUpstream, tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "gateway.db")
    key = store.create("shared", rpm=4)
    url = f"sqlite:///{tmp_path / 'counters.db'}"
    with gateway_for(upstream, store.path, url) as a, gateway_for(upstream, store.path, url) as b:
        statuses = [openai_chat(gw, key).status_code for gw in (a, b, a, b, a, b)]
    assert statuses == [200, 200, 200, 200, 429, 429]

