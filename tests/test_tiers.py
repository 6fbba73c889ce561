"""The tier boundary (tests/tiers.py): a test not marked `process` cannot start a process, a marked one can, and
every test the tier lists name exists (a renamed test must not slip into the fast tier unnoticed)."""

from __future__ import annotations

import ast
import asyncio
import multiprocessing
import subprocess
import sys

import pytest

from tests.tiers import PROCESS_TESTS, SLOW_TESTS, TESTS, ProcessOutsideItsTier, pytest_collection_modifyitems


def test_an_unmarked_test_cannot_start_a_process() -> None:
    """subprocess and multiprocessing are refused with an error that says how to mark the test."""
    with pytest.raises(ProcessOutsideItsTier, match="is not marked `process`"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    with pytest.raises(ProcessOutsideItsTier):
        multiprocessing.get_context("spawn").Process(target=print).start()


async def test_an_unmarked_test_cannot_start_an_asyncio_subprocess() -> None:
    """asyncio's subprocesses are refused too."""
    with pytest.raises(ProcessOutsideItsTier):
        await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")


@pytest.mark.process
def test_a_process_test_may_start_one() -> None:
    """Marked `process` (and so `slow`): the guard stands aside."""
    assert subprocess.run([sys.executable, "-c", "pass"], check=True).returncode == 0


def test_a_process_test_is_slow(request: pytest.FixtureRequest) -> None:
    """The collection hook marks every `process` test `slow`, so `-m "not slow"` leaves it out."""
    item = pytest.Function.from_parent(request.node.parent, name="test_a_process_test_may_start_one")
    assert item.get_closest_marker("slow") is None
    pytest_collection_modifyitems([item])
    assert item.get_closest_marker("slow") is not None


@pytest.mark.parametrize("listing", [PROCESS_TESTS, SLOW_TESTS], ids=["PROCESS_TESTS", "SLOW_TESTS"])
def test_every_listed_test_exists(listing: dict[str, frozenset[str] | None]) -> None:
    """Each file exists and each listed name is a test function defined in it."""
    for rel, names in listing.items():
        path = TESTS / rel
        assert path.is_file(), f"tests/tiers.py lists {rel}, which does not exist"
        defined = {node.name for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
        missing = sorted(set(names or ()) - defined)
        assert not missing, f"tests/tiers.py lists tests that {rel} no longer defines: {missing}"
