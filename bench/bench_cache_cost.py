"""What prompt caching saves, at list prices, against a fake Anthropic upstream that
accounts for its cache as the Messages API describes (tests/fakes/anthropic_upstream.py:
one token per word of text; tools weigh nothing there).

    python bench/bench_cache_cost.py [--turns 20] [--rows 50]

1. A 20-turn session shaped like Claude Code's (two marked system blocks, 24 tools, the last
   user block marked, a tool call and a 150-word result per turn) through `modelport
   serve`, before (the markers dropped, as the gateway did) and after (kept).
2. A batch of 50 rows sharing a 400-word system prompt, with and without the prefix marked
   (``cache_prefix``).

Prices: anthropic/claude-sonnet-4-5 from modelport/data/prices.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anthropic

from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes.anthropic_upstream import AnthropicUpstream
from tests.server.test_prompt_caching import claude_code_request


def strip_markers(value):
    if isinstance(value, dict):
        return {k: strip_markers(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip_markers(v) for v in value]
    return value


def session_cost(turns: int, keep_markers: bool) -> tuple[float, dict[str, int]]:
    with AnthropicUpstream() as upstream, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(log_calls=False, keys_path=str(Path(tmp) / "keys.db"), max_tokens=256)
        config = {"providers": {"anthropic": {"base_url": upstream.base_url}}}
        with GatewayThread(settings, config=config, api_keys={"anthropic": "sk-ant-fake"}) as gw:
            client = anthropic.Anthropic(base_url=gw.url, api_key="anything", max_retries=0)
            totals = {"input": 0, "cache_read": 0, "cache_write": 0, "output": 0}
            from modelport.prices import cost, price_for
            from modelport.types import Usage

            price = price_for("anthropic", "claude-sonnet-4-5")
            spent = 0.0
            for turn in range(1, turns + 1):
                body = claude_code_request(turns=turn)
                body["model"] = "anthropic/claude-sonnet-4-5"
                if not keep_markers:
                    body = strip_markers(copy.deepcopy(body))
                usage = client.messages.create(**body).usage
                read, write = usage.cache_read_input_tokens or 0, usage.cache_creation_input_tokens or 0
                totals["input"] += usage.input_tokens
                totals["cache_read"] += read
                totals["cache_write"] += write
                totals["output"] += usage.output_tokens
                spent += cost(Usage(usage.input_tokens + read + write, usage.output_tokens, read, write), price)
    return spent, totals


def batch_cost(rows: int, cache_prefix: bool) -> float:
    from modelport import AsyncClient
    from modelport.batch import batch

    system = " ".join(f"rule{i}" for i in range(400))
    data = [{"text": f"review number {i}"} for i in range(rows)]
    with AnthropicUpstream() as upstream:
        client = AsyncClient(config={"providers": {"anthropic": {"base_url": upstream.base_url}}}, api_keys={"anthropic": "k"},
                             log=False, max_retries=0)
        results = batch(data, "anthropic/claude-sonnet-4-5", "Classify the sentiment of this review: {text}", system=system,
                        max_tokens=8, client=client, cache_prefix=cache_prefix, concurrency=8)
    return sum(r["cost"] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--rows", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("MODELPORT_LOG", "0")
    for keep in (False, True):
        spent, totals = session_cost(args.turns, keep)
        print(json.dumps({"session": "markers kept" if keep else "markers dropped", "turns": args.turns, "usd": round(spent, 6), **totals}))
    for cache_prefix in (False, True):
        print(json.dumps({"batch_rows": args.rows, "cache_prefix": cache_prefix, "usd": round(batch_cost(args.rows, cache_prefix), 6)}))


if __name__ == "__main__":
    main()
