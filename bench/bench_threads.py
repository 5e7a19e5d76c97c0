"""Which decoding thread count is fastest for the embedded model, with and without a
competing busy process?

    python bench/bench_threads.py [--rounds 3] [--tokens 64] [--concurrency 4]

For each thread count from 1 to the CPUs this process may use, an engine is loaded (the
same model, slots and prompts), and a batch of ``--concurrency`` requests forcing
``--tokens`` tokens each is timed; then the same with one extra process spinning on a CPU
(what "another program is busy" looks like to llama.cpp's spinning barrier threads).
Variants alternate within each round in a rotating order; the table shows the median
aggregate completion tokens/s (min–max) and marks the default (``default_threads()``).

Not a test: it keeps the CPUs busy for a few minutes; the host's own noise shows in min–max.

Measured 2026-12-01 on the 2-core development host, otherwise idle, 4 requests x 32
forced tokens, median (min-max) of 3: quiet, 1 thread 44 (44-46) tok/s and 2 threads 82
(80-85); beside one busy process, 1 thread 46 (41-46) and 2 threads 24 (24-27). The default
chose 2 threads on the quiet host and 1 beside the busy process, the faster each time:
llama.cpp's threads wait for each other at every token, so a thread on a core another
process keeps busy slows them all.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from rich.console import Console
from rich.table import Table

from modelport.backends.local import LocalBackend, _Plan, default_threads, physical_cores
from modelport.local_model import resolve_model
from modelport.types import ChatRequest, Message

PROMPTS = [
    "Explain in simple words how a refrigerator keeps food cold.",
    "Describe how bees find flowers and tell other bees where they are.",
    "Tell me what a compiler does with a program, step by step.",
    "Write a short note about why the sky looks blue during the day.",
    "Summarise how a bicycle stays upright while moving.",
    "Give some advice to a student who wants to learn to cook.",
    "Explain what happens inside a battery when it powers a torch.",
    "Describe a quiet morning in a small fishing village by the sea.",
]


def spin() -> None:  # the competing busy process
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64, help="forced completion tokens per request")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    console = Console()
    path = str(resolve_model("smollm2").resolve())
    cpus = len(os.sched_getaffinity(0))
    counts = list(range(1, cpus + 1))
    # The default looks at how busy the CPUs are, so it is taken in each condition.
    defaults: dict[str, list[int]] = {"quiet": [], "busy": []}
    engines = {n: LocalBackend(n_threads=n)._load(path, embedding=False) for n in counts}
    bodies = [
        _Plan(ChatRequest("local/smollm2", [Message.user(p)], temperature=0.0, seed=1, max_tokens=args.tokens, extra={"ignore_eos": True}), "smollm2").body
        for p in PROMPTS[: args.concurrency]
    ]
    rates: dict[tuple[str, int], list[float]] = {(load, n): [] for load in ("quiet", "busy") for n in counts}
    with ThreadPoolExecutor(args.concurrency) as pool:
        for engine in engines.values():  # the first graph build is slow; keep it out
            engine.handle_chat_completions({**bodies[0], "max_tokens": 4})
        for round_no in range(args.rounds):
            for load in ("quiet", "busy"):
                competitor = multiprocessing.Process(target=spin, daemon=True) if load == "busy" else None
                if competitor is not None:
                    competitor.start()
                    time.sleep(0.5)
                defaults[load].append(default_threads())
                try:
                    shift = round_no % len(counts)
                    for n in counts[shift:] + counts[:shift]:
                        started = time.perf_counter()
                        answers = list(pool.map(engines[n].handle_chat_completions, bodies))
                        produced = sum(a["usage"]["completion_tokens"] for a in answers)
                        rates[(load, n)].append(produced / (time.perf_counter() - started))
                        console.log(f"round {round_no + 1} {load} threads={n}: {rates[(load, n)][-1]:.1f} tok/s")
                finally:
                    if competitor is not None:
                        competitor.terminate()
                        competitor.join()
    table = Table(title=f"SmolLM2 Q4_1, {args.concurrency} requests x {args.tokens} forced tokens, aggregate tok/s, median (min–max) of {args.rounds}")
    table.add_column("threads", justify="right")
    for load in ("quiet", "busy"):
        table.add_column("quiet host" if load == "quiet" else "+1 busy process", justify="right")
    for n in counts:
        cells = [f"{statistics.median(rates[(load, n)]):.0f} ({min(rates[(load, n)]):.0f}–{max(rates[(load, n)]):.0f})"
                 f"{' default' if statistics.mode(defaults[load]) == n else ''}" for load in ("quiet", "busy")]
        table.add_row(str(n), *cells)
    console.print(table)
    console.print(f"affinity: {cpus} CPUs, {physical_cores()} physical cores; default_threads() per round: {defaults}; "
                  f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
