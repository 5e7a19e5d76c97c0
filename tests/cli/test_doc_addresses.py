"""No example in README.md or docs/*.md names an address someone could reach by copying it.

A config or command copied from the docs must not send prompts (or keys) to a real host
nobody chose: the private address of the author's own box, a company's internal name.

The rule, checked on the whole text of README.md and docs/*.md (prose, code, configs):
- IPv4 literals: only loopback (127.0.0.0/8) and 0.0.0.0, which is a bind-all address
  for a listener (`serve --host 0.0.0.0`), not a host one can reach.
- IPv6 literals in brackets: only ::1 (loopback) and :: (bind-all).
- Host names in URLs (scheme://[user@]host[:port]) and in host:port pairs: localhost,
  names under .localhost or .example (RFC 6761: they never resolve on the internet), and
  the real provider APIs modelport itself calls (the hosts of its provider table, such as
  api.openai.com), which an example may name because the product talks to them.
  A name of one label (`host`, `db`, nginx's upstream `modelport`) is a placeholder that
  no public DNS resolves, so it passes.
- The target of a Markdown link (`[the spec](https://...)`) is a page to read, not an
  address to configure, so it is not looked at.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])")
IPV6 = re.compile(r"\[([0-9A-Fa-f:]*:[0-9A-Fa-f:]*)\]")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'`<>),;]+")
HOST_PORT = re.compile(r"(?<![\w./@-])((?:[A-Za-z0-9-]+\.)+[A-Za-z][A-Za-z0-9-]*):\d{2,5}\b")


def provider_hosts() -> set[str]:
    from modelport.providers import provider_table

    return {urlsplit(p.base_url).hostname for p in provider_table({}).values() if p.base_url} - {None}


def allowed_host(host: str, public: set[str]) -> bool:
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (host == "localhost" or host.endswith((".localhost", ".example")) or host in public
                or "." not in host)
    return ip.is_loopback or ip.is_unspecified


LINK_TARGET = re.compile(r"\]\(https?://[^)\s]+\)")


def offending(text: str, public: set[str]) -> list[str]:
    text = LINK_TARGET.sub("]()", text)
    found = [m for m in IPV4.findall(text) if not allowed_host(m, public)]
    found += [m for m in IPV6.findall(text) if not allowed_host(m, public)]
    for url in URL.findall(text):
        try:
            host = urlsplit(url).hostname
        except ValueError:  # not a URL one could use either: look at it
            host = url
        if host and not allowed_host(host, public):
            found.append(url)
    found += [m for m in HOST_PORT.findall(text) if not allowed_host(m, public)]
    return found


def test_no_doc_example_names_a_routable_address():
    public = provider_hosts()
    bad = {doc.name: offending(doc.read_text(encoding="utf-8"), public) for doc in DOCS}
    assert not {k: v for k, v in bad.items() if v}, f"use localhost or a name under .example instead: {bad}"


def test_the_rule_catches_what_it_should():
    public = {"api.openai.com"}
    assert offending('base_url = "http://10.0.0.5:8080/v1"', public) == ["10.0.0.5", "http://10.0.0.5:8080/v1"]
    assert offending("server gw1.corp.internal:1234;", public) == ["gw1.corp.internal"]
    assert offending("redis://redis.internal:6379/0", public) == ["redis://redis.internal:6379/0"]
    assert offending("http://[fd00::1]:80/", public) == ["fd00::1", "http://[fd00::1]:80/"]
    assert not offending("http://127.0.0.1:1234/v1 http://localhost:3000 https://api.openai.com/v1 "
                         "postgresql://user@db.example:5432/db --host 0.0.0.0 http://[::1]:1234 config.toml v3.10",
                         public)
