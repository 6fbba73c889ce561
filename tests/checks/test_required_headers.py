"""`required_headers`: each named header is present exactly once with a non-blank value."""

from __future__ import annotations

import pytest

from gateway.checks.required_headers import RequiredHeaders
from tests.checks.unit import make_check, view

NAMES = ["x-fapi-financial-id", "Accept"]


async def test_present_headers_pass() -> None:
    """Every named header once (names are case-insensitive): pass."""
    headers = {"X-FAPI-Financial-ID": "001", "accept": "application/json"}
    assert await make_check(RequiredHeaders, names=NAMES).evaluate(view(headers=headers)) is None


@pytest.mark.parametrize(
    ("headers", "description"),
    [
        ([("Accept", "*/*")], "header x-fapi-financial-id is required"),
        ([("x-fapi-financial-id", "  "), ("Accept", "*/*")], "header x-fapi-financial-id is required"),
        ([("x-fapi-financial-id", "1"), ("x-fapi-financial-id", "2"), ("Accept", "*/*")],
         "header x-fapi-financial-id must be sent once"),
        ([("x-fapi-financial-id", "1")], "header Accept is required"),
    ],
    ids=["missing", "blank", "repeated", "second-missing"],
)
async def test_missing_blank_or_repeated_headers_are_refused(headers: list[tuple[str, str]], description: str) -> None:
    """400 invalid_request, reason header_missing, the description names the header."""
    denial = await make_check(RequiredHeaders, names=NAMES).evaluate(view(headers=headers))
    assert denial is not None
    assert (denial.status, denial.error, denial.reason, denial.check) == (400, "invalid_request", "header_missing",
                                                                          "required_headers")
    assert denial.description == description


async def test_status_and_error_are_parameters() -> None:
    """A policy may choose its own status and error code."""
    denial = await make_check(RequiredHeaders, names=["a"], status=403, error="access_denied").evaluate(view())
    assert denial is not None and (denial.status, denial.error) == (403, "access_denied")
