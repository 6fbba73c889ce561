"""Fixtures shared with tests/checks: the DCR world (directory, TPP, bank and gateway on 127.0.0.1)."""

from tests.checks.conftest import dcr_world  # noqa: F401  (a fixture, re-exported for this directory)
