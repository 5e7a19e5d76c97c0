"""docs/deploy.md, followed step by step: a gateway that ran alone on SQLite moves its state
into PostgreSQL (`modelport state migrate`), then three gateways sharing that database and
one Redis serve its old key behind nginx (the doc's own block), with the key's limits
exact across them, its earlier spend carried over, and every gateway ready."""

from __future__ import annotations

import httpx
import pytest

from tests.cluster import RATE_LIMITED, Cluster, ClusterUpstream, Nginx, chat_call, load, spread


def test_the_documented_move_from_one_gateway_to_many(redis_url: str, postgres_url: str, tmp_path) -> None:
    rpm = 40
    with ClusterUpstream() as upstream:
        # One gateway on SQLite, as before the move: a key with a limit, some spend.
        with Cluster(tmp_path / "alone", upstream, count=1) as alone:
            key = alone.create_key("team-a", rpm=rpm, budget=5.0)
            before = load([chat_call("openai", alone.urls[0], key, "echo", f"before the move {i}", 8) for i in range(3)])
            assert before.statuses == {200: 3}, before.summary()
        # Stopped (its usage saved); its SQLite state copied into PostgreSQL.
        spent = alone.key_usage("team-a")
        assert spent["requests"] == 3 and spent["cost_usd"] > 0
        alone.cli("state", "migrate", "--to", postgres_url, "--config", str(alone.config_path))

        # The new layout: 3 gateways (data dirs of their own), one Redis, one PostgreSQL, nginx.
        with Cluster(tmp_path / "many", upstream, count=3, counters=redis_url, records=postgres_url) as many, \
                Nginx(tmp_path / "nginx", many.urls) as balancer:
            for url in many.urls:
                assert httpx.get(url + "/ready", timeout=5).status_code == 200
            carried = many.key_usage("team-a")
            assert (carried["requests"], carried["cost_usd"]) == (3, pytest.approx(spent["cost_usd"], abs=1e-6))
            calls = spread([balancer.url], 100, lambda dialect, url, i: chat_call(dialect, url, key, "echo", f"after {i}", 8),
                           dialects=("openai", "anthropic", "gemini"))
            tally = load(calls, concurrency=100)
            # The windows start empty in Redis: exactly rpm calls pass, across the three gateways.
            assert tally.statuses == {200: rpm, 429: 100 - rpm}, tally.summary()
            assert all(o.kind == RATE_LIMITED[o.call.dialect] for o in tally.outcomes if not o.ok), tally.summary()
            after = many.wait_usage("team-a", 3 + rpm)
            assert after["requests"] == 3 + rpm and after["cost_usd"] > spent["cost_usd"]
