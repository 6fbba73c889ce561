"""`body_size`: a per-route maximum body size (413) and, when required, a non-empty body (400)."""

from __future__ import annotations

import pytest

from gateway.checks.body_size import BodySize
from tests.checks.unit import make_check, view


@pytest.mark.parametrize(("body", "required"), [(b"", False), (None, False), (b"x" * 10, False), (b"x", True)],
                         ids=["empty", "none", "at-limit", "required-present"])
async def test_bodies_within_bounds_pass(body: bytes | None, required: bool) -> None:
    """A body of at most max_bytes passes; an empty one passes unless required."""
    assert await make_check(BodySize, max_bytes=10, required=required).evaluate(view("POST", body=body)) is None


async def test_a_body_over_the_limit_is_413() -> None:
    """One byte over max_bytes: 413 request_too_large, reason body_too_large, attributed to body_size."""
    denial = await make_check(BodySize, max_bytes=10).evaluate(view("POST", body=b"x" * 11))
    assert denial is not None
    assert (denial.status, denial.error, denial.reason, denial.check) == (413, "request_too_large", "body_too_large",
                                                                          "body_size")
    assert denial.description == "request body exceeds 10 bytes"


async def test_a_required_body_that_is_empty_is_400() -> None:
    """required: true refuses an empty body with 400 invalid_request, reason body_missing."""
    denial = await make_check(BodySize, max_bytes=10, required=True).evaluate(view("POST", body=b""))
    assert denial is not None
    assert (denial.status, denial.error, denial.reason) == (400, "invalid_request", "body_missing")


def test_the_check_reads_the_body() -> None:
    """The engine must read the body for this check."""
    assert BodySize.needs_body
