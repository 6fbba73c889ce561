"""Facts only on allow: a request forwarded despite a denial (audit mode) carries no verified fact header."""

from __future__ import annotations

from tests.conftest import SHIPPED_POLICIES, StartServer
from tests.policy.test_enforcement import ISSUER, REGISTER, Bank


async def _gateway(start_server: StartServer, running_gateway, **policies: object):
    bank = Bank()
    server = await start_server(bank.app)
    base = str(server.make_url("")).rstrip("/")
    trust = {"token_issuers": {"bank": {"issuer": ISSUER, "jwks_uri": base + "/jwks", "token_types": ["at+jwt"]}}}
    return bank, await running_gateway(base, policy_dir=SHIPPED_POLICIES, trust=trust, policies=policies)


async def test_audit_denial_forwards_no_facts(start_server: StartServer, running_gateway):
    """The token was verified (a fact), then client_id_header denied in audit mode: the request goes upstream
    with no X-DCR-Client-Id."""
    bank, gw = await _gateway(start_server, running_gateway, check_modes={"client_id_header": "audit"})
    resp = await gw.client.get(f"{REGISTER}/client-a",
                               headers={"Authorization": f"Bearer {bank.token()}"})
    assert resp.status == 200
    assert (await resp.json())["x_dcr_client_id"] == []


async def test_allowed_request_forwards_its_facts(start_server: StartServer, running_gateway):
    """The same request with every check passing carries the verified client id (the test above can fail)."""
    bank, gw = await _gateway(start_server, running_gateway, check_modes={"client_id_header": "audit"})
    resp = await gw.client.get(f"{REGISTER}/client-a",
                               headers={"Authorization": f"Bearer {bank.token()}", "client_id": "client-a"})
    assert resp.status == 200
    assert (await resp.json())["x_dcr_client_id"] == ["client-a"]
