"""Plugins: everything modelport can be extended with is found through entry points.

Eight entry-point groups name the pieces: ``modelport.providers`` (rows of the provider
table), ``modelport.dialects`` (wire formats), ``modelport.backends`` (what talks to a
model), ``modelport.doors`` (gateway routes), ``modelport.commands`` (CLI subcommands),
``modelport.hooks`` (gateway request/response hooks), ``modelport.tools`` (functions a
model may call) and ``modelport.stores`` (what ``modelport state migrate`` copies).
modelport's own pieces are declared in its pyproject.toml exactly like a third party's, so
one registry serves both and ``modelport plugins`` lists both.

Discovery is lazy: nothing is scanned at ``import modelport``. The first lookup reads the
installed distributions' entry points once per process (``refresh()`` reads them again), and
an entry's object is imported only when it is first used. A plugin that fails to import is
reported once, as a ``PluginWarning`` naming it and its distribution, and is then left out,
so one broken package never breaks the SDK or the CLI.
"""

from __future__ import annotations

import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar, overload

from .errors import ConfigError

PROVIDERS = "modelport.providers"
DIALECTS = "modelport.dialects"
BACKENDS = "modelport.backends"
DOORS = "modelport.doors"
COMMANDS = "modelport.commands"
HOOKS = "modelport.hooks"
TOOLS = "modelport.tools"
STORES = "modelport.stores"
GROUPS: tuple[str, ...] = (PROVIDERS, DIALECTS, BACKENDS, DOORS, COMMANDS, HOOKS, TOOLS, STORES)

BUILT_IN = "modelport"  # the distribution whose entries are modelport's own

T = TypeVar("T")


class PluginWarning(UserWarning):
    """A plugin could not be used; the message names it, its distribution and why."""


class PluginError(ConfigError):
    """A plugin asked for by name is not installed, or could not be loaded."""


@dataclass(frozen=True, slots=True)
class PluginEntry:
    """One entry point in one of modelport's groups, and where it came from."""

    name: str
    group: str
    value: str  # the object it points to: "module:attribute" or "module"
    dist: str  # the distribution that declares it
    version: str

    @property
    def builtin(self) -> bool:
        return self.dist == BUILT_IN

    @property
    def origin(self) -> str:
        return f"{BUILT_IN} (built-in)" if self.builtin else f"{self.dist} {self.version}"

    def load(self) -> Any:
        from importlib.metadata import EntryPoint

        return EntryPoint(name=self.name, value=self.value, group=self.group).load()


@dataclass(frozen=True, slots=True)
class PluginFailure:
    entry: PluginEntry
    reason: str


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.found: dict[str, dict[str, PluginEntry]] | None = None  # group -> name -> entry
        self.loaded: dict[PluginEntry, Any] = {}
        self.failed: dict[PluginEntry, PluginFailure] = {}


_registry = _Registry()


def entries(group: str) -> list[PluginEntry]:
    """The usable entries of ``group``: modelport's own first, then by distribution name.
    A name declared twice is kept the first time; the others are listed in ``failures()``."""
    return list(_group(group).values())


def names(group: str) -> list[str]:
    return list(_group(group))


@overload
def load(group: str, name: str) -> Any: ...
@overload
def load(group: str, name: str, check: Callable[[str, Any], T]) -> T: ...
def load(group: str, name: str, check: Callable[[str, Any], Any] | None = None) -> Any:
    """The object entry ``name`` of ``group`` points to, imported on first use and kept.

    ``check(name, obj)`` may turn the object into what the caller uses, raising TypeError,
    ValueError or ConfigError when it is not usable. Raises PluginError when no installed
    distribution registers ``name`` (naming those that do), or when the entry cannot be
    imported or fails the check (naming the plugin, its distribution and why; warned once)."""
    entry = _group(group).get(name)
    if entry is None:
        raise PluginError(f"no {_kind(group)} named {name!r} is installed; installed: {', '.join(names(group)) or 'none'}",
                          hint=f"a plugin adds one with an entry point in the {group} group (docs/plugins.md)")
    failure = _registry.failed.get(entry)
    if failure is None:
        try:
            obj = _registry.loaded[entry]
        except KeyError:
            try:
                obj = _registry.loaded[entry] = entry.load()
            except Exception as exc:  # a plugin's import may fail in any way; report it, never crash
                failure = _fail(entry, f"{type(exc).__name__}: {exc}")
        if failure is None:
            if check is None:
                return obj
            try:
                return check(name, obj)
            except (TypeError, ValueError, ConfigError) as exc:
                failure = _fail(entry, str(exc))
    raise PluginError(_describe(failure), hint="reinstall or uninstall that distribution; `modelport plugins` lists every plugin")


