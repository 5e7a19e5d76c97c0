"""Per-key limits: requests and tokens per minute, and a spending budget.

Sans-I/O and synchronous on purpose: the gateway runs one event loop, and ``reserve``
checks and books in one step with no ``await`` in between, so concurrent requests can never
jointly overshoot a limit. A request books the most it could use (its prompt estimate plus
``max_tokens``, priced at the model's rates) before it runs, and ``settle`` replaces that
with what it really used.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from ..errors import QuotaExceededError, RateLimitError
from ..types import ChatRequest, ImagePart, TextPart

WINDOW = 60.0
# Roughly four characters per token for English text with BPE tokenizers; good enough to
# book limits before the provider reports the real count.
CHARS_PER_TOKEN = 4
# Role markers and separators every chat template adds around a message.
TOKENS_PER_MESSAGE = 4
# What an image costs in the providers' accounting, order of magnitude.
TOKENS_PER_IMAGE = 800


def estimate_tokens(request: ChatRequest) -> int:
    """Prompt tokens, estimated from characters (tools and schemas included)."""
    chars = 0
    images = 0
    for message in request.messages:
        for part in message.content:
            if isinstance(part, TextPart):
                chars += len(part.text)
            elif isinstance(part, ImagePart):
                images += 1
            else:
                chars += len(getattr(part, "text", ""))
        for call in message.tool_calls:
            chars += len(call.name) + len(call.arguments)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(str(tool.parameters))
    if request.response_format is not None and request.response_format.schema:
        chars += len(str(request.response_format.schema))
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(request.messages) + TOKENS_PER_IMAGE * images


@dataclass(slots=True)
class KeyLimits:
    rpm: int | None = None
    tpm: int | None = None
    budget: float | None = None


@dataclass(slots=True)
class Booking:
    """One request's hold on a key's limits, until ``settle``."""

    state: KeyState
    tokens: list[float]  # [time, tokens] entry in the state's token window, adjusted on settle
    cost: float
    settled: bool = False


@dataclass(slots=True)
class KeyState:
    limits: KeyLimits
    spent: float = 0.0  # USD settled so far, including what was stored before this process
    held: float = 0.0  # USD booked by requests in flight
    requests: deque[float] = field(default_factory=deque)
    token_log: deque[list[float]] = field(default_factory=deque)
    tokens_in_window: float = 0.0

    def _expire(self, now: float) -> None:
        horizon = now - WINDOW
        requests = self.requests
        while requests and requests[0] <= horizon:
            requests.popleft()
        log = self.token_log
        while log and log[0][0] <= horizon:
            self.tokens_in_window -= log.popleft()[1]

    def reserve(self, tokens: int, cost: float, now: float | None = None) -> Booking:
        """Book one request of up to ``tokens`` tokens costing up to ``cost`` USD, or raise."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        limits = self.limits
        if limits.rpm is not None and len(self.requests) >= limits.rpm:
            wait = self.requests[0] + WINDOW - now
            raise RateLimitError(
                f"rate limit reached: this key allows {limits.rpm} requests per minute",
                retry_after=max(wait, 0.001), code="rate_limit_exceeded",
            )
        if limits.tpm is not None:
            if tokens > limits.tpm:
                raise QuotaExceededError(
                    f"this request may use {tokens} tokens, more than the key's limit of {limits.tpm} tokens per minute",
                    param="max_tokens", code="tokens_exceed_limit",
                    hint="lower max_tokens or shorten the prompt",
                )
            if self.tokens_in_window + tokens > limits.tpm:
                raise RateLimitError(
                    f"rate limit reached: this key allows {limits.tpm} tokens per minute",
                    retry_after=self._token_wait(tokens, now), code="rate_limit_exceeded",
                )
        if limits.budget is not None and self.spent + self.held + cost > limits.budget:
            raise QuotaExceededError(
                f"budget exhausted: this key may spend ${limits.budget:.4f}; "
                f"${self.spent:.4f} spent and ${self.held:.4f} held by requests in flight",
                code="insufficient_quota",
                hint="raise the budget with a new key, or lower max_tokens",
            )
        self.requests.append(now)
        entry = [now, float(tokens)]
        self.token_log.append(entry)
        self.tokens_in_window += tokens
        self.held += cost
        return Booking(self, entry, cost)

    def _token_wait(self, tokens: int, now: float) -> float:
        """Seconds until enough booked tokens leave the window for this request to fit."""
        excess = self.tokens_in_window + tokens - (self.limits.tpm or 0)
        for at, used in self.token_log:
            excess -= used
            if excess <= 0:
                return max(at + WINDOW - now, 0.001)
        return WINDOW

    def settle(self, booking: Booking, tokens: int, cost: float) -> None:
        """Replace a booking by what the request really used (once; later calls do nothing)."""
        if booking.settled:
            return
        booking.settled = True
        self.held -= booking.cost
        self.spent += cost
        entry = booking.tokens
        # Only an entry still inside the window counts towards the running sum.
        if self.token_log and entry[0] >= self.token_log[0][0]:
            self.tokens_in_window += tokens - entry[1]
        entry[1] = float(tokens)
