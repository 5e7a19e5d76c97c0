"""Fixtures for plugin tests: see helpers.py for how a plugin is made without installing it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Mapping

import pytest

from tests.plugins.helpers import install, make_plugin, uninstall


@pytest.fixture()
def install_plugin(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``install_plugin(name, entry_points, modules)`` makes a plugin (helpers.make_plugin) and
    puts it on sys.path for this test; every plugin it made is removed afterwards."""
    made: list[Path] = []

    def make_and_install(name: str, entry_points: Mapping[str, Mapping[str, str]], modules: Mapping[str, str]) -> Path:
        path = make_plugin(tmp_path, name, entry_points, modules)
        made.append(path)
        install(path)
        return path

    yield make_and_install
    for path in made:
        uninstall(path)
