"""Signed facts (config `upstream.signed_facts`): what the gateway verified reaches the backend as a short-lived
JWS signed with a key the admin listener publishes — only on allow, never a client's copy.

A real gateway in front of a real upstream that records what it receives; the JWS is verified here with
jwcrypto against the JWKS the admin app serves, independently of the gateway's own JOSE code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk, jws

from gateway.config import ConfigError, Settings, load_settings
from gateway.http.app import Health, build_admin_app
from gateway.observability.metrics import Metrics
from gateway.policy import FactAssertion, FactAssertionError
from tests.conftest import SHIPPED_POLICIES, GatewayTestServer, RunningGateway, StartServer
from tests.policy.test_enforcement import ISSUER, REGISTER, Bank

HEADER = "X-DCR-Assertion"


class Recorder(Bank):
    """The test bank, also recording the headers of every request it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, list[str]]] = []

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path != "/jwks":
                seen: dict[str, list[str]] = {}
                for name, value in request.headers.items():
                    seen.setdefault(name.lower(), []).append(value)
                self.seen.append(seen)
            return await handler(request)

        self.app.middlewares.append(record)


async def _gateway(start_server: StartServer, running_gateway: Any, *, enabled: bool = True,
                   **policies: Any) -> tuple[Recorder, RunningGateway, str]:
    bank = Recorder()
    server = await start_server(bank.app)
    base = str(server.make_url("")).rstrip("/")
    trust = {"token_issuers": {"bank": {"issuer": ISSUER, "jwks_uri": base + "/jwks", "token_types": ["at+jwt"]}}}
    gw = await running_gateway(base, policy_dir=SHIPPED_POLICIES, trust=trust, policies=policies,
                               upstream={"url": base, "signed_facts": {"enabled": enabled}})
    return bank, gw, base


async def _admin_jwks(gw: RunningGateway) -> tuple[int, Any]:
    """GET /facts/jwks.json from the admin app the gateway's `serve` would run with the same signer."""
    client = TestClient(GatewayTestServer(build_admin_app(gw.settings, Metrics(), Health(), gw.assertion),
                                          host="127.0.0.1"))
    await client.start_server()
    try:
        resp = await client.get("/facts/jwks.json")
        return resp.status, await resp.json() if resp.status == 200 else None
    finally:
        await client.close()


