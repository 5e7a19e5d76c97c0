"""Prefix reuse in the embedded model: time to first token for a ~1,500-token shared system
prompt, first call against later ones, and a batch of rows sharing it, with and without
llama.cpp reusing its KV cache (``cache_prompt``).

    python bench/bench_prompt_reuse.py [--rows 200] [--rows-without 200] [--later 3] [--concurrency 4]

"First" is the first call that sees the prefix; "later" calls ask other questions after it.
Reuse is switched off per request with ``extra={"cache_prompt": False}``, which the engine
honours, so both runs use the same engine. The engine's own counters (``cache_n``: tokens
reused, ``prompt_n``: tokens evaluated) are printed beside the times. A batch without reuse
evaluates the whole prefix for every row: at a few hundred prompt tokens per second on two
cores, 200 rows take many minutes, so ``--rows-without`` can be smaller; the per-row time is
reported for both. Not a test; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from modelport import local_model
from modelport.backends.local import LocalBackend
from modelport.batch import batch
from modelport.types import ChatRequest, Message

MODEL = "smollm2"
QUESTIONS = ["What is two plus two?", "Name a colour.", "Say hello.", "Name a fruit.", "What day follows Monday?"]


def system_prompt(tag: str) -> str:
    """About 1,500 tokens of SmolLM2's tokenizer, unique per ``tag`` so no run starts warm."""
    return " ".join(f"{tag} policy {i}: keep answers short." for i in range(97))


def first_token(backend: LocalBackend, system: str, question: str, reuse: bool) -> tuple[float, dict]:
    request = ChatRequest(f"local/{MODEL}", [Message.system(system), Message.user(question)], max_tokens=2,
                          extra={} if reuse else {"cache_prompt": False})
    started = time.perf_counter()
    ttft = None
    usage = None
    for event in backend.stream(request, MODEL):
        if ttft is None and event.kind == "text":
            ttft = time.perf_counter() - started
        if event.usage is not None:
            usage = event.usage
    return (ttft if ttft is not None else time.perf_counter() - started), {"input": usage.input_tokens, "cached": usage.cached_tokens}


def ttft(backend: LocalBackend, later: int, reuse: bool) -> dict:
    system = system_prompt("ttft-reuse" if reuse else "ttft-plain")
    first, first_usage = first_token(backend, system, QUESTIONS[0], reuse)
    rest = [first_token(backend, system, QUESTIONS[1 + i % (len(QUESTIONS) - 1)], reuse) for i in range(later)]
    return {"reuse": reuse, "first_s": round(first, 3), "first_usage": first_usage,
            "later_s_median": round(statistics.median(t for t, _ in rest), 3), "later_usage": rest[-1][1]}


def batch_run(rows: int, reuse: bool, concurrency: int) -> dict:
    system = system_prompt("batch-reuse" if reuse else "batch-plain")
    data = [{"text": f"item {i}"} for i in range(rows)]
    started = time.perf_counter()
    results = batch(data, f"local/{MODEL}", "Answer yes or no: is {text} a number?", system=system, max_tokens=1,
                    cache_prefix=reuse, concurrency=concurrency, **({} if reuse else {"extra": {"cache_prompt": False}}))
    wall = time.perf_counter() - started
    return {"reuse": reuse, "rows": rows, "concurrency": concurrency, "wall_s": round(wall, 1), "per_row_s": round(wall / rows, 3),
            "failed": sum(1 for r in results if r["error"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rows-without", type=int, default=200)
    parser.add_argument("--later", type=int, default=3)
    # The engine's slots share one KV cache (n_ctx tokens): rows in flight at once each hold
    # their own copy of the prefix, so more of them than fit evict each other's.
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skip-ttft", action="store_true")
    args = parser.parse_args()
    local_model.pull(progress=False)
    backend = LocalBackend()
    backend.chat(ChatRequest(f"local/{MODEL}", [Message.user("warm up")], max_tokens=1), MODEL)  # the first graph build
    if not args.skip_ttft:
        for reuse in (True, False):
            print(json.dumps(ttft(backend, args.later, reuse)), flush=True)
    print(json.dumps(batch_run(args.rows, True, args.concurrency)), flush=True)
    print(json.dumps(batch_run(args.rows_without, False, args.concurrency)), flush=True)


if __name__ == "__main__":
    main()
