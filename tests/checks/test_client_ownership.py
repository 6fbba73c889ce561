"""`client_ownership`: `{ClientId}` in the path is the verified token's own client, and the bank's revocation
rules (a mismatch, an upstream 401, a confirmed DELETE), on the memory store."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.checks.client_ownership import ClientOwnership
from tests.checks.unit import NOW, make_check, services, token, view


def path(client_id: str) -> dict[str, str]:
    return {"ClientId": client_id}


async def test_the_token_s_own_client_passes_and_revokes_nothing() -> None:
    """The path names the token's client: pass."""
    svc = services()
    tok = token("client-a")
    assert await make_check(ClientOwnership, svc).evaluate(view(params=path("client-a"), tok=tok)) is None
    assert not await svc.revocations.is_revoked(tok)


async def test_another_client_is_401_and_revokes_the_token() -> None:
    """Another client's id: 401 invalid_token client_not_owned with a challenge, and the token is revoked."""
    svc = services()
    tok = token("client-a")
    denial = await make_check(ClientOwnership, svc).evaluate(view(params=path("client-b"), tok=tok))
    assert denial is not None
    assert (denial.status, denial.error, denial.reason, denial.check) == (401, "invalid_token", "client_not_owned",
                                                                          "client_ownership")
    assert denial.headers[0][0] == "WWW-Authenticate"
    assert await svc.revocations.is_revoked(tok)


@pytest.mark.parametrize(("dry_run", "revoke_on_mismatch"), [(True, True), (False, False)],
                         ids=["audit-mode", "revoke_on_mismatch-off"])
async def test_a_mismatch_without_revocation(dry_run: bool, revoke_on_mismatch: bool) -> None:
    """In audit mode, or with revoke_on_mismatch false, a mismatch is refused but the token stays valid."""
    svc = services()
    tok = token("client-a")
    check = make_check(ClientOwnership, svc, revoke_on_mismatch=revoke_on_mismatch)
    denial = await check.evaluate(view(params=path("client-b"), tok=tok, dry_run=dry_run))
    assert denial is not None and denial.reason == "client_not_owned"
    assert not await svc.revocations.is_revoked(tok)


async def test_status_403_is_insufficient_scope() -> None:
    """status: 403 answers insufficient_scope (with its challenge)."""
    denial = await make_check(ClientOwnership, status=403).evaluate(view(params=path("b"), tok=token("a")))
    assert denial is not None and (denial.status, denial.error) == (403, "insufficient_scope")
    assert 'error="insufficient_scope"' in denial.headers[0][1]


async def test_no_client_id_in_the_path_is_404_and_no_token_is_401() -> None:
    """A route without the parameter is 404 client_id_missing; without a verified token 401 token_missing."""
    check = make_check(ClientOwnership)
    missing = await check.evaluate(view(tok=token()))
    assert missing is not None and (missing.status, missing.reason) == (404, "client_id_missing")
    no_token = await check.evaluate(view(params=path("client-a")))
    assert no_token is not None and (no_token.status, no_token.reason) == (401, "token_missing")


async def test_upstream_401_revokes_the_token() -> None:
    """after_response with 401: the token is revoked (revoke_on_upstream_401)."""
    svc = services()
    tok = token()
    await make_check(ClientOwnership, svc).after_response(view(params=path("client-a"), tok=tok), 401)
    assert await svc.revocations.is_revoked(tok)


async def test_a_confirmed_delete_revokes_every_token_of_the_client_issued_until_then() -> None:
    """after_response DELETE 204: tokens of the client issued at or before the clock are revoked, later ones not."""
    svc = replace(services(), clock=lambda: NOW + 10)
    check = make_check(ClientOwnership, svc)
    await check.after_response(view("DELETE", params=path("client-a"), tok=token(jti="j1")), 204)
    assert await svc.revocations.is_revoked(token(jti="j2", iat=NOW + 10))
    assert not await svc.revocations.is_revoked(token(jti="j3", iat=NOW + 11))
    assert not await svc.revocations.is_revoked(token("client-b", jti="j4"))


async def test_after_response_without_a_token_or_for_other_statuses_does_nothing() -> None:
    """No verified token, or a status other than 401 / DELETE 204: nothing is revoked."""
    svc = services()
    check = make_check(ClientOwnership, svc)
    tok = token()
    await check.after_response(view(params=path("client-a")), 401)
    await check.after_response(view("GET", params=path("client-a"), tok=tok), 204)
    await check.after_response(view("DELETE", params=path("client-a"), tok=tok), 200)
    assert not await svc.revocations.is_revoked(tok)
