"""`registration_request`: the TPP's key set (from the SSA's software_jwks_endpoint) that verifies the request. An
unreachable or refused TPP key set is the TPP's problem (400), and the software-JWKS URL policy is applied before
any lookup."""

from __future__ import annotations

from tests.checks.world import World, keys
from tests.conftest import free_port


async def test_software_jwks_unreachable_is_400(dcr_world):
    """The TPP's key set cannot be fetched: 400 invalid_client_metadata software_jwks_unavailable."""
    w: World = await dcr_world()
    ssa = w.ssa(software_jwks_endpoint=f"http://127.0.0.1:{free_port()}/jwks")
    resp = await w.post(w.request(software_statement=ssa))
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_client_metadata" and "could not be fetched" in body["error_description"]
    assert w.denials("software_jwks_unavailable") == 1


async def test_host_allow_list_refuses_before_resolving(dcr_world):
    """With trust.software_jwks.allowed_hosts, another host is refused by name: no DNS question, no connection."""
    w: World = await dcr_world(trust={"software_jwks": {"allowed_hosts": ["*.openbanking.org.uk"],
                                                        "allow_http": True, "allow_loopback": True}},
                               resolver_table={"keys.attacker.test": ["127.0.0.1"]})
    ssa = w.ssa(software_jwks_endpoint="http://keys.attacker.test/jwks")
    resp = await w.post(w.request(software_statement=ssa))
    assert resp.status == 400
    assert w.denials("software_jwks_url_refused") == 1
    assert w.resolver.asked == [] and not [u for u in w.fetches if "attacker" in u]


async def test_default_policy_refuses_http_and_loopback(dcr_world):
    """The production defaults: an http or loopback software_jwks_endpoint is refused."""
    w: World = await dcr_world(trust={"software_jwks": {}})
    resp = await w.post(w.request())  # the TPP's key set is http://127.0.0.1:…
    assert resp.status == 400
    assert "scheme 'http' is not allowed" in (await resp.json())["error_description"]
    ssa = w.ssa(software_jwks_endpoint=w.tpp_url.replace("http:", "https:") + "/jwks")
    resp = await w.post(w.request(software_statement=ssa))
    assert "loopback address" in (await resp.json())["error_description"]
    assert w.denials("software_jwks_url_refused") == 2 and w.tpp.hits == {}


async def test_a_key_of_another_use_is_not_a_signing_key(dcr_world):
    """Only `use: sig` keys verify requests: the transport (tls) key's kid is unknown as a signing key."""
    w: World = await dcr_world()
    resp = await w.post(w.request(key=keys().transport, header={"alg": "ES256", "kid": keys().transport.kid}))
    assert resp.status == 400
    assert w.denials("request_unknown_kid") == 1
