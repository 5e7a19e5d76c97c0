"""Prometheus metrics as plain counters: a dict increment per request, text only on scrape.

Exposed at ``GET /metrics`` (text format 0.0.4):

    modelport_requests_total{door,model,key,status}
    modelport_errors_total{model,key,kind}
    modelport_tokens_total{model,key,direction}          direction: input | output
    modelport_cost_usd_total{model,key}
    modelport_request_duration_seconds{model}            histogram, whole request
    modelport_time_to_first_token_seconds{model}         histogram, streams only
    modelport_requests_in_flight

Every series also carries ``instance`` (``[server] instance``, else host:port) and, under
``serve --workers N``, ``worker`` (0..N-1): one scrape of any worker returns every worker's
series (``render(peers)``, from the snapshots the workers leave each other every second),
so a scrape config needs ``honor_labels: true`` to keep them apart, and
``sum without (worker)`` adds them up.

Every label has a bounded set of values, whatever callers send: ``model`` is a name the
config or the provider table defines, or "other" (``Metrics(model_label=...)`` maps it);
``key`` is an authenticated key's name or "-"; doors, statuses and error kinds are the
gateway's own. So the series count, and the cost of a scrape, stay small.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Iterable

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.sum += value


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values))


class Metrics:
    def __init__(self, model_label: Callable[[str], str] = lambda model: model, labels: dict[str, str] | None = None) -> None:
        self.model_label = model_label
        # Labels of every series of this process (instance, worker).
        self.labels = dict(labels or {})
        self.requests: dict[tuple[str, str, str, int], int] = {}
        self.errors: dict[tuple[str, str, str], int] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.cost: dict[tuple[str, str], float] = {}
        self.latency: dict[str, Histogram] = {}
        self.first_token: dict[str, Histogram] = {}
        self.in_flight = 0

    def request(self, door: str, model: str, key: str, status: int, seconds: float) -> None:
        model = self.model_label(model)
        label = (door, model, key, status)
        self.requests[label] = self.requests.get(label, 0) + 1
        histogram = self.latency.get(model)
        if histogram is None:
            histogram = self.latency[model] = Histogram()
        histogram.observe(seconds)

    def error(self, model: str, key: str, kind: str) -> None:
        label = (self.model_label(model), key, kind)
        self.errors[label] = self.errors.get(label, 0) + 1

    def usage(self, model: str, key: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        model = self.model_label(model)
        for direction, n in (("input", input_tokens), ("output", output_tokens)):
            label = (model, key, direction)
            self.tokens[label] = self.tokens.get(label, 0) + n
        if cost:
            self.cost[(model, key)] = self.cost.get((model, key), 0.0) + cost

    def time_to_first_token(self, model: str, seconds: float) -> None:
        model = self.model_label(model)
        histogram = self.first_token.get(model)
        if histogram is None:
            histogram = self.first_token[model] = Histogram()
        histogram.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        """Everything ``render`` shows, as JSON, for the other workers' ``/metrics``."""
        return {
            "labels": self.labels,
            "requests": [[*k, v] for k, v in self.requests.items()],
            "errors": [[*k, v] for k, v in self.errors.items()],
            "tokens": [[*k, v] for k, v in self.tokens.items()],
            "cost": [[*k, v] for k, v in self.cost.items()],
            "latency": {m: [h.counts, h.sum] for m, h in self.latency.items()},
            "first_token": {m: [h.counts, h.sum] for m, h in self.first_token.items()},
            "in_flight": self.in_flight,
        }

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> Metrics:
        metrics = cls(labels=snapshot["labels"])
        for name in ("requests", "errors", "tokens", "cost"):
            setattr(metrics, name, {tuple(row[:-1]): row[-1] for row in snapshot[name]})
        for name in ("latency", "first_token"):
            histograms = getattr(metrics, name)
            for model, (counts, total) in snapshot[name].items():
                histogram = histograms[model] = Histogram()
                histogram.counts, histogram.sum = list(counts), total
        metrics.in_flight = snapshot["in_flight"]
        return metrics

    def render(self, peers: Iterable[Metrics] = ()) -> bytes:
        """The text format, with the series of ``peers`` (the other workers) beside ours."""
        sources = [self, *peers]
        out: list[str] = []

        def prefix(m: Metrics) -> str:
            return "".join(f'{n}="{_escape(v)}",' for n, v in m.labels.items())

        def counter(name: str, help_text: str, labels: tuple[str, ...], attribute: str) -> None:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} counter\n")
            for m in sources:
                own = prefix(m)
                for label, value in sorted(getattr(m, attribute).items(), key=lambda item: str(item[0])):
                    out.append(f"{name}{{{own}{_labels(labels, map(str, label))}}} {value}\n")

        def histogram(name: str, help_text: str, attribute: str) -> None:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} histogram\n")
            for m in sources:
                own = prefix(m)
                for model, h in sorted(getattr(m, attribute).items()):
                    model_label = f'{own}model="{_escape(model)}"'
                    running = 0
                    for bound, count in zip((*BUCKETS, "+Inf"), h.counts):
                        running += count
                        out.append(f'{name}_bucket{{{model_label},le="{bound}"}} {running}\n')
                    out.append(f"{name}_sum{{{model_label}}} {h.sum}\n{name}_count{{{model_label}}} {running}\n")

        counter("modelport_requests_total", "Requests answered, by front door, model, gateway key and HTTP status.",
                ("door", "model", "key", "status"), "requests")
        counter("modelport_errors_total", "Failed requests, by model, key and error kind.", ("model", "key", "kind"), "errors")
        counter("modelport_tokens_total", "Tokens used, by model, key and direction.", ("model", "key", "direction"), "tokens")
        counter("modelport_cost_usd_total", "Estimated spend in USD, by model and key.", ("model", "key"), "cost")
        histogram("modelport_request_duration_seconds", "Time from request to last byte, by model.", "latency")
        histogram("modelport_time_to_first_token_seconds", "Time from request to first streamed event, by model.", "first_token")
        out.append("# HELP modelport_requests_in_flight Requests being served.\n# TYPE modelport_requests_in_flight gauge\n")
        for m in sources:
            own = prefix(m).rstrip(",")
            out.append(f"modelport_requests_in_flight{{{own}}} {m.in_flight}\n" if own else f"modelport_requests_in_flight {m.in_flight}\n")
        return "".join(out).encode()
