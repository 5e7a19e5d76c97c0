"""How fast the console's pages load with a big call log: seeds 100,000 calls, then times
each JSON endpoint a page calls (median and max of several runs, milliseconds).

    python bench/bench_ui.py [--calls 100000] [--runs 7]

Everything lives in a temporary directory (log, keys, data); the target is < 300 ms per call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def seed(path: Path, n: int) -> None:
    from modelport.calllog import CallLog
    from modelport.types import ChatRequest, ChatResponse, Message, Usage

    log = CallLog(path)
    words = ["zebra", "lion", "falcon", "otter", "heron", "badger", "lynx", "walrus"]
    models = ["gpt-4o-mini", "gpt-4o", "claude-haiku", "gemini-flash"]
    for i in range(n):
        model = models[i % 4]
        request = ChatRequest(f"openai/{model}", [Message.user(f"tell me about the {words[i % 8]} number {i} " + "lorem ipsum " * 20)])
        if i % 50 == 49:
            log.record(request, error="upstream broke", provider="openai", model=model, source="gateway", key_name=f"key{i % 7}")
        else:
            response = ChatResponse(f"r{i}", model, Message.assistant(f"the {words[i % 8]} answer {i} " + "dolor sit " * 30),
                                    usage=Usage(40 + i % 100, 60), provider="openai")
            log.record(request, response, provider="openai", model=model, source=("gateway", "sdk", "batch")[i % 3],
                       key_name=f"key{i % 7}", latency=0.2)
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="modelport-bench-ui-"))
    os.environ.update(MODELPORT_LOG_PATH=str(tmp / "logs.db"), MODELPORT_DATA_DIR=str(tmp / "data"),
                      MODELPORT_CONFIG_DIR=str(tmp / "config"), MODELPORT_GATEWAY_KEYS=str(tmp / "keys.db"))
    started = time.perf_counter()
    seed(tmp / "logs.db", args.calls)
    print(f"seeded {args.calls:,} calls in {time.perf_counter() - started:.1f} s ({(tmp / 'logs.db').stat().st_size / 1e6:.0f} MB)")

    import httpx

    from modelport.server import Settings
    from modelport.server.testing import GatewayThread

    with GatewayThread(Settings(log_calls=True, batch_dir=str(tmp / "batches"))) as gw, httpx.Client(base_url=gw.url, timeout=60) as c:
        first = c.get("/ui/api/logs").json()
        some_id = first["calls"][0]["id"]
        probes = {
            "models": "/ui/api/models",
            "logs (page 1)": "/ui/api/logs",
            "logs (page 2)": f"/ui/api/logs?before={first['next']}",
            "logs (deep page)": "/ui/api/logs?before=1000",
            "logs q=zebra": "/ui/api/logs?q=zebra",
            "logs q=rare word": "/ui/api/logs?q=99999",
            "logs model=": "/ui/api/logs?model=openai/gpt-4o",
            "logs key=": "/ui/api/logs?key=key3",
            "logs status=error": "/ui/api/logs?status=error",
            "logs since=1h": "/ui/api/logs?since=1h",
            "one call": f"/ui/api/logs/{some_id}",
            "usage by model/day": "/ui/api/usage?by=model&since=30d",
            "usage by key/hour": "/ui/api/usage?by=key&bucket=hour&since=30d",
            "usage CSV by source": "/ui/api/usage?by=source&since=30d&format=csv",
            "keys": "/ui/api/keys",
            "batches": "/ui/api/batches",
        }
        print(f"{'endpoint':24} {'median ms':>10} {'max ms':>8}")
        worst = 0.0
        for name, path in probes.items():
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                response = c.get(path)
                times.append((time.perf_counter() - t) * 1000)
                assert response.status_code == 200, (path, response.text)
            median = statistics.median(times)
            worst = max(worst, median)
            print(f"{name:24} {median:10.1f} {max(times):8.1f}")
        print(f"slowest median: {worst:.1f} ms (target < 300 ms)")


if __name__ == "__main__":
    main()
