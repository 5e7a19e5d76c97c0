"""Throughput of the embedded model through LocalBackend against the raw xllamacpp engine.

    python bench/bench_local.py [--rounds 3] [--tokens 128]

Both sides drive the *same* engine object (one model load, the same slots and threads),
so the difference is exactly what LocalBackend adds: encoding, decoding, thread hops.
Every request forces ``--tokens`` completion tokens (``ignore_eos``) after a ~40-token
prompt. The host is noisy (±15–25 % run to run), so variants alternate within each round,
in a rotating order, and the table reports medians over the rounds. Figures are aggregate
completion tokens per second: all tokens of the N concurrent requests / wall time.

Not a test: it keeps both cores busy for about a minute and a half; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelport.backends.local import LocalBackend, _Plan
from modelport.types import ChatRequest, Message

MODEL = "smollm2"
CONCURRENCY = (1, 4, 8)
PROMPTS = [
    "Explain in simple words how a refrigerator keeps food cold, and why its back side feels warm when it runs.",
    "Describe how bees find flowers, how they tell other bees where the flowers are, and what they bring home.",
    "Tell me what a compiler does with a program, step by step, from the source text to the running machine code.",
    "Write a short note about why the sky looks blue during the day and turns red and orange around sunset.",
    "Summarise how a bicycle stays upright while moving and why it falls over when it stands still on the road.",
    "Give some advice to a student who wants to learn to cook simple and healthy meals on a very small budget.",
    "Explain what happens inside a battery when it powers a torch, and why it stops working after a while.",
    "Describe a quiet morning in a small fishing village by the sea, with the boats leaving the harbour at dawn.",
]


def make_variants(backend: LocalBackend, tokens: int, pool: ThreadPoolExecutor) -> dict[str, Callable[[int], int]]:
    """name -> run(concurrency) returning the completion tokens produced."""
    engine = backend.engine(MODEL)
    requests = [
        ChatRequest(f"local/{MODEL}", [Message.user(p)], temperature=0.0, seed=1, max_tokens=tokens, extra={"ignore_eos": True})
        for p in PROMPTS
    ]
    # The raw engine gets exactly the bodies LocalBackend sends for these requests, so both
    # sides ask the engine for the same work.
    bodies = [_Plan(r, MODEL).body for r in requests]

    def raw(n: int) -> int:
        answers = list(pool.map(engine.handle_chat_completions, bodies[:n]))
        return sum(a["usage"]["completion_tokens"] for a in answers)

    def backend_threads(n: int) -> int:
        answers = list(pool.map(lambda r: backend.chat(r, MODEL), requests[:n]))
        return sum(a.usage.output_tokens for a in answers)

    def backend_async(n: int) -> int:
        async def run() -> list[Any]:
            return await asyncio.gather(*(backend.achat(r, MODEL) for r in requests[:n]))

        return sum(a.usage.output_tokens for a in asyncio.run(run()))

    return {"raw engine": raw, "chat (threads)": backend_threads, "achat (asyncio)": backend_async}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians need at least 3")
    parser.add_argument("--tokens", type=int, default=128, help="forced completion tokens per request")
    args = parser.parse_args()
    console = Console()
    backend = LocalBackend()
    with ThreadPoolExecutor(max_workers=max(CONCURRENCY)) as pool:
        variants = make_variants(backend, args.tokens, pool)
        names = list(variants)
        for run in variants.values():  # the first graph build is slow; keep it out of the figures
            run(1)
        rates: dict[tuple[str, int], list[float]] = {(v, c): [] for v in names for c in CONCURRENCY}
        columns = (TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("warming up", total=args.rounds * len(CONCURRENCY) * len(names))
            for round_no in range(args.rounds):
                for c in CONCURRENCY:
                    shift = round_no % len(names)
                    for name in names[shift:] + names[:shift]:
                        progress.update(task, description=f"round {round_no + 1} c={c} {name}")
                        started = time.perf_counter()
                        produced = variants[name](c)
                        rates[(name, c)].append(produced / (time.perf_counter() - started))
                        # One line per measurement, so an interrupted run still leaves figures.
                        progress.console.log(f"round {round_no + 1} c={c} {name}: {rates[(name, c)][-1]:.1f} tok/s")
                        if produced != c * args.tokens:
                            console.print(f"[yellow]{name} c={c}: {produced} tokens, expected {c * args.tokens}")
                        progress.advance(task)

    table = Table(title=f"SmolLM2-135M Q4_1, {args.tokens} forced tokens/request, aggregate completion tok/s, median (min–max) of {args.rounds}")
    table.add_column("concurrency", justify="right")
    for name in names:
        table.add_column(name, justify="right")
        if name != names[0]:
            table.add_column("ratio", justify="right")
    for c in CONCURRENCY:
        base = statistics.median(rates[(names[0], c)])
        row = [str(c)]
        for name in names:
            values = rates[(name, c)]
            median = statistics.median(values)
            row.append(f"{median:.0f} ({min(values):.0f}–{max(values):.0f})")
            if name != names[0]:
                row.append(f"{median / base:.2f}")
        table.add_row(*row)
    console.print(table)
    console.print(f"python {sys.version.split()[0]}, n_parallel={backend.n_parallel}, n_threads={backend.n_threads}")


if __name__ == "__main__":
    main()
