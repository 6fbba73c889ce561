"""The registration body as a compact JWS: accepted spellings and refused ones (pure functions)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.checks.registration import RegistrationError, parse_request, request_jws_text

JWS = "eyJhbGciOiJQUzI1NiJ9.e30.c2ln"


def _h(ct: str) -> CIMultiDict[str]:
    return CIMultiDict({"Content-Type": ct})


@pytest.mark.parametrize(
    ("body", "ct"),
    [(JWS, "application/jose"), (JWS + "\r\n", "application/jwt"), (f'"{JWS}"', "application/json"),
     (f' "{JWS}"\n', "application/json; charset=utf-8"), (JWS, "application/json")],
)
def test_accepted_spellings(body, ct):
    """A bare JWS (trailing newline tolerated), or a JSON string of it with application/json."""
    assert request_jws_text(body.encode(), _h(ct)) == JWS


@pytest.mark.parametrize(
    ("body", "ct", "reason"),
    [
        (b"", "application/jose", "request_not_jws"),
        (b'{"redirect_uris": []}', "application/json", "request_not_jws"),
        (b"[1]", "application/jose", "request_not_jws"),
        (f'"{JWS}"'.encode(), "application/jose", "request_malformed"),  # quoting only with application/json
        (b'"unterminated', "application/json", "request_malformed"),
        (b"\xc3\xa9.e30.c2ln", "application/jose", "request_malformed"),
        (JWS.encode() + b".x", "application/jose", "request_malformed"),
        (b"a" * 70_000, "application/jose", "request_too_large"),
    ],
)
def test_refused_spellings(body, ct, reason):
    """Everything else is a RegistrationError with a stable reason."""
    with pytest.raises(RegistrationError) as info:
        parse_request(body, _h(ct))
    assert info.value.reason == reason