@overload
def load_all(group: str) -> dict[str, Any]: ...
@overload
def load_all(group: str, check: Callable[[str, Any], T]) -> dict[str, T]: ...
def load_all(group: str, check: Callable[[str, Any], Any] | None = None) -> dict[str, Any]:
    """Every usable entry of ``group`` by name, in ``entries`` order, each as ``load`` gives
    it; one that cannot be used is warned about once and left out."""
    result: dict[str, Any] = {}
    for name in _group(group):
        try:
            result[name] = load(group, name) if check is None else load(group, name, check)
        except PluginError:
            continue
    return result


def failures() -> list[PluginFailure]:
    """Every entry that could not be used so far, and why (``modelport plugins`` tries them all)."""
    _group(GROUPS[0])  # a name registered twice is a failure that discovery itself finds
    return list(_registry.failed.values())


def refresh() -> None:
    """Forget what was discovered and loaded: the next lookup reads the installed
    distributions again (after installing or removing a plugin in a running process)."""
    import importlib

    with _registry.lock:
        _registry.found = None
        _registry.loaded.clear()
        _registry.failed.clear()
    importlib.invalidate_caches()  # importlib.metadata caches what each path directory holds


# -- typed accessors for the groups whose consumers hold many at once ----------------------------


def doors() -> dict[str, Callable[..., Any]]:
    """Door classes by name; the gateway builds each with its services object (docs/plugins.md)."""
    return load_all(DOORS, as_callable)


def hooks() -> dict[str, Callable[..., Any]]:
    """Hook classes or factories by name, in the order the gateway runs them (``entries`` order);
    each is called with no arguments to make the hook."""
    return load_all(HOOKS, as_callable)


def tools() -> dict[str, Callable[..., Any]]:
    """Installed tool functions by name, usable as ``chat(..., tools=["name"])``."""
    return load_all(TOOLS, as_callable)


def as_callable(name: str, obj: Any) -> Callable[..., Any]:
    """The check of the doors, hooks and tools groups: the object must be callable."""
    if not callable(obj):
        raise TypeError(f"points to {type(obj).__name__} {obj!r:.60}, which cannot be called")
    return obj


# -- discovery -------------------------------------------------------------------------------


def _group(group: str) -> dict[str, PluginEntry]:
    found = _registry.found
    if found is None:
        with _registry.lock:
            found = _registry.found
            if found is None:
                found = _registry.found = _discover()
    try:
        return found[group]
    except KeyError:
        raise ValueError(f"{group!r} is not a modelport plugin group; the groups are {', '.join(GROUPS)}") from None


def _discover() -> dict[str, dict[str, PluginEntry]]:
    from importlib.metadata import entry_points

    own = _source_checkout_entries()
    found: dict[str, dict[str, PluginEntry]] = {group: {} for group in GROUPS}
    third_party: list[PluginEntry] = []
    installed = entry_points()
    for group in GROUPS:
        for ep in installed.select(group=group):
            dist = ep.dist
            entry = PluginEntry(ep.name, group, ep.value, dist.name if dist else "?", dist.version if dist else "?")
            if not entry.builtin:
                third_party.append(entry)
            elif own is None:
                found[group][entry.name] = entry
    for entry in own or ():
        found[entry.group][entry.name] = entry
    for entry in sorted(third_party, key=lambda e: (e.dist.lower(), e.name)):
        taken = found[entry.group].get(entry.name)
        if taken is None:
            found[entry.group][entry.name] = entry
        else:
            _fail(entry, f"the name is taken by {taken.origin} ({taken.value})")
    return found


def _source_checkout_entries() -> list[PluginEntry] | None:
    """modelport's own entries from the pyproject.toml beside the package, when modelport runs
    from a source checkout (an editable install, or PYTHONPATH): there the installed metadata
    was written at install time and may predate the checkout, or belong to another checkout.
    A wheel has no such file, and its metadata is the truth."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        return None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - 3.10 only
        import tomli as tomllib

    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    if project.get("name") != BUILT_IN:
        return None
    tables = project.get("entry-points", {})
    return [
        PluginEntry(name, group, value, BUILT_IN, str(project.get("version", "")))
        for group in GROUPS
        for name, value in tables.get(group, {}).items()
    ]


def _fail(entry: PluginEntry, reason: str) -> PluginFailure:
    failure = _registry.failed[entry] = PluginFailure(entry, reason)
    warnings.warn(_describe(failure), PluginWarning, stacklevel=3)
    return failure


def _describe(failure: PluginFailure) -> str:
    entry = failure.entry
    return (f"modelport plugin {entry.name!r} ({entry.group}, {entry.value}) from {entry.origin} "
            f"cannot be used: {failure.reason}")


def _kind(group: str) -> str:
    return group.removeprefix("modelport.").rstrip("s")
