"""Malformed input of any shape is a 4xx with an RFC 7591 error, never a 500: raw bodies, claims of every wrong
type in the request and in the SSA (validly signed, so the type handling itself is exercised), and certificate
headers that are not certificates."""

from __future__ import annotations

import pytest

from tests.checks.world import CERT_HEADER, REGISTER, World

RFC7591 = {"invalid_client_metadata", "invalid_software_statement", "unapproved_software_statement",
           "invalid_redirect_uri"}

BODIES = [b"", b" ", b"\xff\xfe\x00", b"null", b"[]", b"{}", b'"', b'""', b'"a.b.c"', b"...", b"a.b.c", b"a..c",
          b"." * 50, b"\x00.\x00.\x00", b"eyJ9.eyJ9.", b"e30.e30.", b"e30.W10.", b"eyJhbGciOm51bGx9.e30.",
          b'"\\ud800"', "ünïcode.ä.ö".encode(), b"[" * 5000 + b"]" * 5000]

WRONG_VALUES = [None, 0, -1, 1e308, True, "", "x" * 5000, [], [1], [None], {}, {"a": [1]}, [[]]]
REQUEST_CLAIMS = ["iss", "aud", "iat", "exp", "nbf", "jti", "software_statement", "redirect_uris",
                  "token_endpoint_auth_method", "token_endpoint_auth_signing_alg", "grant_types", "response_types",
                  "application_type", "id_token_signed_response_alg", "request_object_signing_alg", "scope",
                  "software_id", "tls_client_auth_subject_dn", "client_id"]
SSA_CLAIMS = ["iss", "iat", "exp", "nbf", "software_id", "org_id", "org_status", "software_jwks_endpoint",
              "software_redirect_uris", "software_roles", "org_name"]


def _assert_4xx(status: int, body: dict[str, str]) -> None:
    assert 400 <= status < 500, body
    assert body["error"] in RFC7591 | {"request_too_large", "invalid_request"}, body


@pytest.fixture
async def world(dcr_world) -> World:
    return await dcr_world()


@pytest.mark.parametrize("content_type", ["application/jose", "application/json"])
async def test_raw_bodies_never_500(world: World, content_type: str):
    """Bodies that are not a compact JWS, in both accepted content types."""
    for raw in BODIES:
        resp = await world.gw.client.post(REGISTER, data=raw, headers=world.headers(**{"Content-Type": content_type}))
        _assert_4xx(resp.status, await resp.json())
    assert world.registrations() == 0


async def test_wrongly_typed_request_claims_never_500(world: World):
    """Every request claim, replaced by values of every wrong type, in a correctly signed request."""
    for claim in REQUEST_CLAIMS:
        for value in WRONG_VALUES:
            override = {claim: value} if value is not None else {claim: None}
            # `None` removes the claim (a missing claim is malformed input too).
            resp = await world.post(world.request(**override))
            if resp.status == 201:
                continue  # some values are acceptable (e.g. no nbf, or an empty optional claim removed)
            _assert_4xx(resp.status, await resp.json())


async def test_wrongly_typed_ssa_claims_never_500(world: World):
    """Every SSA claim, replaced by values of every wrong type, in an SSA correctly signed by the directory."""
    for claim in SSA_CLAIMS:
        for value in WRONG_VALUES:
            resp = await world.post(world.request(software_statement=world.ssa(**{claim: value})))
            if resp.status == 201:
                continue
            _assert_4xx(resp.status, await resp.json())


async def test_wrongly_typed_headers_never_500(world: World):
    """JWS header members of the wrong type, in the request and in the SSA."""
    for value in WRONG_VALUES[1:]:
        for name in ("kid", "typ", "crit", "b64", "alg"):
            resp = await world.post(world.unsigned({"alg": "PS256", "kid": "k", name: value}))
            _assert_4xx(resp.status, await resp.json())
            ssa = world.unsigned({"alg": "PS256", "kid": "k", "typ": "JWT", name: value}, payload=None)
            resp = await world.post(world.request(software_statement=ssa))
            _assert_4xx(resp.status, await resp.json())


async def test_garbage_certificate_headers_never_500(world: World):
    """Certificate headers that are not one URL-encoded PEM certificate."""
    pem = "-----BEGIN%20CERTIFICATE-----%0A{}%0A-----END%20CERTIFICATE-----"
    for value in ["", "%", "%ZZ", "%ff%fe", pem.format(""), pem.format("AAAA"), pem.format("%00" * 10),
                  pem.format("A") * 2, "x" * 8000, "-----BEGIN CERTIFICATE-----"]:
        headers = {**world.headers(cert=False), CERT_HEADER: value}
        resp = await world.gw.client.post(REGISTER, data=world.request(), headers=headers)
        assert resp.status == 400, value
        assert (await resp.json())["error"] == "invalid_client_metadata"
    assert world.registrations() == 0
