"""The developer portal on the sandbox port: apps, SSAs, the directory JWKS, hosted TPP key sets."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.sandbox.conftest import Bank, tpp_key, verify_with_jwks


async def portal(bank: Bank, method: str, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    """Call the sandbox port directly."""
    async with bank.http.request(method, bank.sandbox_url + path, **kwargs) as r:
        raw = await r.read()
        body = await r.json(content_type=None) if raw else None
        return r.status, body, dict(r.headers)


async def test_create_app_returns_credentials_once(bank: Bank) -> None:
    """POST /sandbox/apps gives a client_id and secret (no-store) that work at the token endpoint."""
    status, body, headers = await portal(bank, "POST", "/sandbox/apps", json={"name": "my app"})
    assert status == 201 and headers["Cache-Control"] == "no-store"
    assert set(body) == {"client_id", "client_secret"}
    await bank.token(body["client_id"], body["client_secret"])
    status, body, _ = await portal(bank, "POST", "/sandbox/apps")
    assert status == 201


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, "JSON"),
        ({"json": ["a"]}, "object"),
        ({"json": {"name": 5}}, "name"),
        ({"json": {"name": "x" * 101}}, "name"),
        (
            {"data": b"name=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            "application/json",
        ),
        ({"data": b"x" * 70_000, "headers": {"Content-Type": "application/json"}}, "exceeds"),
    ],
)
async def test_create_app_bad_input_is_400(bank: Bank, kwargs, needle) -> None:
    """Bad app requests are 400 invalid_request JSON."""
    status, body, _ = await portal(bank, "POST", "/sandbox/apps", **kwargs)
    assert status == 400 and body["error"] == "invalid_request" and needle in body["error_description"]


async def test_ssa_defaults_and_signature(bank: Bank) -> None:
    """A default SSA is PS256/typ JWT by the directory key, iss from config, random Base62 ids, no exp."""
    status, body, _ = await portal(bank, "POST", "/sandbox/ssa", json={})
    assert status == 201
    _, directory, _ = await portal(bank, "GET", "/directory/jwks")
    assert all("d" not in k for k in directory["keys"])
    header, claims = verify_with_jwks(body["software_statement"], directory)
    assert header["typ"] == "JWT" and header["alg"] == "PS256" and header["kid"]
    assert claims["iss"] == "OpenBanking Ltd"
    assert re.fullmatch(r"[0-9A-Za-z]{1,22}", claims["software_id"])
    assert isinstance(claims["iat"], int) and claims["jti"] and "exp" not in claims
    assert claims["org_status"] == "Active" and claims["software_roles"] == ["AISP", "PISP", "CBPII"]
    for name in (
        "software_client_name",
        "software_redirect_uris",
        "software_jwks_endpoint",
        "org_id",
        "org_name",
    ):
        assert claims[name]
    assert ".invalid/" in claims["software_jwks_endpoint"]  # a placeholder that never resolves


async def test_ssa_signs_what_it_is_given(bank: Bank) -> None:
    """Given claims (even odd ones: Revoked org, an exp) are signed as given; the gateway judges them."""
    given = {
        "software_id": "abc123",
        "software_roles": ["CBPII"],
        "org_status": "Revoked",
        "exp": 1,
        "software_redirect_uris": ["https://x.example/cb"],
        "custom": {"a": [1, 2]},
    }
    status, body, _ = await portal(bank, "POST", "/sandbox/ssa", json=given)
    assert status == 201
    _, directory, _ = await portal(bank, "GET", "/directory/jwks")
    _, claims = verify_with_jwks(body["software_statement"], directory)
    for name, value in given.items():
        assert claims[name] == value


async def test_ssa_directory_issuer_from_config(bank_factory) -> None:
    """sandbox.directory_issuer names the SSA issuer; iss cannot be given."""
    bank = await bank_factory(directory_issuer="Test Directory")
    status, body, _ = await portal(bank, "POST", "/sandbox/ssa", json={})
    assert status == 201
    _, directory, _ = await portal(bank, "GET", "/directory/jwks")
    assert verify_with_jwks(body["software_statement"], directory)[1]["iss"] == "Test Directory"
    status, body, _ = await portal(bank, "POST", "/sandbox/ssa", json={"iss": "Evil Directory"})
    assert status == 400 and "iss" in body["error_description"]


async def test_directory_and_token_keys_differ(bank: Bank) -> None:
    """The directory key (SSAs) and the token key (access tokens) are separate keys."""
    _, directory, _ = await portal(bank, "GET", "/directory/jwks")
    _, tokens, _ = await portal(bank, "GET", "/jwks")
    assert {k["kid"] for k in directory["keys"]}.isdisjoint({k["kid"] for k in tokens["keys"]})


async def test_host_tpp_jwks(bank: Bank) -> None:
    """A public TPP JWKS is hosted durably and served at the returned jwks_uri."""
    doc = {"keys": [tpp_key("hosted").public(), tpp_key("hosted-ec", "ES256").public()]}
    status, body, _ = await portal(bank, "POST", "/sandbox/tpp-jwks", json=doc)
    assert status == 201
    assert body["jwks_uri"].startswith(bank.sandbox_url + "/sandbox/tpp-jwks/")
    async with bank.http.get(body["jwks_uri"]) as r:
        assert r.status == 200
        assert await r.json() == doc


async def test_hosted_jwks_uri_uses_portal_url(bank_factory) -> None:
    """sandbox.portal_url sets the base of hosted jwks_uris."""
    bank = await bank_factory(portal_url="https://sandbox.bank.example")
    status, body, _ = await portal(bank, "POST", "/sandbox/tpp-jwks", json={"keys": [tpp_key("p").public()]})
    assert status == 201 and body["jwks_uri"].startswith("https://sandbox.bank.example/sandbox/tpp-jwks/")


def _with(**members: Any) -> dict[str, Any]:
    return {"keys": [{**tpp_key("hosted").public(), **members}]}


@pytest.mark.parametrize(
    "doc, needle",
    [
        (_with(d="AAAA"), "private"),
        (_with(p="AAAA", q="AAAA"), "private"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}, "private"),
        (
            {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]},
            "kty",
        ),
        ({"keys": []}, "1 to"),
        ({"keys": "nope"}, "keys"),
        ({}, "keys"),
        ({"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}, "valid JWK"),
        (_with(crv=None), "valid JWK"),  # jwcrypto raises KeyError for a member of another key type
        ({"keys": [1]}, "object"),
    ],
)
async def test_host_tpp_jwks_rejects_bad_documents(bank: Bank, doc, needle) -> None:
    """Private key material, symmetric keys and malformed JWKS documents are refused with 400."""
    status, body, _ = await portal(bank, "POST", "/sandbox/tpp-jwks", json=doc)
    assert status == 400 and needle in body["error_description"], body


async def test_unknown_hosted_jwks_is_404_json(bank: Bank) -> None:
    """An unknown hosted JWKS id is a JSON 404."""
    status, body, _ = await portal(bank, "GET", "/sandbox/tpp-jwks/doesnotexist")
    assert status == 404 and body["error"] == "not_found"


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/nope", 404),
        ("GET", "/oauth2/token", 405),
        ("PATCH", "/open-banking/v3.1/register/x", 405),
        ("POST", "/jwks", 405),
    ],
)
async def test_unknown_routes_are_json(bank: Bank, method, path, status) -> None:
    """Unknown paths and methods get JSON 404/405, never HTML."""
    got, body, headers = await portal(bank, method, path)
    assert got == status and body["error"] in ("not_found", "method_not_allowed")
    assert headers["Content-Type"].startswith("application/json")
    if status == 405:
        assert "Allow" in headers
