"""Where the tests find the repository's files, wherever in tests/ a test file lives."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
