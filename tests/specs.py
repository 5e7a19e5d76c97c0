"""Where the contract tests find the providers' own API specs.

The specs are not in the repository (their licences and size keep them out): they are read
in place from ``shared/specs`` beside the checkout, i.e. ``<checkout>/../shared/specs``. A
checkout kept elsewhere (a git worktree, a CI runner) names the directory with
``MODELPORT_SPECS_DIR``. Without the specs, the spec checks skip and say where they looked.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS_DIR = Path(os.environ.get("MODELPORT_SPECS_DIR") or ROOT.parent / "shared" / "specs").resolve()


def spec_path(relative: str) -> Path:
    return SPECS_DIR / relative


def missing(path: Path) -> str:
    """The skip reason for an absent spec: where it was expected and how to point elsewhere."""
    name = path.relative_to(SPECS_DIR) if path.is_relative_to(SPECS_DIR) else path
    return (f"{name} not found: the provider API specs are kept outside the repository and expected in "
            f"{SPECS_DIR} (shared/specs beside the checkout); set MODELPORT_SPECS_DIR to the specs directory to run these checks")
