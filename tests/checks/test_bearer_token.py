"""`bearer_token`: what is refused before any key is looked at (RFC 6750 §2.1 / §3), the challenge it answers
with, and its parameters checked against the configured issuers. Verification itself: test_token_verifier.py
(real keys, a real JWKS) and tests/policy/test_enforcement.py (the shipped policies end to end)."""

from __future__ import annotations

import pytest

from gateway.checks import ParamError
from gateway.checks.bearer_token import BearerToken, bearer_challenge
from gateway.checks.token_verifier import MAX_TOKEN_BYTES
from tests.checks.unit import make_check, services, view

TRUST = {"trust": {"token_issuers": {"bank": {"issuer": "https://bank.example/as",
                                              "jwks_uri": "http://127.0.0.1:9/jwks"}}}}


def check() -> BearerToken:
    return make_check(BearerToken, services(**TRUST), issuers=["bank"])


@pytest.mark.parametrize("headers", [[], [("Authorization", "Basic dXNlcjpwYXNz")]], ids=["absent", "basic"])
async def test_no_bearer_credentials_get_a_bare_challenge(headers: list[tuple[str, str]]) -> None:
    """No Authorization, or another scheme: 401 token_missing, and the challenge carries no error (RFC 6750 §3.1)."""
    denial = await check().evaluate(view(headers=headers))
    assert denial is not None
    assert (denial.status, denial.error, denial.reason, denial.check) == (401, "invalid_token", "token_missing",
                                                                          "bearer_token")
    assert denial.headers == (("WWW-Authenticate", 'Bearer realm="dcr-gateway"'),)


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", "Bearer a.b.c"), ("Authorization", "Bearer a.b.c")],
        [("Authorization", "Bearer ")],
        [("Authorization", "Bearer a b")],
        [("Authorization", "Bearer a.b.c\"")],
        [("Authorization", "Bearer " + "a" * (MAX_TOKEN_BYTES + 1))],
        [("Authorization", "Bearer t\u00f6ken.a.b")],
    ],
    ids=["repeated", "empty", "space-inside", "quote", "too-long", "not-ascii"],
)
async def test_malformed_credentials_are_invalid_token(headers: list[tuple[str, str]]) -> None:
    """A repeated header or a value that is not an RFC 6750 b64token: 401 token_malformed with error in the challenge."""
    denial = await check().evaluate(view(headers=headers))
    assert denial is not None
    assert (denial.status, denial.reason) == (401, "token_malformed")
    assert 'error="invalid_token"' in denial.headers[0][1]


def test_the_challenge_drops_characters_a_quoted_string_cannot_hold() -> None:
    """Descriptions and scopes are stripped of quotes, backslashes and controls (no header injection)."""
    value = bearer_challenge("insufficient_scope", 'bad "scope"\\\r\n', "a\"b")
    assert value == 'Bearer realm="dcr-gateway", error="insufficient_scope", error_description="bad scope", scope="ab"'


def test_an_unknown_issuer_is_a_load_error_naming_the_configured_ones() -> None:
    """`issuers` must name config trust.token_issuers entries; the error lists them."""
    with pytest.raises(ParamError) as err:
        make_check(BearerToken, services(**TRUST), issuers=["bank", "other"])
    assert "unknown issuer 'other' (config trust.token_issuers: bank)" in str(err.value)


def test_a_lifetime_longer_than_the_revocation_ttl_is_a_load_error() -> None:
    """max_lifetime_seconds (+ skew) must fit in trust.revocation_ttl_seconds (issue 13)."""
    with pytest.raises(ParamError) as err:
        make_check(BearerToken, services(**TRUST), issuers=["bank"], max_lifetime_seconds=10**9)
    assert "trust.revocation_ttl_seconds" in str(err.value)
