"""What ``modelport serve`` is told: the ``[server]`` table and the flags, with safe defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
BODY_TIMEOUT = 15.0
# A whole body, however steadily it trickles in: 16 MiB (the default max_body_bytes) at
# ~55 KiB/s, a slow mobile uplink, still fits.
BODY_TOTAL_TIMEOUT = 300.0


class WorkerInfo(Protocol):
    """Which of ``serve --workers N``'s processes this is (``workers.Worker``): its index
    (0..count-1), how many run, and where the workers leave their metrics for each other."""

    @property
    def index(self) -> int: ...

    @property
    def count(self) -> int: ...

    @property
    def peers_dir(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Settings:
    """What ``modelport serve`` is told; every limit has a safe default."""

    host: str = "127.0.0.1"
    port: int = 1234
    # None: required exactly when the server listens beyond loopback.
    auth: bool | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    # The request line and headers: at most this many bytes (else 431), whole within
    # header_timeout seconds of their first byte (else 408); see protocol.py.
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    # Longest wait for the next piece of a request body (else 408).
    body_timeout: float = BODY_TIMEOUT
    # Longest time a whole request body may take (else 408): one byte every few seconds
    # never trips body_timeout, and would hold the connection forever.
    body_total_timeout: float = BODY_TOTAL_TIMEOUT
    # Upper bound of max_tokens; requests without one get this many.
    max_tokens: int = 16384
    request_timeout: float = 600.0
    graceful_timeout: float = 30.0
    log_calls: bool | None = None
    access_log: bool = False
    keys_path: str | None = None
    # Uploads and batch jobs of the Files/Batches API; None: "gateway" in the data dir.
    # Gateways sharing SQLite records share it too; with PostgreSQL records the uploads,
    # outputs and journals are in the database and this holds only scratch files.
    batch_dir: str | None = None
    # How long a dead gateway's batches wait before another gateway takes them over.
    batch_lease_seconds: float = 15.0
    # How long stored Responses API responses stay retrievable (previous_response_id, GET).
    responses_ttl_days: float = 30.0
    # What one Responses request may pull from the store: the turns and MiB of its
    # previous_response_id conversation, and its item_reference count (each else a 400).
    max_chain_turns: int = 512
    max_chain_mb: float = 32.0
    max_item_references: int = 1000
    # What one key may keep stored in the Responses store: responses and MiB (else a 400
    # naming the fix, before the model is called).
    max_stored_responses: int = 10000
    max_stored_mb: float = 256.0
    # Where state shared between gateway processes lives ([state] in the config; see
    # modelport.state): None keeps counters in this process and records in SQLite files.
    counters: str | None = None
    records: str | None = None
    # This gateway's name in its metrics' ``instance`` label; None: host:port.
    instance: str | None = None
    # Longest time the gateway keeps accepting keys from its last good read of the key
    # store (a revoke it cannot see); after that, keyed requests get 503 until a read works.
    keys_max_stale: float = 10.0
    # Web pages (origins such as "http://localhost:3000", or "*") that may call this gateway
    # from a browser, with CORS headers; every other page is refused (see origins.py).
    allowed_origins: tuple[str, ...] = ()
    # Host names a loopback-bound gateway also answers to (beyond loopback names), or "*".
    allowed_hosts: tuple[str, ...] = ()

    @property
    def auth_required(self) -> bool:
        return self.auth if self.auth is not None else self.host not in LOOPBACK_HOSTS


def instance_labels(settings: Settings, worker: WorkerInfo | None = None) -> dict[str, str]:
    """The labels of every metric series of this process: where it serves, and which worker it is."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        import socket

        host = socket.gethostname()  # a wildcard address names no machine
    labels = {"instance": settings.instance or f"{host}:{settings.port}"}
    if worker is not None:
        labels["worker"] = str(worker.index)
    return labels
