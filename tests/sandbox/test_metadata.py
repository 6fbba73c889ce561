"""Registration metadata validation (OBClientRegistrationRequest1 v3.1 + v3.2 spellings), table-driven."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from gateway.sandbox.metadata import MetadataError, validate_registration
from tests.sandbox.conftest import sign_jws, tpp_key, with_overrides

SOFTWARE_ID = "a1B2c3D4e5F6g7H8i9J0kL"  # 22 characters, Base62
REDIRECT = "https://tpp.example.com/cb"
NOW = time.time()


def ssa(**claims: Any) -> str:
    """An SSA (signature irrelevant to the backend) with sensible claims; None deletes one."""
    base: dict[str, Any] = {
        "iss": "OpenBanking Ltd",
        "iat": int(NOW),
        "jti": str(uuid.uuid4()),
        "software_id": SOFTWARE_ID,
        "software_redirect_uris": [REDIRECT, "https://tpp.example.com/cb2"],
        "software_roles": ["AISP", "PISP"],
        "software_jwks_endpoint": "https://keystore.example/tpp.jwks",
        "org_id": "0015800001041REAAY",
        "org_name": "TPP Ltd",
    }
    base.update(claims)
    return sign_jws(
        tpp_key("directory").key, "PS256", "dir", {k: v for k, v in base.items() if v is not None}
    )


def request(**overrides: Any) -> dict[str, Any]:
    """A valid request payload; overrides replace, None deletes."""
    claims: dict[str, Any] = {
        "iss": SOFTWARE_ID,
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "aud": "0015800001041REAAY",
        "jti": str(uuid.uuid4()),
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "PS256",
        "grant_types": ["client_credentials"],
        "software_statement": ssa(),
        "application_type": "web",
        "id_token_signed_response_alg": "PS256",
        "request_object_signing_alg": "ES256",
    }
    return with_overrides(claims, overrides)


def validate(claims: dict[str, Any]):
    """Run the validator at NOW with a 60 s leeway."""
    return validate_registration(claims, now=NOW, leeway=60)


MD, RU, SS = "invalid_client_metadata", "invalid_redirect_uri", "invalid_software_statement"

REJECTED = [
    ("iss missing", {"iss": None}, MD),
    ("iss not Base62", {"iss": "abc-def"}, MD),
    ("iss 23 characters", {"iss": "a" * 23}, MD),
    ("iss not the SSA software_id", {"iss": "OtherSoftware"}, MD),
    ("iat missing", {"iat": None}, MD),
    ("iat a string", {"iat": "1700000000"}, MD),
    ("iat a boolean", {"iat": True}, MD),
    ("iat in the future", {"iat": int(NOW) + 3600, "exp": int(NOW) + 4000}, MD),
    ("exp missing", {"exp": None}, MD),
    ("exp passed", {"exp": int(NOW) - 120, "iat": int(NOW) - 400}, MD),
    ("exp before iat", {"iat": int(NOW), "exp": int(NOW) - 10}, MD),
    ("aud missing", {"aud": None}, MD),
    ("aud empty", {"aud": ""}, MD),
    ("aud a number", {"aud": 42}, MD),
    ("jti missing", {"jti": None}, MD),
    ("jti not a UUID", {"jti": "abc"}, MD),
    ("jti a UUID v1", {"jti": "6fa459ea-ee8a-11ca-9af3-000000000000"}, MD),
    ("software_statement missing", {"software_statement": None}, SS),
    ("software_statement not a JWS", {"software_statement": "abc"}, SS),
    ("software_statement a number", {"software_statement": 7}, SS),
    ("SSA without software_id", {"software_statement": ssa(software_id=None)}, SS),
    ("SSA without software_redirect_uris", {"software_statement": ssa(software_redirect_uris=None)}, SS),
    ("SSA redirect uris not a list", {"software_statement": ssa(software_redirect_uris="https://x")}, SS),
    (
        "private_key_jwt without SSA jwks endpoint",
        {"software_statement": ssa(software_jwks_endpoint=None)},
        SS,
    ),
    ("software_id differs from SSA", {"software_id": "Other"}, MD),
    ("redirect_uris missing", {"redirect_uris": None}, RU),
    ("redirect_uris empty", {"redirect_uris": []}, RU),
    ("redirect_uris a string", {"redirect_uris": REDIRECT}, RU),
    ("redirect_uri http", {"redirect_uris": ["http://tpp.example.com/cb"]}, RU),
    ("redirect_uri localhost", {"redirect_uris": ["https://localhost/cb"]}, RU),
    ("redirect_uri with fragment", {"redirect_uris": [REDIRECT + "#x"]}, RU),
    ("redirect_uri not in the SSA", {"redirect_uris": [REDIRECT, "https://evil.example/cb"]}, RU),
    ("redirect_uri too long", {"redirect_uris": ["https://tpp.example.com/" + "a" * 300]}, RU),
    ("redirect_uris duplicated", {"redirect_uris": [REDIRECT, REDIRECT]}, RU),
    ("token_endpoint_auth_method missing", {"token_endpoint_auth_method": None}, MD),
    ("token_endpoint_auth_method unknown", {"token_endpoint_auth_method": "none"}, MD),
    ("client_secret_jwt not supported", {"token_endpoint_auth_method": "client_secret_jwt"}, MD),
    ("grant_types missing", {"grant_types": None}, MD),
    ("grant_types empty", {"grant_types": []}, MD),
    ("grant_type implicit", {"grant_types": ["implicit"]}, MD),
    ("response_type token", {"response_types": ["code token"]}, MD),
    ("response_types a string", {"response_types": "code"}, MD),
    ("application_type missing", {"application_type": None}, MD),
    ("application_type native (v3.4 only)", {"application_type": "native"}, MD),
    ("id_token_signed_response_alg missing", {"id_token_signed_response_alg": None}, MD),
    ("id_token_signed_response_alg RS256", {"id_token_signed_response_alg": "RS256"}, MD),
    ("request_object_signing_alg none", {"request_object_signing_alg": "none"}, MD),
    ("private_key_jwt without auth signing alg", {"token_endpoint_auth_signing_alg": None}, MD),
    ("token_endpoint_auth_signing_alg HS256", {"token_endpoint_auth_signing_alg": "HS256"}, MD),
    ("tls_client_auth without DN", {"token_endpoint_auth_method": "tls_client_auth"}, MD),
    ("DN with another method", {"tls_client_auth_subject_dn": "CN=tpp"}, MD),
    ("v3.1 DN with another method", {"tls_client_auth_dn": "CN=tpp"}, MD),
    (
        "both DN spellings disagree",
        {
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_dn": "CN=a",
            "tls_client_auth_subject_dn": "CN=b",
        },
        MD,
    ),
    ("DN empty", {"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_subject_dn": ""}, MD),
    ("scope unknown", {"scope": "accounts admin"}, MD),
    ("scope empty string", {"scope": ""}, MD),
    ("scope a number", {"scope": 3}, MD),
    ("scope array with a number", {"scope": ["accounts", 3]}, MD),
]


@pytest.mark.parametrize("case, overrides, error", REJECTED, ids=[c[0] for c in REJECTED])
def test_rejected(case, overrides, error) -> None:
    """Each broken claim is refused with its RFC 7591 error code and a description."""
    with pytest.raises(MetadataError) as info:
        validate(request(**overrides))
    assert info.value.error == error
    assert 0 < len(info.value.description) <= 500


ACCEPTED = [
    ("minimal private_key_jwt", {}),
    ("jti in upper case (digest §12)", {"jti": str(uuid.uuid4()).upper()}),
    (
        "iss of 18 characters (v3.1 length)",
        {"iss": SOFTWARE_ID[:18], "software_statement": ssa(software_id=SOFTWARE_ID[:18])},
    ),
    ("aud not compared (gateway policy)", {"aud": "AnyBankAtAll"}),
    ("aud as an array", {"aud": ["a", "b"]}),
    (
        "v3.2 DN spelling with tls_client_auth",
        {
            "token_endpoint_auth_method": "tls_client_auth",
            "token_endpoint_auth_signing_alg": None,
            "tls_client_auth_subject_dn": "CN=tpp,O=TPP,C=GB",
        },
    ),
    (
        "v3.1 DN spelling with tls_client_auth",
        {"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_dn": "CN=tpp"},
    ),
    (
        "both DN spellings equal",
        {
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_dn": "CN=t",
            "tls_client_auth_subject_dn": "CN=t",
        },
    ),
    (
        "client_secret_basic without signing alg",
        {"token_endpoint_auth_method": "client_secret_basic", "token_endpoint_auth_signing_alg": None},
    ),
    ("space-separated scope (v3.2)", {"scope": "accounts payments"}),
    ("scope array (v3.1)", {"scope": ["accounts", "openid"]}),
    ("software_id equal to the SSA", {"software_id": SOFTWARE_ID}),
    (
        "all grant types",
        {
            "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
            "response_types": ["code", "code id_token"],
        },
    ),
    ("mobile application", {"application_type": "mobile"}),
    ("exp passed within leeway", {"exp": int(NOW) - 30, "iat": int(NOW) - 300}),
    ("unknown claims ignored", {"x_custom": {"a": 1}}),
]


@pytest.mark.parametrize("case, overrides", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted(case, overrides) -> None:
    """Valid variants pass; request-only JWT claims and unknown claims do not enter the registration."""
    reg = validate(request(**overrides))
    doc = reg.document("client-1", 1700000000)
    assert doc["client_id"] == "client-1" and doc["client_secret_expires_at"] == 0
    for name in ("iss", "iat", "exp", "aud", "jti", "x_custom"):
        assert name not in doc
    if "scope" in overrides:
        assert doc["scope"] == overrides["scope"]


def test_registration_document_flattens_ssa_claims() -> None:
    """SSA claims appear top-level, without the SSA's own JWT claims; registered metadata wins on a clash."""
    doc = validate(request(software_statement=ssa(application_type="mobile"))).document("c", 1)
    assert doc["org_name"] == "TPP Ltd" and doc["software_roles"] == ["AISP", "PISP"]
    assert doc["software_redirect_uris"] == [REDIRECT, "https://tpp.example.com/cb2"]
    assert doc["application_type"] == "web"
    assert doc["software_id"] == SOFTWARE_ID
    assert "iss" not in doc and "jti" not in doc


@pytest.mark.parametrize(
    "roles, expected",
    [
        (["AISP"], "accounts"),
        (["PISP", "CBPII"], "payments fundsconfirmations"),
        (None, "accounts payments fundsconfirmations"),
    ],
)
def test_default_scope_from_roles(roles, expected) -> None:
    """Without a scope claim the registration gets the scopes its SSA roles allow."""
    reg = validate(request(scope=None, software_statement=ssa(software_roles=roles)))
    assert reg.metadata["scope"] == expected


def test_response_types_default_for_authorization_code() -> None:
    """authorization_code without response_types gets the OB default `code id_token`."""
    reg = validate(request(grant_types=["authorization_code"]))
    assert reg.metadata["response_types"] == ["code id_token"]
    assert "response_types" not in validate(request()).metadata
