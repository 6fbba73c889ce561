"""`content_type`: a body's media type must be one of the allowed ones (parameters and case ignored)."""

from __future__ import annotations

import pytest

from gateway.checks.content_type import ContentType
from tests.checks.unit import make_check, view


@pytest.mark.parametrize("value", ["application/jose", "Application/JOSE", "application/jose; charset=utf-8",
                                   " application/jwt "])
async def test_allowed_media_types_pass(value: str) -> None:
    """The media type before any `;` is compared case-insensitively with the allowed list."""
    check = make_check(ContentType, allowed=["application/jose", "application/jwt"])
    assert await check.evaluate(view("POST", headers={"Content-Type": value}, body=b"x")) is None


async def test_a_missing_content_type_is_refused_with_the_rfc_7591_error_by_default() -> None:
    """No Content-Type: 400 invalid_client_metadata, reason content_type_missing."""
    denial = await make_check(ContentType, allowed=["application/jose"]).evaluate(view("POST", body=b"x"))
    assert denial is not None
    assert (denial.status, denial.error, denial.reason, denial.check) == (
        400, "invalid_client_metadata", "content_type_missing", "content_type")


async def test_another_media_type_is_refused_naming_the_allowed_ones() -> None:
    """A media type outside the list: content_type_not_allowed, the description lists the allowed types sorted."""
    check = make_check(ContentType, allowed=["application/jwt", "application/jose"])
    denial = await check.evaluate(view("POST", headers={"Content-Type": "application/json"}, body=b"{}"))
    assert denial is not None
    assert denial.reason == "content_type_not_allowed"
    assert denial.description == "Content-Type must be one of: application/jose, application/jwt"


async def test_status_and_error_are_parameters() -> None:
    """A policy may answer 415 with its own error code."""
    check = make_check(ContentType, allowed=["application/json"], status=415, error="invalid_request")
    denial = await check.evaluate(view("POST", headers={"Content-Type": "text/plain"}, body=b"x"))
    assert denial is not None and (denial.status, denial.error) == (415, "invalid_request")
