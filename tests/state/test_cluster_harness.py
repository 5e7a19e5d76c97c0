"""The multi-instance harness itself (tests/cluster.py): real `modelport serve` processes
start on their own ports, answer every dialect, share their keys through the records, and
the load driver tallies what each of them answered. Needs nothing beyond today's gateway,
so a failure here is the harness's, not the scale-out work's."""

from __future__ import annotations

import httpx
import pytest

from tests.cluster import Cluster, ClusterUpstream, Nginx, chat_call, load, served_requests, spread


@pytest.fixture(scope="module")
def plain_cluster(tmp_path_factory: pytest.TempPathFactory):
    """4 gateways with today's defaults (keys in the shared SQLite file), one fake upstream."""
    with ClusterUpstream() as upstream, Cluster(tmp_path_factory.mktemp("cluster"), upstream, count=4) as cluster:
        yield cluster


def test_four_instances_answer_a_spread_load_in_every_dialect(plain_cluster: Cluster) -> None:
    key = plain_cluster.create_key("plain")
    before = plain_cluster.upstream.request_count
    calls = spread(plain_cluster.urls, 400, lambda dialect, url, i: chat_call(dialect, url, key, "echo", f"hello {i}", 16),
                   dialects=("openai", "anthropic", "gemini"))
    tally = load(calls, concurrency=400)
    assert tally.statuses == {200: 400}, tally.summary()
    assert set(tally.by_url().values()) == {100}  # every instance answered its share
    assert plain_cluster.upstream.request_count - before == 400
    answers = {"openai": lambda body: body["choices"][0]["message"]["content"],
               "anthropic": lambda body: body["content"][0]["text"],
               "gemini": lambda body: body["candidates"][0]["content"]["parts"][0]["text"]}
    for outcome in tally.ok:  # each in its caller's own shape, with its own answer
        sent = outcome.call.body.get("messages", outcome.call.body.get("contents"))[0]
        text = sent.get("content") or sent["parts"][0]["text"]
        assert answers[outcome.call.dialect](outcome.body) == f"echo: {text}"


def test_a_missing_key_is_refused_by_every_instance_in_its_dialect(plain_cluster: Cluster) -> None:
    calls = spread(plain_cluster.urls, 12, lambda dialect, url, i: chat_call(dialect, url, "mpk_000000000000_" + "x" * 43, "echo", "hi", 8),
                   dialects=("openai", "anthropic", "gemini"))
    tally = load(calls, concurrency=12)
    assert tally.statuses == {401: 12}, tally.summary()
    assert {(o.call.dialect, o.kind) for o in tally.outcomes} == {
        ("openai", "invalid_api_key"), ("anthropic", "authentication_error"), ("gemini", "UNAUTHENTICATED")}, tally.summary()


def test_the_exact_model_reports_what_it_was_told(plain_cluster: Cluster) -> None:
    key = plain_cluster.create_key("exact")
    plain_cluster.upstream.exact_prompt_tokens = 37
    tally = load([chat_call("openai", plain_cluster.urls[0], key, "exact", "hi", 5)])
    assert tally.statuses == {200: 1}, tally.summary()
    assert tally.ok[0].body["usage"]["prompt_tokens"] == 37 and tally.ok[0].body["usage"]["completion_tokens"] == 5


def test_nginx_configured_as_the_deploy_doc_says_spreads_calls_and_streams(plain_cluster: Cluster, tmp_path) -> None:
    key = plain_cluster.create_key("balanced")
    with Nginx(tmp_path / "nginx", plain_cluster.urls) as balancer:
        tally = load(spread([balancer.url], 200, lambda dialect, url, i: chat_call(dialect, url, key, "echo", f"via nginx {i}", 8),
                            dialects=("openai", "anthropic", "gemini")), concurrency=100)
        assert tally.statuses == {200: 200}, tally.summary()
        served = [served_requests(url, key, "balanced") for url in plain_cluster.urls]
        assert sum(served) == 200 and all(served), f"calls each gateway served behind nginx: {served}"
        # A streamed answer passes through as it comes (proxy_buffering off), in SSE events.
        call = chat_call("openai", balancer.url, key, "echo", "one two three", 8)
        with httpx.stream("POST", balancer.url + call.path, headers=call.headers, json={**call.body, "stream": True}, timeout=10) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) >= 4
