"""Routing-loop detection: every upstream call the gateway makes carries a hop count one
higher than the request that caused it, and a request that has come round too often is
refused with 508 Loop Detected. A loop needs only a config mistake: a provider whose
base_url is the gateway itself (LM Studio's port 1234 is also the gateway's default)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping

from ..errors import ServerError
from ..transport import UPSTREAM_HEADERS

HOP_HEADER = "x-modelport-hops"
# One gateway may front another; a request seen a second time beyond that is a loop.
MAX_HOPS = 2


@contextmanager
def next_hop(headers: Mapping[str, str]) -> Iterator[None]:
    """Inside: upstream calls carry the next hop count. Raises 508 past ``MAX_HOPS``."""
    value = headers.get(HOP_HEADER, "")
    hops = int(value) if value.isdigit() and len(value) < 4 else 0
    if hops >= MAX_HOPS:
        raise ServerError(
            f"routing loop detected: this request has passed through modelport gateways {hops} times",
            status=508, code="loop_detected",
            hint="a provider's base_url in the gateway's config points back at a gateway; point it at the real server",
        )
    token = UPSTREAM_HEADERS.set({HOP_HEADER: str(hops + 1)})
    try:
        yield
    finally:
        UPSTREAM_HEADERS.reset(token)
