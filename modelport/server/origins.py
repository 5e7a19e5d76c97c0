"""Which browsers may use the gateway: the Origin, Host and fetch-metadata checks, sans I/O.

A gateway on loopback without ``--auth`` is open to every program of the machine, and a web
browser is such a program: any page it shows can send requests to ``127.0.0.1``. Three
checks keep those pages out while SDKs, curl and the console keep working:

* **Origin.** Browsers name the page's origin on every cross-origin request (``fetch`` in
  any mode, form posts). A request whose ``Origin`` is neither the gateway's own (the
  scheme and the ``Host`` it was reached by) nor in ``[server] allowed_origins`` is refused;
  the allowed ones get CORS headers, so a browser app the user chose can call on purpose.
* **Host**, on an open loopback bind. A DNS-rebinding page reaches the gateway under its own
  name, so its requests are "same-origin" to the browser; only the ``Host`` header still
  shows the foreign name. It must be a loopback name or address, the bound address, or in
  ``[server] allowed_hosts`` (with gateway keys required, a page has no key to use).
* **Fetch metadata.** Requests that carry no ``Origin`` (``<img>``, ``<script>``) still
  carry ``Sec-Fetch-Site``: cross-site ones are refused unless they are a top-level
  navigation, whose answer the page that started it cannot read.

Programs that send none of these headers (SDKs, curl) are unaffected.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_MAX_AGE = "600"
_SAFE_FETCH_SITES = frozenset({"same-origin", "none"})
_HOSTS_KEPT = 256


class Refusal(Exception):
    """Why a request from a browser is refused (a 403 in the caller's dialect)."""


def is_loopback(host: str) -> bool:
    """A loopback name or address: ``localhost`` (and ``*.localhost``), 127.0.0.0/8, ::1."""
    host = host.strip("[]").rstrip(".").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:1234`` is ``::1``."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0].lower()
    name, _, port = host_header.rpartition(":")
    return (name if name and port.isdigit() else host_header).lower()


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """The checks for one gateway: where it listens and what its config allows."""

    bound_host: str
    allowed_origins: frozenset[str] = frozenset()
    allowed_hosts: frozenset[str] = frozenset()
    # Only an open gateway on loopback checks Host: beyond loopback it is reached by names
    # nobody can list, and with keys a rebinding page, which has none, is refused anyway
    # (so a reverse proxy in front of a keyed loopback gateway needs no allowed_hosts).
    checks_host: bool = True
    # Host headers already judged: clients send the same few, and parsing an address per
    # request would cost more than the rest of these checks together.
    _hosts: dict[str, bool] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, bound_host: str, allowed_origins: tuple[str, ...] | list[str] = (),
              allowed_hosts: tuple[str, ...] | list[str] = (), *, keys_required: bool = False) -> "OriginPolicy":
        return cls(bound_host, frozenset(o.rstrip("/").lower() for o in allowed_origins), frozenset(h.lower() for h in allowed_hosts),
                   is_loopback(bound_host) and not keys_required)

    def allows_origin(self, origin: str, host_header: str | None) -> bool:
        origin = origin.rstrip("/").lower()
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        if origin == "null" or host_header is None:
            return False  # sandboxed frames and file:// pages are nobody's own origin
        return origin in (f"http://{host_header.lower()}", f"https://{host_header.lower()}")

    def allows_host(self, host_header: str) -> bool:
        known = self._hosts.get(host_header)
        if known is None:
            if len(self._hosts) >= _HOSTS_KEPT:
                self._hosts.clear()  # callers choose Host headers: keep the memory bounded
            known = self._hosts[host_header] = self._judge_host(host_header)
        return known

    def _judge_host(self, host_header: str) -> bool:
        name = host_name(host_header)
        if "*" in self.allowed_hosts or name in self.allowed_hosts or host_header.lower() in self.allowed_hosts:
            return True
        return is_loopback(name) or name == self.bound_host.strip("[]").lower()

    def check(self, method: str, headers: Mapping[str, str]) -> str | None:
        """The allowed ``Origin`` to answer with CORS headers (None: no CORS needed).
        Raises Refusal for a request a web page may not make."""
        host = headers.get("host")
        if self.checks_host and host is not None and not self.allows_host(host):
            raise Refusal(f"this gateway listens on loopback and does not answer requests for host {host_name(host)!r} "
                          "(a page that rebinds its name to 127.0.0.1)")
        origin = headers.get("origin")
        if origin is not None:
            if not self.allows_origin(origin, host):
                raise Refusal(f"requests from web pages at {origin} are refused; to let a browser app call this gateway on "
                              "purpose, add its origin to [server] allowed_origins in the config")
            return origin
        site = headers.get("sec-fetch-site")
        if site is not None and site not in _SAFE_FETCH_SITES:
            navigation = method in ("GET", "HEAD") and headers.get("sec-fetch-mode") == "navigate"
            if not navigation:
                raise Refusal("requests embedded in pages of other sites are refused")
        return None

    @staticmethod
    def preflight_headers(requested_headers: str | None) -> dict[str, str]:
        """The answer to an allowed origin's CORS preflight, beside ``cors_headers``."""
        return {"access-control-allow-methods": CORS_METHODS,
                "access-control-allow-headers": requested_headers or "authorization, content-type",
                "access-control-max-age": CORS_MAX_AGE}


def cors_headers(origin: str) -> tuple[tuple[bytes, bytes], ...]:
    """What an allowed cross-origin caller's every answer carries."""
    return ((b"access-control-allow-origin", origin.encode("latin-1")), (b"access-control-expose-headers", b"x-request-id"),
            (b"vary", b"Origin"))
