"""Where the gateway's shared state lives, so that many gateway processes act as one.

Two parts, each chosen by one URL (``[state]`` in the config, or ``serve --counters/--records``):

* **counters**: per-key request and token windows and budget reservations, checked and
  booked in one atomic step. ``memory:`` (the default) keeps them in the process;
  ``sqlite:///path`` shares them between the processes of one machine
  (``serve --workers N``); ``redis://host:port/db`` between machines.
* **records**: gateway keys and their usage, stored Responses, the response cache, Files
  and Batches. ``sqlite:`` (the default) keeps them in files in the data dir;
  ``postgresql://user@host:port/db`` in one PostgreSQL database shared by every instance.

Nothing here imports a database client until a URL that needs one is opened.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError

STATE_PARTS = ("counters", "records")
SCHEMES = {
    "counters": ("memory", "sqlite", "redis", "rediss", "unix"),
    "records": ("sqlite", "postgresql", "postgres"),
}
EXAMPLES = {"counters": "redis://127.0.0.1:6379/0", "records": "postgresql://modelport@127.0.0.1:5432/modelport"}


def scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def check_url(part: str, url: str) -> str:
    """The URL, if ``part`` can live there; else a ConfigError that names what can."""
    if not isinstance(url, str) or scheme(url) not in SCHEMES[part]:
        raise ConfigError(
            f"[state] {part} = {url!r} is not a URL modelport can keep {part} at",
            hint=f"use one of the schemes {', '.join(s + ':' for s in SCHEMES[part])}, e.g. {EXAMPLES[part]}",
        )
    return url


# Query parameters that hold a secret or say where one is kept: libpq's password,
# sslpassword and passfile, redis-py's password, and the pwd/token/secret/key/credential
# names of other drivers. Matched by substring, so a variant spelling (db_password) is
# masked too, at the price of a harmless one now and then (sslkey is a file path).
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL with every secret masked, for anything an operator sees (logs, `state
    status`, an error's detail): the userinfo password and each secret-bearing query
    parameter (``?password=``, which redis-py and libpq accept as well). API callers are
    shown no state URL at all."""
    password = urlsplit(url).password
    # Edited in place rather than re-assembled: urlunsplit drops the "//" of unix:///path.
    base, question, rest = url.partition("?")
    query, hash_, fragment = rest.partition("#")
    if password is not None:
        base = base.replace(f":{password}@", ":***@", 1)
    query = "&".join(_redact_param(pair) for pair in query.split("&"))
    return base + question + query + hash_ + fragment


def _redact_param(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    return f"{name}=***" if equals and _SECRET_PARAM.search(unquote(name)) else pair


def configured(part: str, config: dict | None = None) -> str | None:
    """The ``[state] part`` URL of a loaded config (by default this process's config file),
    checked; None when the config names none."""
    from ..config import section

    url = section("state", config).get(part)
    return None if url is None else check_url(part, url)
