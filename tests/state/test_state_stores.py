"""The record stores on the records layer: gateway keys, stored responses and the response
cache on a SQLite file of an older modelport (upgraded in place) or on one PostgreSQL
database that several gateways share."""

from __future__ import annotations

import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import openai
import pytest
from click.testing import CliRunner

from modelport.cli import main
from modelport.server import Settings
from modelport.server.auth import KeyStore
from modelport.server.testing import GatewayThread
from modelport.state.copy import CustomCopy
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.waiting import wait_for

UPSTREAM_KEY = "sk-upstream-secret"

# gateway.db as the modelport before versioned records made it: the first release's table,
# and the admin column a PRAGMA table_info check added later.
OLD_KEYS_SCHEMA = """
CREATE TABLE gateway_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, salt BLOB NOT NULL, hash BLOB NOT NULL,
    rpm INTEGER, tpm INTEGER, budget REAL, models TEXT, expires REAL, created REAL NOT NULL, revoked REAL,
    requests INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0, last_used REAL);
"""
OLD_ADMIN = "ALTER TABLE gateway_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0"


def old_keys_file(path: Path, with_admin: bool) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(OLD_KEYS_SCHEMA)
        if with_admin:
            db.execute(OLD_ADMIN)
        db.execute("INSERT INTO gateway_keys (id, name, salt, hash, rpm, created, requests, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   ("0123456789ab", "old", b"salt", b"hash", 60, 1.0, 7, 0.25))
    db.close()


@pytest.mark.parametrize("with_admin", [False, True])
def test_an_old_key_file_is_upgraded_in_place(tmp_path: Path, with_admin: bool) -> None:
    path = tmp_path / "gateway.db"
    old_keys_file(path, with_admin)
    store = KeyStore(path)
    try:
        [old] = store.records()
        assert (old.name, old.limits.rpm, old.requests, old.cost, old.admin) == ("old", 60, 7, 0.25, False)
        store.create("new", admin=True)
        assert [r.name for r in store.records()] == ["old", "new"]
        store.add_usage({"0123456789ab": [1, 10, 5, 0.5, 123.0]})
        assert store.records()[0].requests == 8 and store.records()[0].last_used == 123.0
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM modelport_schema WHERE component = 'gateway_keys'").fetchone() == (2,)


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


def gateway_config(upstream: OpenAIUpstream, **extra: object) -> dict[str, object]:
    return {"aliases": {"gpt-4o-mini": "openai/gpt-4o-mini"}, "providers": {"openai": {"base_url": upstream.base_url}}, **extra}


def two_gateways(upstream: OpenAIUpstream, records: str, **config: object) -> tuple[GatewayThread, GatewayThread]:
    settings = Settings(auth=True, log_calls=False, records=records, max_tokens=50)
    return tuple(GatewayThread(settings, config=gateway_config(upstream, **config), api_keys={"openai": UPSTREAM_KEY})
                 for _ in range(2))  # type: ignore[return-value]


def pg_key(postgres_url: str, name: str) -> str:
    store = KeyStore(url=postgres_url)
    try:
        return store.create(name)
    finally:
        store.close()


def hit_on_retry(upstream: OpenAIUpstream, ask: Callable[[], str], upstream_calls: int) -> tuple[str, int]:
    """Ask until the answer comes from the cache (the put is written behind the first answer,
    so an early ask may miss); returns the answer and the upstream calls made so far."""
    deadline = time.monotonic() + 5
    while True:
        answer = ask()
        if upstream.request_count == upstream_calls or time.monotonic() > deadline:
            return answer, upstream_calls
        upstream_calls += 1  # a miss went upstream (and will be cached too)


def keys_cli(config: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["keys", *args], env={"MODELPORT_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    return result.stdout


def status(gw: GatewayThread, key: str) -> int:
    return httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=10,
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).status_code


def test_a_key_revoked_on_one_instance_is_refused_by_all(tmp_path: Path, upstream: OpenAIUpstream, postgres_url: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[state]\nrecords = "{postgres_url}"\n')
    # The CLI follows the config's [state] records: the key lands in PostgreSQL, no file is made.
    key = keys_cli(config, "create", "shared").strip()
    assert not (tmp_path / "data" / "gateway.db").exists()
    a, b = two_gateways(upstream, postgres_url)
    with a, b:
        assert status(a, key) == 200 and status(b, key) == 200
        keys_cli(config, "revoke", "shared")
        revoked = time.monotonic()
        refused: dict[str, float] = {}
        served = 2
        while len(refused) < 2 and time.monotonic() - revoked < 5:
            for name, gw in (("a", a), ("b", b)):
                if name in refused:
                    continue
                code = status(gw, key)
                if code == 401:
                    refused[name] = time.monotonic() - revoked
                served += code == 200
            time.sleep(0.02)
        print(f"revoked key refused after {refused} s")
        # The reload runs every second; a loaded 2-core machine may add a little to that.
        assert set(refused) == {"a", "b"} and max(refused.values()) < 2.5
        # Usage of both instances adds up in the one row (each saves about once a second).
        wait_for(lambda: f'"requests": {served},' in keys_cli(config, "usage", "--all", "--json"), 15,
                 lambda: f"usage is not {served} requests: {keys_cli(config, 'usage', '--all', '--json')}")


def test_a_response_stored_on_one_instance_is_found_on_another(upstream: OpenAIUpstream, postgres_url: str) -> None:
    key, other = pg_key(postgres_url, "talker"), pg_key(postgres_url, "other")
    a, b = two_gateways(upstream, postgres_url)
    with a, b:
        sdk_a, sdk_b = (openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) for gw in (a, b))
        first = sdk_a.responses.create(model="gpt-4o-mini", input="remember the word kiwi")
        # The very next request, on the other instance, finds it: the write was done before A answered.
        second = sdk_b.responses.create(model="gpt-4o-mini", input="which word?", previous_response_id=first.id)
        assert sdk_b.responses.retrieve(first.id).output_text == first.output_text
        assert [item.id for item in sdk_a.responses.input_items.list(second.id)]
        with sdk_b.responses.create(model="gpt-4o-mini", input="streamed", stream=True) as events:
            done = [event for event in events if event.type == "response.completed"][0]
        assert sdk_a.responses.retrieve(done.response.id).id == done.response.id
        # Owned per key on every instance.
        stranger = openai.OpenAI(base_url=a.url + "/v1", api_key=other, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            stranger.responses.retrieve(first.id)
        sdk_b.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            sdk_a.responses.retrieve(first.id)


def test_an_old_responses_file_keeps_its_responses(tmp_path: Path) -> None:
    import asyncio

    from modelport.errors import BadRequestError
    from modelport.server.responses_store import ChainLimits, ResponseStore, Stored, StoreQuota, decode_chain

    path = tmp_path / "responses.db"
    with sqlite3.connect(path) as db:  # as the SQLite-only store made it
        db.executescript("""
            CREATE TABLE responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, previous_id TEXT, expires REAL NOT NULL,
                response BLOB NOT NULL, input BLOB NOT NULL);
            CREATE TABLE items (owner TEXT NOT NULL, id TEXT NOT NULL, response_id TEXT NOT NULL, expires REAL NOT NULL,
                item BLOB NOT NULL, PRIMARY KEY (owner, id));""")
        db.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?)", ("resp_old", "k", None, time.time() + 60, b'{"id":"resp_old"}', b"[]"))
    db.close()

    async def run() -> None:
        store = ResponseStore(path)
        try:
            assert (await store.get("k", "resp_old")).response == {"id": "resp_old"}
            await store.persist("k", Stored({"id": "resp_new", "previous_response_id": "resp_old"}, []))
            assert decode_chain(await store.chain("k", "resp_new", ChainLimits(512, 2**20))) == []
            assert await store.get("other", "resp_old") is None
            # The old response's size (17 + 2 bytes) was set by the upgrade, the new one's (51 + 2) when stored.
            await store.ensure_room("k", StoreQuota(3, 19 + 53 + 1))
            with pytest.raises(BadRequestError, match="stores 2 responses"):
                await store.ensure_room("k", StoreQuota(3, 19 + 53))
        finally:
            await store.aclose()

    asyncio.run(run())


def test_without_postgres_keys_fail_closed_in_the_callers_dialect_and_heal(upstream: OpenAIUpstream, postgres_server,
                                                                            postgres_url: str) -> None:
    import anthropic

    key = pg_key(postgres_url, "steady")
    settings = Settings(auth=True, log_calls=False, records=postgres_url, max_tokens=50, keys_max_stale=1.5)
    with GatewayThread(settings, config=gateway_config(upstream), api_keys={"openai": UPSTREAM_KEY}) as gw:
        sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
        first = sdk.responses.create(model="gpt-4o-mini", input="hi")
        postgres_server.stop()
        try:
            # A record the request needs: 503, not 500.
            with pytest.raises(openai.InternalServerError) as caught:
                sdk.responses.retrieve(first.id)
            assert caught.value.status_code == 503 and "records database" in caught.value.message
            # A key never seen: 503 at once (it may be new), not 401.
            unknown = "mpk_0123456789ab_" + "x" * 43
            assert status(gw, unknown) == 503
            # The key last read serves on briefly, then is refused: 503 in each caller's dialect.
            deadline = time.monotonic() + 15
            while status(gw, key) == 200:
                assert time.monotonic() < deadline, "a key stayed valid with its store unreachable"
                time.sleep(0.1)
            claude = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
            with pytest.raises(anthropic.APIStatusError) as refused:
                claude.messages.create(model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
            # A 503 in every dialect: the gateway is not overloaded, its state is out of reach.
            assert refused.value.status_code == 503 and refused.value.body["error"]["type"] == "api_error"
            assert "cannot read its keys" in refused.value.body["error"]["message"]
        finally:
            postgres_server.start()
        back = time.monotonic()
        while status(gw, key) != 200:
            assert time.monotonic() - back < 10, "the gateway did not reconnect to PostgreSQL"
            time.sleep(0.1)
        print(f"serving again {time.monotonic() - back:.2f} s after PostgreSQL returned")
        assert sdk.responses.retrieve(first.id).id == first.id


def test_an_old_cache_file_is_upgraded_in_place(tmp_path: Path) -> None:
    from modelport.cache import ResponseCache
    from modelport.types import ChatRequest, ChatResponse, Message

    path = tmp_path / "cache.db"
    request = ChatRequest("openai/gpt-4o-mini", [Message.user("hi")])
    answer = ChatResponse("r1", "gpt-4o-mini", Message.assistant("hello"))
    with sqlite3.connect(path) as db:  # as calllog.connect's PRAGMA user_version migrations made it
        db.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, model TEXT NOT NULL, response_json TEXT NOT NULL,"
                   " created_at REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0)")
        db.execute("CREATE INDEX entries_created_at ON entries (created_at)")
        db.execute("PRAGMA user_version = 1")
    db.close()
    ResponseCache(path).put(request, answer)  # made by today's code, read back through an upgraded file
    cache = ResponseCache(path)
    try:
        assert cache.get(request).text == "hello"
        assert cache.stats()["entries"] == 1 and cache.stats()["hits"] == 1
    finally:
        cache.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM modelport_schema WHERE component = 'response_cache'").fetchone() == (1,)


def counts(output: str) -> dict[str, tuple[int, int]]:
    """{what: (new, already there)} from `state migrate`'s table stores' summary."""
    return {m[1]: (int(m[2]), int(m[3])) for m in re.finditer(r"^  (.+?)\s+(\d+) new\s+(\d+) already there$", output, re.M)}


def test_state_migrate_copies_sqlite_state_into_postgres_once(tmp_path: Path, upstream: OpenAIUpstream, postgres_url: str,
                                                              monkeypatch: pytest.MonkeyPatch, install_plugin) -> None:
    import asyncio

    from modelport.cache import ResponseCache, default_cache_path
    from modelport.server.responses_store import ResponseStore, Stored, default_responses_path
    from modelport.types import ChatRequest, ChatResponse, Message

    # A single machine's state, as older modelport left it: an old gateway.db, stored responses, a cache.
    from modelport.server.auth import default_store_path

    keys_path = default_store_path()
    keys_path.parent.mkdir(parents=True, exist_ok=True)
    old_keys_file(keys_path, with_admin=False)
    key = KeyStore(keys_path).create("moving", rpm=100)
    KeyStore(keys_path).add_usage({key.split("_")[1]: [3, 30, 12, 0.125, 5.0]})

    async def store_response() -> None:
        store = ResponseStore(default_responses_path({}))
        await store.persist(key.split("_")[1], Stored({"id": "resp_moved", "output": [{"id": "msg_1", "type": "message"}]},
                                                      [{"id": "msg_0", "type": "message"}]))
        await store.aclose()

    asyncio.run(store_response())
    request = ChatRequest("openai/gpt-4o-mini", [Message.user("cached before the move")])
    ResponseCache(default_cache_path({})).put(request, ChatResponse("r1", "gpt-4o-mini", Message.assistant("from the old cache")))

    # An upload to the gateway's Files API, kept in the batch dir's files.db.
    from modelport.batch.files_api import FilesAPI
    from modelport.config import data_dir

    async def upload() -> None:
        api = FilesAPI(data_dir() / "gateway")
        await api.upload_file("rows.jsonl", b'{"custom_id": "a"}\n', "batch")
        await api.shutdown()

    asyncio.run(upload())

    # A plugin's store that copies more than table rows plugs in as a CustomCopy (as Files/Batches do).
    copied_into: list[str] = []
    extra = CustomCopy("notes", lambda cfg, target: copied_into.append(target.url) or {"notes": 3})
    monkeypatch.setattr(sys.modules[__name__], "EXTRA", extra, raising=False)
    install_plugin("mp-notes", {"modelport.stores": {"notes": f"{__name__}:EXTRA"}}, {})
    config = tmp_path / "config.toml"
    config.write_text(f'[state]\nrecords = "{postgres_url}"\n')
    pg_key(postgres_url, "old")  # the same name as a key being moved: that one stays out
    runner = CliRunner()
    first = runner.invoke(main, ["state", "migrate", "--config", str(config)])
    assert first.exit_code == 0, first.output
    assert counts(first.stdout) == {"gateway keys: gateway_keys": (1, 1), "stored responses: responses": (1, 0),
                                    "stored responses: items": (2, 0), "cached responses: entries": (1, 0)}
    assert re.search(r"^  notes: notes\s+3 new$", first.stdout, re.M) and copied_into == [postgres_url]
    assert re.search(r"^  files and batches: files\s+1 new$", first.stdout, re.M), first.stdout
    second = runner.invoke(main, ["state", "migrate", "--to", postgres_url])
    assert second.exit_code == 0, second.output
    assert counts(second.stdout) == {"gateway keys: gateway_keys": (0, 2), "stored responses: responses": (0, 1),
                                     "stored responses: items": (0, 2), "cached responses: entries": (0, 1)}

    # The copied state serves: the key with its totals and limits, its stored response, the cache.
    [moved] = [r for r in KeyStore(url=postgres_url).records() if r.name == "moving"]
    assert (moved.requests, moved.cost, moved.limits.rpm) == (3, 0.125, 100)
    settings = Settings(auth=True, log_calls=False, records=postgres_url, max_tokens=50)
    with GatewayThread(settings, config=gateway_config(upstream), api_keys={"openai": UPSTREAM_KEY}) as gw:
        sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
        assert [item.id for item in sdk.responses.input_items.list("resp_moved")] == ["msg_0"]
    assert ResponseCache(url=postgres_url).get(request).text == "from the old cache"
    import psycopg

    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT filename, purpose FROM files").fetchall() == [("rows.jsonl", "batch")]


def test_state_help_explains_the_two_parts() -> None:
    result = CliRunner().invoke(main, ["state", "--help"])
    assert result.exit_code == 0
    assert "counters" in result.output and "records" in result.output and "state migrate --to postgresql://" in result.output
    result = CliRunner().invoke(main, ["state", "migrate"])
    assert result.exit_code == 1 and "--to postgresql://" in result.output


def test_state_status_names_urls_reachability_and_schema_versions(tmp_path: Path, postgres_server, postgres_url: str) -> None:
    pg_key(postgres_url, "status")
    config = tmp_path / "config.toml"
    config.write_text(f'[state]\nrecords = "{postgres_url.replace("modelport@", "modelport:pw@")}"\n')
    result = CliRunner().invoke(main, ["state", "status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "memory:" in result.output and "pw" not in result.output and "***" in result.output
    assert "reachable; schema: gateway_keys v2" in result.output
    postgres_server.stop()
    try:
        result = CliRunner().invoke(main, ["state", "status", "--config", str(config)])
    finally:
        postgres_server.start()
    assert result.exit_code == 1 and "UNREACHABLE" in result.output, result.output


def test_the_gateway_cache_is_shared_streamed_or_not(upstream: OpenAIUpstream, postgres_url: str) -> None:
    key = pg_key(postgres_url, "cached")
    a, b = two_gateways(upstream, postgres_url, cache={"enabled": True})
    with a, b:
        start = upstream.request_count
        sdk_a, sdk_b = (openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) for gw in (a, b))

        def whole(sdk: openai.OpenAI, question: str) -> str:
            messages = [{"role": "user", "content": question}]
            return sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=20).choices[0].message.content

        def streamed(sdk: openai.OpenAI, question: str) -> str:
            messages = [{"role": "user", "content": question}]
            chunks = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=20, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        # Whole answers: cached through A, a hit on B.
        first = whole(sdk_a, "a question worth caching")
        assert upstream.request_count == start + 1
        again, calls = hit_on_retry(upstream, lambda: whole(sdk_b, "a question worth caching"), start + 1)
        assert upstream.request_count == calls, "gateway B did not find A's cached answer"
        assert again == first
        # Streams: a completed stream is kept, replayed as a stream, and answers a whole request too.
        live = streamed(sdk_a, "a streamed question")
        assert upstream.request_count == calls + 1
        replayed, calls = hit_on_retry(upstream, lambda: streamed(sdk_b, "a streamed question"), calls + 1)
        assert upstream.request_count == calls and replayed == live
        assert whole(sdk_b, "a streamed question") == live and upstream.request_count == calls
    # Every request counts, but a hit costs the key nothing: only the answers that went
    # upstream count tokens (the fake counts a prompt's words).
    usage = KeyStore(url=postgres_url).records()[0]
    went_upstream = list(upstream.requests)[start - upstream.request_count:]
    assert usage.requests == len(went_upstream) + 3
    assert usage.input_tokens == sum(len(r.body["messages"][0]["content"].split()) for r in went_upstream)
