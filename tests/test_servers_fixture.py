"""The test servers are real: data written through one connection is read through another."""

from __future__ import annotations


def test_redis_is_real_and_restartable(redis_server, redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set("k", "v")
    assert redis.Redis.from_url(redis_url).get("k") == b"v"
    redis_server.stop()
    assert not redis_server.running
    redis_server.start()
    assert redis.Redis.from_url(redis_url).ping()


def test_postgres_gives_each_test_its_own_database(postgres_url, postgres_server):
    import psycopg

    with psycopg.connect(postgres_url) as db:
        db.execute("CREATE TABLE t (x int)")
        db.execute("INSERT INTO t VALUES (1)")
    other = postgres_server.new_database()
    with psycopg.connect(other) as db:
        assert db.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'").fetchone() == (0,)
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