def _verify(token: str, jwks_doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWS verified with jwcrypto against the published key set."""
    parsed = jws.JWS()
    parsed.deserialize(token)
    header = json.loads(parsed.objects["protected"])
    key = jwk.JWKSet.from_json(json.dumps(jwks_doc)).get_key(header["kid"])
    assert key is not None, "the JWS names a kid the admin listener does not publish"
    parsed.verify(key, alg=header["alg"])
    return header, json.loads(parsed.payload)


async def test_an_allowed_request_carries_its_facts_signed(start_server: StartServer, running_gateway):
    """The JWS verifies with the published key; it names the gateway, the backend, this request and its facts."""
    bank, gw, base = await _gateway(start_server, running_gateway)
    resp = await gw.client.get(f"{REGISTER}/client-a?x=1", headers={
        "Authorization": f"Bearer {bank.token()}", "client_id": "client-a"})
    assert resp.status == 200
    seen = bank.seen[-1]
    assert len(seen[HEADER.lower()]) == 1
    status, published = await _admin_jwks(gw)
    assert status == 200 and [k["use"] for k in published["keys"]] == ["sig"]
    assert "d" not in published["keys"][0]  # the public half only
    header, claims = _verify(seen[HEADER.lower()][0], published)
    assert header["typ"] == "dcr-facts+jwt" and header["alg"] == "ES256"
    assert claims["iss"] == gw.settings.server.public_url and claims["aud"] == base
    assert claims["exp"] - claims["iat"] == 60 and claims["jti"]
    assert (claims["method"], claims["path"], claims["policy"]) == ("GET", f"{REGISTER}/client-a?x=1",
                                                                    "dcr_register_read")
    assert claims["interaction_id"] == seen["x-fapi-interaction-id"][0]
    assert claims["client_id"] == "client-a"


async def test_each_request_gets_its_own_jws(start_server: StartServer, running_gateway):
    """A new jti every time: the backend can refuse a copy."""
    bank, gw, _ = await _gateway(start_server, running_gateway)
    for _ in range(2):
        await gw.client.get(f"{REGISTER}/client-a", headers={
            "Authorization": f"Bearer {bank.token()}", "client_id": "client-a"})
    _, published = await _admin_jwks(gw)
    jtis = {_verify(seen[HEADER.lower()][0], published)[1]["jti"] for seen in bank.seen}
    assert len(jtis) == 2


async def test_an_audit_denial_sends_no_signed_facts(start_server: StartServer, running_gateway):
    """Facts only on allow: a request one check refused in audit mode goes upstream without the JWS."""
    bank, gw, _ = await _gateway(start_server, running_gateway, check_modes={"client_id_header": "audit"})
    resp = await gw.client.get(f"{REGISTER}/client-a", headers={"Authorization": f"Bearer {bank.token()}"})
    assert resp.status == 200
    assert HEADER.lower() not in bank.seen[-1]
    resp = await gw.client.get(f"{REGISTER}/client-a", headers={
        "Authorization": f"Bearer {bank.token()}", "client_id": "client-a"})
    assert HEADER.lower() in bank.seen[-1]  # the same request, allowed: the test above can fail


@pytest.mark.parametrize("enabled", [True, False], ids=["signed-facts-on", "signed-facts-off"])
async def test_a_clients_own_copy_never_reaches_the_backend(start_server: StartServer, running_gateway, enabled):
    """An X-DCR-Assertion a client sends is dropped, signed facts on or off (the backend would believe it)."""
    bank, gw, _ = await _gateway(start_server, running_gateway, enabled=enabled)
    forged = "eyJhbGciOiJub25lIn0.eyJjbGllbnRfaWQiOiJ2aWN0aW0ifQ."
    resp = await gw.client.get(f"{REGISTER}/client-a", headers={
        "Authorization": f"Bearer {bank.token()}", "client_id": "client-a", HEADER: forged})
    assert resp.status == 200
    assert forged not in bank.seen[-1].get(HEADER.lower(), [])
    assert len(bank.seen[-1].get(HEADER.lower(), [])) == (1 if enabled else 0)


async def test_off_means_no_header_and_no_published_key(start_server: StartServer, running_gateway):
    bank, gw, _ = await _gateway(start_server, running_gateway, enabled=False)
    await gw.client.get(f"{REGISTER}/client-a", headers={
        "Authorization": f"Bearer {bank.token()}", "client_id": "client-a"})
    assert HEADER.lower() not in bank.seen[-1]
    assert gw.assertion is None
    status, _ = await _admin_jwks(gw)
    assert status == 404


def _settings(tmp_path: Path, facts: str, extra: str = "") -> Settings:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"upstream:\n  url: http://127.0.0.1:1\n  signed_facts: {facts}\n{extra}")
    return load_settings(cfg, env={})


def _pem(key: Any) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def test_a_configured_key_signs_and_is_published(tmp_path: Path):
    """key_file (relative to the config file): its public half is what the admin listener publishes."""
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "facts.pem").write_bytes(_pem(key))
    assertion = FactAssertion.from_settings(_settings(tmp_path, "{enabled: true, key_file: facts.pem}"))
    assert assertion is not None
    published = assertion.jwks()["keys"][0]
    expected = jwk.JWK.from_pyca(key.public_key())
    assert (published["x"], published["y"]) == (expected["x"], expected["y"])
    assert published["kid"] == expected.thumbprint() == assertion.kid


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"not a key", "is not an EC P-256 or RSA"),
        (_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "is not an EC P-256 or RSA"),
        (_pem(ec.generate_private_key(ec.SECP384R1())), "signs ES384"),
    ],
    ids=["missing", "garbage", "rsa-1024", "p-384"],
)
def test_an_unusable_key_file_is_refused_by_path(tmp_path: Path, content: bytes | None, message: str):
    if content is not None:
        (tmp_path / "facts.pem").write_bytes(content)
    with pytest.raises(FactAssertionError, match=message) as caught:
        FactAssertion.from_settings(_settings(tmp_path, "{enabled: true, key_file: facts.pem}"))
    assert "upstream.signed_facts.key_file" in str(caught.value)
    assert "BEGIN" not in str(caught.value)


def test_workers_need_a_configured_key(tmp_path: Path):
    """Each worker would otherwise sign with a key of its own, and the backend trusts one."""
    redis = "state: {backend: redis, redis: {url: 'redis://127.0.0.1:1/0'}}\nserver: {workers: 2}\n"
    with pytest.raises(ConfigError, match=r"need upstream\.signed_facts\.key_file"):
        _settings(tmp_path, "{enabled: true}", redis)
    (tmp_path / "facts.pem").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    assert _settings(tmp_path, "{enabled: true, key_file: facts.pem}", redis).server.workers == 2


def test_the_ob_profile_sandbox_needs_signed_facts(tmp_path: Path):
    """Certificate-only registration is believed only through the signature: refused at load without it."""
    extra = "policies: {profile: ob_standard}\nsandbox: {enabled: true}\n"
    with pytest.raises(ConfigError, match=r"needs upstream\.signed_facts\.enabled: true"):
        _settings(tmp_path, "{enabled: false}", extra)
    assert _settings(tmp_path, "{enabled: true}", extra).sandbox_registration_auth == "certificate"


def test_a_rotation_publishes_the_next_and_previous_keys(tmp_path: Path):
    """published_key_files: public or private PEMs, published after the signing key (public halves only, kid
    their thumbprints); the signing key itself is not listed twice; an unusable file is refused by path."""
    signing, upcoming, previous = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    (tmp_path / "facts.pem").write_bytes(_pem(signing))
    (tmp_path / "next.pem").write_bytes(upcoming.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "previous.pem").write_bytes(_pem(previous))
    files = "[next.pem, previous.pem, facts.pem]"
    assertion = FactAssertion.from_settings(
        _settings(tmp_path, f"{{enabled: true, key_file: facts.pem, published_key_files: {files}}}"))
    assert assertion is not None
    keys = assertion.jwks()["keys"]
    expected = [jwk.JWK.from_pyca(k.public_key()).thumbprint() for k in (signing, upcoming, previous)]
    assert [k["kid"] for k in keys] == expected
    assert all(k["use"] == "sig" and k["alg"] == "ES256" and "d" not in k for k in keys)
    (tmp_path / "bad.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(FactAssertionError, match=r"published_key_files: .*bad\.pem"):
        FactAssertion.from_settings(_settings(tmp_path, "{enabled: true, published_key_files: [bad.pem]}"))
