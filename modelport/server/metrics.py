"""Prometheus metrics as plain counters: a dict increment per request, text only on scrape.

Exposed at ``GET /metrics`` (text format 0.0.4):

    modelport_requests_total{door,model,key,status}
    modelport_errors_total{model,key,kind}
    modelport_tokens_total{model,key,direction}          direction: input | output
    modelport_cost_usd_total{model,key}
    modelport_request_duration_seconds{model}            histogram, whole request
    modelport_time_to_first_token_seconds{model}         histogram, streams only
    modelport_requests_in_flight

Every label has a bounded set of values, whatever callers send: ``model`` is a name the
config or the provider table defines, or "other" (``Metrics(model_label=...)`` maps it);
``key`` is an authenticated key's name or "-"; doors, statuses and error kinds are the
gateway's own. So the series count, and the cost of a scrape, stay small.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Iterable

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
    def __init__(self, model_label: Callable[[str], str] = lambda model: model) -> None:
        self.model_label = model_label
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

    def render(self) -> bytes:
        out: list[str] = []

        def counter(name: str, help_text: str, labels: tuple[str, ...], values: dict) -> None:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} counter\n")
            for label, value in sorted(values.items(), key=lambda item: str(item[0])):
                label = label if isinstance(label, tuple) else (label,)
                out.append(f"{name}{{{_labels(labels, map(str, label))}}} {value}\n")

        def histogram(name: str, help_text: str, values: dict[str, Histogram]) -> None:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} histogram\n")
            for model, h in sorted(values.items()):
                model_label = f'model="{_escape(model)}"'
                running = 0
                for bound, count in zip((*BUCKETS, "+Inf"), h.counts):
                    running += count
                    out.append(f'{name}_bucket{{{model_label},le="{bound}"}} {running}\n')
                out.append(f"{name}_sum{{{model_label}}} {h.sum}\n{name}_count{{{model_label}}} {running}\n")

        counter("modelport_requests_total", "Requests answered, by front door, model, gateway key and HTTP status.",
                ("door", "model", "key", "status"), self.requests)
        counter("modelport_errors_total", "Failed requests, by model, key and error kind.", ("model", "key", "kind"), self.errors)
        counter("modelport_tokens_total", "Tokens used, by model, key and direction.", ("model", "key", "direction"), self.tokens)
        counter("modelport_cost_usd_total", "Estimated spend in USD, by model and key.", ("model", "key"), self.cost)
        histogram("modelport_request_duration_seconds", "Time from request to last byte, by model.", self.latency)
        histogram("modelport_time_to_first_token_seconds", "Time from request to first streamed event, by model.", self.first_token)
        out.append(f"# HELP modelport_requests_in_flight Requests being served.\n# TYPE modelport_requests_in_flight gauge\n"
                   f"modelport_requests_in_flight {self.in_flight}\n")
        return "".join(out).encode()
