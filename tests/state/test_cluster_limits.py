"""A key's limits hold across every gateway process (issue 12, "What must hold across instances").

Two layouts (and one plain process as the reference), the same three limits, 400 concurrent requests each:

* 4 `modelport serve` processes on separate ports (and separate data dirs, as on separate
  machines) sharing one Redis (counters) and one PostgreSQL (keys, usage);
* one `modelport serve --workers 2` on one port with no server configured at all.

rpm is exact (exactly rpm answers, the rest 429 in the caller's dialect); tpm is exact in
the tokens booked (the ``exact`` model settles at what it booked, so exactly
``tpm // booked`` fit); a budget is never overspent (every call reserves its worst case
before it runs and the fake never reports more than that, so the allowance for calls
admitted when it ran out is zero) and the spend every instance recorded adds up.
"""

from __future__ import annotations

import math

import httpx
import pytest

from modelport.dialects.openai import decode_request
from modelport.prices import cost, price_for
from modelport.server.limits import prompt_token_bound
from modelport.types import Usage
from tests.cluster import MODELS, PRICES, PROVIDER, RATE_LIMITED, Cluster, ClusterUpstream, chat_call, load, spread

LOAD = 400


@pytest.fixture(scope="module", params=["1-instance", "4-instances-redis-postgresql", "workers-2-no-servers"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if request.param.startswith("4-instances"):
        redis_server = request.getfixturevalue("redis_server")
        postgres_server = request.getfixturevalue("postgres_server")
        for server in (redis_server, postgres_server):
            if not server.running:
                server.start()
        redis_server.flush()
        options = {"count": 4, "counters": redis_server.url, "records": postgres_server.new_database()}
    elif request.param.startswith("workers"):
        options = {"count": 1, "workers": 2}
    else:  # the reference: what one process does today, with nothing shared
        options = {"count": 1}
    with ClusterUpstream() as upstream, Cluster(tmp_path_factory.mktemp("cluster"), upstream, **options) as running:
        yield running


def test_rpm_is_exact_across_instances_in_every_dialect(cluster: Cluster) -> None:
    rpm = 150
    key = cluster.create_key("rpm-key", rpm=rpm)
    calls = spread(cluster.urls, LOAD, lambda dialect, url, i: chat_call(dialect, url, key, "echo", f"rpm {i}", 8),
                   dialects=("openai", "anthropic", "gemini"))
    tally = load(calls, concurrency=LOAD)
    assert tally.statuses == {200: rpm, 429: LOAD - rpm}, tally.summary()
    wrong = [(o.call.dialect, o.kind) for o in tally.outcomes if not o.ok and o.kind != RATE_LIMITED[o.call.dialect]]
    assert not wrong, f"429s not in the caller's dialect: {wrong[:5]}"
    # Every instance (or worker) took part: the limit held across them, not inside one.
    assert len(tally.by_url()) == len(cluster.urls)
    if cluster.workers > 1:  # new connections land on every worker (/health names its process)
        pids = {httpx.get(cluster.urls[0] + "/health", timeout=5).json().get("pid") for _ in range(40)}
        assert len(pids) == cluster.workers, f"processes seen behind the one port: {pids}"


def test_tpm_is_exact_in_the_tokens_booked(cluster: Cluster) -> None:
    max_tokens = 20
    first = chat_call("openai", cluster.urls[0], "-", "exact", "tpm", max_tokens)
    prompt_bound = prompt_token_bound(decode_request(first.body))
    booked = prompt_bound + max_tokens
    admitted = 60
    tpm = booked * admitted + booked // 2  # room for 60 calls and half of another
    cluster.upstream.exact_prompt_tokens = prompt_bound  # each call settles at what it booked
    key = cluster.create_key("tpm-key", tpm=tpm)
    calls = spread(cluster.urls, LOAD, lambda dialect, url, i: chat_call(dialect, url, key, "exact", "tpm", max_tokens))
    tally = load(calls, concurrency=LOAD)
    assert tally.statuses == {200: admitted, 429: LOAD - admitted}, tally.summary()
    assert {o.kind for o in tally.outcomes if not o.ok} == {"rate_limit_exceeded"}, tally.summary()
    assert sum(o.body["usage"]["total_tokens"] for o in tally.ok) == booked * admitted <= tpm
    usage = cluster.wait_usage("tpm-key", admitted)
    assert (usage["requests"], usage["input_tokens"] + usage["output_tokens"]) == (admitted, booked * admitted)


def test_a_budget_is_never_overspent_and_the_spend_adds_up(cluster: Cluster) -> None:
    max_tokens = 50
    budget = 0.1
    price = price_for(PROVIDER, MODELS["echo"].split("/", 1)[1], overrides={f"{PROVIDER}/*": PRICES})
    sample = chat_call("openai", cluster.urls[0], "-", "echo", "budget 0", max_tokens)
    worst = cost(Usage(prompt_token_bound(decode_request(sample.body)), max_tokens), price)
    assert worst is not None and budget / worst < LOAD / 4  # the budget runs out well within the load
    key = cluster.create_key("budget-key", budget=budget)
    calls = spread(cluster.urls, LOAD, lambda dialect, url, i: chat_call(dialect, url, key, "echo", f"budget {i % 10}", max_tokens))
    tally = load(calls, concurrency=LOAD)
    refused = [o for o in tally.outcomes if not o.ok]
    assert tally.statuses[200] + tally.statuses[429] == LOAD and refused, tally.summary()
    assert {o.kind for o in refused} == {"insufficient_quota"}, tally.summary()
    # A refusal means the settled spend plus the worst cases held passed the budget, and
    # each admitted call holds at most its worst case: so at least this many got through.
    assert len(tally.ok) >= math.floor(budget / worst)
    spent = sum(cost(Usage(o.body["usage"]["prompt_tokens"], o.body["usage"]["completion_tokens"]), price) for o in tally.ok)
    assert spent <= budget + 1e-9, f"spent ${spent:.6f} of a ${budget} budget in {len(tally.ok)} calls"
    usage = cluster.wait_usage("budget-key", len(tally.ok))
    assert usage["requests"] == len(tally.ok)
    assert usage["cost_usd"] == pytest.approx(spent, abs=2e-6)  # what every instance saved, summed
