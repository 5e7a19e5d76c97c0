"""Plugins: the doors and hooks the gateway finds through entry points (the built-in doors
register the same way). Discovered on first use, so ``import modelport`` reads no metadata."""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any


@functools.cache
def _load(group: str) -> tuple[Any, ...]:
    found = sorted(entry_points(group=group), key=lambda ep: ep.name)
    return tuple(ep.load() for ep in found)


def doors() -> tuple[Any, ...]:
    return _load("modelport.doors")


def hooks() -> list[object]:
    return [h() if isinstance(h, type) else h for h in _load("modelport.hooks")]
