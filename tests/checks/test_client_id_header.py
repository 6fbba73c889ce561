"""`client_id_header`: the client_id header names the verified token's own client; a mismatch never revokes."""

from __future__ import annotations

import pytest

from gateway.checks.client_id_header import ClientIdHeader
from tests.checks.unit import make_check, services, token, view


async def test_the_token_s_own_client_id_passes() -> None:
    """Header equal to the verified token's client_id: pass."""
    check = make_check(ClientIdHeader)
    assert await check.evaluate(view(headers={"client_id": "client-a"}, tok=token("client-a"))) is None


@pytest.mark.parametrize(
    ("headers", "with_token", "reason"),
    [
        ([], True, "client_id_missing"),
        ([("client_id", "client-a"), ("client_id", "client-a")], True, "client_id_repeated"),
        ([("client_id", "client-a")], False, "token_missing"),
        ([("client_id", "client-b")], True, "client_id_mismatch"),
    ],
    ids=["missing", "repeated", "no-token", "mismatch"],
)
async def test_refusals_are_401_invalid_token_with_a_challenge(
    headers: list[tuple[str, str]], with_token: bool, reason: str
) -> None:
    """401 invalid_token with a Bearer challenge carrying the error."""
    denial = await make_check(ClientIdHeader).evaluate(view(headers=headers, tok=token() if with_token else None))
    assert denial is not None
    assert (denial.status, denial.error, denial.reason, denial.check) == (401, "invalid_token", reason,
                                                                          "client_id_header")
    (name, challenge), = denial.headers
    assert name == "WWW-Authenticate" and challenge.startswith('Bearer realm="dcr-gateway", error="invalid_token"')


@pytest.mark.parametrize(("status", "error"), [(403, "insufficient_scope"), (400, "invalid_request")])
async def test_other_statuses_carry_no_challenge(status: int, error: str) -> None:
    """status 403 → insufficient_scope, any other → invalid_request; no WWW-Authenticate either way."""
    denial = await make_check(ClientIdHeader, status=status).evaluate(view(headers={"client_id": "b"}, tok=token()))
    assert denial is not None
    assert (denial.status, denial.error, denial.headers) == (status, error, ())


async def test_a_custom_header_name_and_a_mismatch_never_revoke() -> None:
    """`header` names another header; a mismatch leaves the token valid (it says nothing about the token)."""
    svc = services()
    check = make_check(ClientIdHeader, svc, header="x-client")
    tok = token()
    denial = await check.evaluate(view(headers={"x-client": "someone-else"}, tok=tok))
    assert denial is not None and denial.description == "x-client header does not match the access token"
    assert not await svc.revocations.is_revoked(tok)
