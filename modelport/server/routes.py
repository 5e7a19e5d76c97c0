"""Routes: what each door serves, declared by the door and compiled into one table at start.

A door lists its routes (``Route``); the app compiles every door's into a ``RouteTable``:
exact paths in one dict (one lookup per request, however many doors there are), patterns in
the order the doors gave them. A path several wire formats share (``GET /v1/models`` is
OpenAI's, Gemini's and Anthropic's) is settled by asking the routes: one with ``claims``
takes the request when its predicate says the caller speaks its format (a Gemini SDK's
``x-goog-api-key``), else the one without.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Mapping, Protocol

from ..dialects.base import ServerDialect
from ..errors import NotFoundError
from .http import Request, not_allowed

Handler = Callable[..., Awaitable[None]]  # (req, *the pattern's groups) -> None


class Claims(Protocol):
    def __call__(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool: ...


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint of a door.

    ``path`` is exact, or a compiled pattern whose groups are passed to the handler.
    ``method`` may be ``"*"``: the handler tells methods apart itself. ``dialect`` is the
    wire format the route's errors speak. ``runs_model``: the handler makes model calls
    through the call pipeline, which books the key's limits (rpm, tpm, budget) itself;
    every other route costs one request of the key's rpm before it runs. ``public``: no
    key is needed (liveness, the console's static pages). ``claims``: for a path shared
    with other doors, whether this request is this door's.
    """

    method: str
    path: str | re.Pattern[str]
    handler: Handler
    dialect: ServerDialect
    door: str
    runs_model: bool = False
    public: bool = False
    claims: Claims | None = None


@dataclass(slots=True)
class RouteTable:
    """Every door's routes, compiled once; ``find`` answers each request."""

    exact: dict[tuple[str, str], list[Route]] = field(default_factory=dict)
    methods: dict[str, list[str]] = field(default_factory=dict)  # exact path -> its methods
    patterns: list[Route] = field(default_factory=list)
    # Where a path no route serves gets its 404 in another dialect than the default's (Gemini's /v1beta).
    error_prefixes: list[tuple[str, ServerDialect]] = field(default_factory=list)
    default_dialect: ServerDialect | None = None
    # Each pattern's place in its door's declaration (claiming ones are tried first, but a
    # door's own order decides which of its routes owns a path).
    declared: dict[int, int] = field(default_factory=dict)

    @classmethod
    def compile(cls, routes: Iterable[Route], error_prefixes: Iterable[tuple[str, ServerDialect]],
                default_dialect: ServerDialect) -> RouteTable:
        table = cls(error_prefixes=sorted(error_prefixes, key=lambda p: -len(p[0])), default_dialect=default_dialect)
        claiming: list[Route] = []
        plain: list[Route] = []
        for place, route in enumerate(routes):
            table.declared[id(route)] = place
            if isinstance(route.path, str):
                shared = table.exact.setdefault((route.method, route.path), [])
                # A claiming route is asked before the one that takes what nobody claims.
                shared.insert(0, route) if route.claims is not None else shared.append(route)
                methods = table.methods.setdefault(route.path, [])
                if route.method not in methods:
                    methods.append(route.method)
            else:
                (claiming if route.claims is not None else plain).append(route)
        table.patterns = claiming + plain
        return table

    def find(self, req: Request) -> tuple[Route, tuple[str, ...]]:
        """The route for this request and the groups its pattern matched; a 404 or 405 in
        the dialect of the path's door."""
        method, path = req.method, req.path
        shared = self.exact.get((method, path))
        if shared is not None:
            return _claimed(shared, req), ()
        methods = self.methods.get(path)
        if methods:
            req.dialect = self.exact[(methods[0], path)][0].dialect  # the 405 in the path's own dialect
            raise not_allowed(method, path, tuple(sorted(methods)))
        fits: list[tuple[Route, re.Match[str]]] = []
        for route in self.patterns:
            match = route.path.match(path)  # type: ignore[union-attr]
            if match is not None and (route.claims is None or route.claims(req.headers, req.query)):
                fits.append((route, match))
        for route, match in fits:
            if route.method == method or route.method == "*":
                # Within a door the first route that fits a path owns it: GET on a POST-only
                # Gemini method is a 405, not a model of that name. Across doors the method decides.
                owner = min((r for r, _ in fits if r.door == route.door), key=lambda r: self.declared[id(r)])
                if owner is not route and owner.method not in (method, "*"):
                    break
                return route, match.groups()
        if fits:
            owner = next((r for r, _ in fits if r.method not in (method, "*")), fits[0][0])
            req.dialect = owner.dialect
            raise not_allowed(method, path, (owner.method,))
        req.dialect = self.dialect_for(path)
        paths = sorted({p for _, p in self.exact if p.startswith("/v1/")})
        raise NotFoundError(f"no such endpoint: {method} {path}; this gateway serves {', '.join(paths)} and Gemini's /v1beta/models/...",
                            code="unknown_url")

    def dialect_for(self, path: str) -> ServerDialect | None:
        for prefix, dialect in self.error_prefixes:
            if path.startswith(prefix):
                return dialect
        return self.default_dialect


def _claimed(shared: list[Route], req: Request) -> Route:
    for route in shared:
        if route.claims is None or route.claims(req.headers, req.query):
            return route
    return shared[-1]
