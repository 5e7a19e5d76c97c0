"""The batch engine against a loopback fake upstream, with faults injected: every row ends
answered or with its error recorded, exactly once, in input order."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
from typing import Any

import pytest

import modelport
from modelport.batch import JobSpec, abatch, arun, estimate, open_job
from modelport.batch.readers import iter_records, read_rows
from modelport.client import AsyncClient
from modelport.transport import Timeouts
from tests.fakes.openai_upstream import OpenAIUpstream, openai_error, rate_limited
from tests.fakes.server import drop_connection, http_error, malformed_json, stall_stream


def client_for(upstream: OpenAIUpstream, timeout: float = 5.0) -> AsyncClient:
    return AsyncClient(max_retries=0, timeout=Timeouts(connect=1.0, read=timeout, total=timeout),
                       config={"providers": {"fake": {"base_url": upstream.base_url}}})


def priced_client(upstream: OpenAIUpstream) -> AsyncClient:
    """A provider with a known list price, routed to the fake."""
    return AsyncClient(max_retries=0, base_urls={"openai": upstream.base_url}, api_keys={"openai": "sk-test-key"})


def rows(n: int) -> list[dict[str, Any]]:
    return [{"text": f"row {i}"} for i in range(n)]


def row_of(recorded: Any) -> str:
    return recorded.body["messages"][-1]["content"]


def test_faults_every_row_answered_once_in_order(openai_upstream: OpenAIUpstream) -> None:
    openai_upstream.inject(
        rate_limited(0.05), http_error(500, {"error": {"message": "boom", "type": "server_error"}}), drop_connection(),
        stall_stream(0), malformed_json(), http_error(503, "overloaded"), rate_limited(0.05),
    )
    out = modelport.batch(rows(40), model="fake/gpt-fake", prompt="Say: {text}", client=client_for(openai_upstream, 0.5),
                          concurrency=4, timeout=0.5)
    assert [r["text"] for r in out] == [f"row {i}" for i in range(40)]
    assert [r["answer"] for r in out] == [f"echo: Say: row {i}" for i in range(40)]
    assert all(r["error"] is None for r in out)
    # Seven faults, each costing one extra request, and no row answered twice.
    assert openai_upstream.request_count == 40 + 7
    sent = collections.Counter(row_of(r) for r in openai_upstream.requests)
    assert sum(sent.values()) == 47


def test_a_row_that_keeps_failing_is_recorded_and_the_job_goes_on(openai_upstream: OpenAIUpstream) -> None:
    boom = http_error(500, {"error": {"message": "boom", "type": "server_error"}})
    openai_upstream.inject(boom, boom, boom)
    out = modelport.batch(rows(5), model="fake/gpt-fake", prompt="Say: {text}", client=client_for(openai_upstream),
                          concurrency=1, max_retries=2)
    assert out[0]["answer"] is None and "boom" in out[0]["error"]
    assert [r["answer"] for r in out[1:]] == [f"echo: Say: row {i}" for i in range(1, 5)]


def test_a_bad_request_is_not_retried(openai_upstream: OpenAIUpstream) -> None:
    openai_upstream.inject(openai_error(400, "bad value for temperature", "invalid_request_error", "invalid_value"))
    out = modelport.batch(rows(3), model="fake/gpt-fake", prompt="Say: {text}", client=client_for(openai_upstream), concurrency=1)
    assert "temperature" in out[0]["error"]
    assert openai_upstream.request_count == 3


def test_missing_template_field_fails_that_row_only(openai_upstream: OpenAIUpstream) -> None:
    data = [{"text": "a"}, {"other": "b"}, {"text": "c"}]
    out = modelport.batch(data, model="fake/gpt-fake", prompt="Say: {text}", client=client_for(openai_upstream))
    assert out[1]["answer"] is None and "{text}" in out[1]["error"]
    assert out[2]["answer"] == "echo: Say: c"
    assert openai_upstream.request_count == 2


def test_auth_error_stops_the_job_and_resume_finishes_it(tmp_path: Path) -> None:
    with OpenAIUpstream(api_key="sk-right") as upstream:
        spec = JobSpec(job_id="auth", model="fake/gpt-fake", prompt="Say: {text}", input_format="rows", concurrency=2)
        journal, spec = open_job(tmp_path / "j.db", spec)

        def client(key: str) -> AsyncClient:
            return AsyncClient(max_retries=0, config={"providers": {"fake": {"base_url": upstream.base_url, "key_env": "FAKE_KEY"}}},
                               api_keys={"fake": key})

        stats = asyncio.run(arun(journal, spec, rows=rows(10), client=client("sk-wrong")))
        assert stats.status == "error" and "API key" in stats.message
        assert stats.done == 0
        sent_before = upstream.request_count
        assert sent_before <= 2  # only what was in flight when the first 401 came back
        stats = asyncio.run(arun(journal, spec, client=client("sk-right")))
        assert stats.status == "completed" and stats.done == 10
        journal.close()


def test_budget_stops_cleanly_and_a_higher_budget_resumes(tmp_path: Path, openai_upstream: OpenAIUpstream) -> None:
    out = tmp_path / "out.jsonl"
    spec = JobSpec(job_id="budget", model="openai/gpt-4o-mini", prompt="Say: {text}", input_format="rows", output=str(out),
                   output_format="jsonl", concurrency=1, max_cost=0.0005, params={"max_tokens": 10})
    journal, spec = open_job(tmp_path / "j.db", spec)
    stats = asyncio.run(arun(journal, spec, rows=rows(1000), client=priced_client(openai_upstream)))
    assert stats.status == "budget"
    assert 0 < stats.done < 1000 and stats.cost <= 0.0005
    lines = out.read_text().splitlines()
    assert len(lines) == stats.done
    journal.close()
    journal, spec = open_job(tmp_path / "j.db", max_cost=1.0)
    stats = asyncio.run(arun(journal, spec, client=priced_client(openai_upstream)))
    assert stats.status == "completed" and stats.done == 1000
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(1000))
    assert openai_upstream.request_count == 1000
    journal.close()


def test_max_cost_with_unknown_price_is_refused(tmp_path: Path, openai_upstream: OpenAIUpstream) -> None:
    spec = JobSpec(job_id="x", model="fake/gpt-fake", prompt="{text}", input_format="rows", max_cost=1.0)
    journal, spec = open_job(tmp_path / "j.db", spec)
    with pytest.raises(modelport.ConfigError, match="price"):
        asyncio.run(arun(journal, spec, rows=rows(2), client=client_for(openai_upstream)))
    assert openai_upstream.request_count == 0


def test_unknown_price_is_reported_as_unknown_not_zero(openai_upstream: OpenAIUpstream) -> None:
    out = modelport.batch(rows(2), model="fake/gpt-fake", prompt="{text}", client=client_for(openai_upstream))
    assert [r["cost"] for r in out] == [None, None]
    spec = JobSpec(job_id="e", model="fake/gpt-fake", prompt="{text}", input_format="rows")
    assert estimate(spec, iter_records(rows(3)), client=client_for(openai_upstream))["cost"] is None


def test_dry_run_estimate_with_a_known_price(openai_upstream: OpenAIUpstream) -> None:
    spec = JobSpec(job_id="e", model="openai/gpt-4o-mini", prompt="Say: {text}", input_format="rows", params={"max_tokens": 100})
    result = estimate(spec, iter_records(rows(10)), client=priced_client(openai_upstream))
    assert result["rows"] == 10 and result["output_tokens"] == 1000
    assert result["cost"] > 0
    assert openai_upstream.request_count == 0


def test_schema_gives_parsed_output(openai_upstream: OpenAIUpstream) -> None:
    openai_upstream.script('{"sentiment": "good"}', "not json")
    schema = {"type": "object", "properties": {"sentiment": {"type": "string"}}, "required": ["sentiment"]}
    out = modelport.batch(rows(2), model="fake/gpt-fake", prompt="{text}", schema=schema, client=client_for(openai_upstream), concurrency=1)
    assert out[0]["parsed"] == {"sentiment": "good"} and out[0]["error"] is None
    assert out[1]["parsed"] is None and "not JSON" in out[1]["error"]
    assert openai_upstream.requests[0].body["response_format"]["type"] == "json_schema"


def test_cache_answers_identical_requests_and_marks_them(openai_upstream: OpenAIUpstream) -> None:
    first = modelport.batch(rows(5), model="fake/gpt-fake", prompt="{text}", client=client_for(openai_upstream), cache=True)
    assert not any(r["cached"] for r in first)
    second = modelport.batch(rows(5), model="fake/gpt-fake", prompt="{text}", client=client_for(openai_upstream), cache=True)
    assert all(r["cached"] for r in second)
    assert [r["answer"] for r in second] == [r["answer"] for r in first]
    assert openai_upstream.request_count == 5


def test_openai_batch_format_in_and_out_keyed_by_custom_id(openai_upstream: OpenAIUpstream) -> None:
    lines = [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "fake/gpt-fake", "messages": [{"role": "user", "content": f"q{i}"}]}} for i in range(4)]
    out = modelport.batch(lines, client=client_for(openai_upstream))
    assert [o["custom_id"] for o in out] == [f"req-{i}" for i in range(4)]
    body = out[2]["response"]["body"]
    assert out[2]["response"]["status_code"] == 200
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "echo: q2"


def test_duplicate_custom_ids_are_refused(openai_upstream: OpenAIUpstream) -> None:
    line = {"custom_id": "same", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "fake/gpt-fake", "messages": [{"role": "user", "content": "q"}]}}
    with pytest.raises(ValueError, match="duplicate custom_id"):
        modelport.batch([line, line], client=client_for(openai_upstream))


def test_dataframe_in_dataframe_out(openai_upstream: OpenAIUpstream) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["a", "b", "c"], "n": [1, 2, 3]}, index=[10, 20, 30])
    out = modelport.batch(frame, model="fake/gpt-fake", prompt="{text}-{n}", client=client_for(openai_upstream))
    assert list(out.index) == [10, 20, 30]
    assert list(out["answer"]) == ["echo: a-1", "echo: b-2", "echo: c-3"]
    assert list(out["input_tokens"]) == [1, 1, 1]
    assert set(["parsed", "output_tokens", "cost", "cached", "error"]) <= set(out.columns)


def test_abatch_yields_in_input_order() -> None:
    async def main() -> list[dict[str, Any]]:
        with OpenAIUpstream(latency=0.01) as upstream:
            return [r async for r in abatch(rows(30), model="fake/gpt-fake", prompt="{text}", client=client_for(upstream), concurrency=8)]

    out = asyncio.run(main())
    assert [r["index"] for r in out] == list(range(30))
    assert out[7]["answer"] == "echo: row 7"


def test_torn_output_tail_is_cut_back_on_resume(tmp_path: Path, openai_upstream: OpenAIUpstream) -> None:
    out = tmp_path / "out.jsonl"
    spec = JobSpec(job_id="torn", model="fake/gpt-fake", prompt="{text}", input_format="rows", output=str(out), output_format="jsonl")
    journal, spec = open_job(tmp_path / "j.db", spec)
    asyncio.run(arun(journal, spec, rows=rows(5), client=client_for(openai_upstream)))
    with out.open("ab") as f:  # what a kill halfway through a write leaves behind
        f.write(b'{"index": 5, "ans')
    asyncio.run(arun(journal, spec, client=client_for(openai_upstream)))
    assert [json.loads(line)["index"] for line in out.read_text().splitlines()] == list(range(5))
    journal.close()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_round_trip(tmp_path: Path, openai_upstream: OpenAIUpstream, suffix: str) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    from modelport.batch.writers import output_format

    source = tmp_path / f"in{suffix}"
    if suffix == ".csv":
        source.write_text("text,n\nalpha,1\nbeta,2\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([{"text": "alpha", "n": 1}, {"text": "beta", "n": 2}]), source)
    out = tmp_path / f"out{suffix}"
    fmt = suffix.lstrip(".")
    spec = JobSpec(job_id="io", model="fake/gpt-fake", prompt="{text}", input=str(source), input_format=fmt, output=str(out),
                   output_format=output_format(out, fmt))
    journal, spec = open_job(tmp_path / "j.db", spec)
    stats = asyncio.run(arun(journal, spec, client=client_for(openai_upstream)))
    assert stats.done == 2
    back = [data for _, data in read_rows(out, fmt)]
    assert [r["answer"] for r in back] == ["echo: alpha", "echo: beta"]
    assert [str(r["n"]) for r in back] == ["1", "2"]
    journal.close()
