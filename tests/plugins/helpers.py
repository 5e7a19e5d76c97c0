"""Plugins made on the fly: a ``*.dist-info`` directory (METADATA + entry_points.txt) beside
the plugin's modules, put on ``sys.path``. importlib.metadata finds it exactly as it finds an
installed distribution, so nothing is installed and nothing touches the network.

    path = make_plugin(tmp_path, "mp-demo", {"modelport.tools": {"shout": "mp_demo:shout"}},
                       {"mp_demo.py": "def shout(text: str) -> str: ..."})
    with installed(path):
        ...   # modelport.plugins sees mp-demo's entries here, and not after
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Mapping

from modelport import plugins

VERSION = "0.1.0"


def make_plugin(tmp_path: Path, name: str, entry_points: Mapping[str, Mapping[str, str]],
                modules: Mapping[str, str], version: str = VERSION) -> Path:
    """A directory holding distribution ``name``: its ``modules`` (file name -> source) and its
    dist-info declaring ``entry_points`` (group -> entry name -> "module:attribute")."""
    root = tmp_path / f"plugin-{name}"
    root.mkdir()
    for filename, source in modules.items():
        file = root / filename
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(source, encoding="utf-8")
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{entry} = {ref}\n" for entry, ref in entries.items()) + "\n"
                for group, entries in entry_points.items()),
        encoding="utf-8",
    )
    return root


@contextlib.contextmanager
def installed(path: Path) -> Iterator[Path]:
    """``path`` on sys.path, seen by a fresh registry; on exit it is gone, its modules with it."""
    install(path)
    try:
        yield path
    finally:
        uninstall(path)


def install(path: Path) -> None:
    """Put ``path`` first on sys.path and refresh the registry, as after a ``pip install``."""
    sys.path.insert(0, str(path))
    plugins.refresh()


def uninstall(path: Path) -> None:
    """Take ``path`` off sys.path, forget the modules imported from it, and refresh the registry."""
    while str(path) in sys.path:
        sys.path.remove(str(path))
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(path)):
            del sys.modules[name]
    plugins.refresh()
