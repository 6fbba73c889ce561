"""`registration_metadata`: the verified request asks only for what the verified SSA and the profile allow (RFC
7591 §2, OB DCR 3.1), one rule per row, on the facts `software_statement` and `registration_request` record. The
same rules end to end, signed and through the shipped policies: test_attack_table.py."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.checks.registration import REGISTRATION_CLAIMS, SSA_CLAIMS
from gateway.checks.registration_metadata import RegistrationMetadata
from tests.checks.unit import make_check, view

SSA: dict[str, Any] = {"software_id": "sw-1", "software_roles": ["AISP"],
                       "software_redirect_uris": ["https://tpp.example/cb", "http://tpp.example/cb",
                                                  "https://localhost/cb", "https://tpp.example/cb#top"]}
GOOD: dict[str, Any] = {
    "redirect_uris": ["https://tpp.example/cb"],
    "token_endpoint_auth_method": "private_key_jwt",
    "token_endpoint_auth_signing_alg": "PS256",
    "grant_types": ["client_credentials", "authorization_code"],
    "response_types": ["code id_token"],
    "application_type": "web",
    "id_token_signed_response_alg": "PS256",
    "request_object_signing_alg": "PS256",
    "scope": "accounts openid",
    "software_id": "sw-1",
}


async def evaluate(params: dict[str, str] | None = None, **overrides: Any) -> tuple[int, str, str] | None:
    claims = {k: v for k, v in {**GOOD, **overrides}.items() if v is not None}
    denial = await make_check(RegistrationMetadata).evaluate(
        view("POST", facts={REGISTRATION_CLAIMS: claims, SSA_CLAIMS: SSA}, params=params))
    return None if denial is None else (denial.status, denial.error, denial.reason)


async def test_metadata_within_the_ssa_and_the_profile_passes() -> None:
    """The good request, and `response_types` compared as sets of words."""
    assert await evaluate() is None
    assert await evaluate(response_types=["id_token code"], scope=["accounts"]) is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"redirect_uris": None}, "redirect_uris_missing"),
        ({"redirect_uris": []}, "redirect_uris_missing"),
        ({"redirect_uris": ["https://other.example/cb"]}, "redirect_uri_not_in_software_statement"),
        ({"redirect_uris": ["http://tpp.example/cb"]}, "redirect_uri_not_https"),
        ({"redirect_uris": ["https://localhost/cb"]}, "redirect_uri_localhost"),
        ({"redirect_uris": ["https://tpp.example/cb#top"]}, "redirect_uri_fragment"),
        ({"redirect_uris": ["https://tpp.example/cb", ""]}, "redirect_uri_invalid"),
    ],
    ids=["missing", "empty", "not-in-ssa", "http", "localhost", "fragment", "empty-string"],
)
async def test_redirect_uris_are_invalid_redirect_uri(overrides: dict[str, Any], reason: str) -> None:
    """Every redirect URI is an https URL to a public host, without a fragment, among the SSA's."""
    assert await evaluate(**overrides) == (400, "invalid_redirect_uri", reason)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"scope": None}, "metadata_missing_claim"),
        ({"application_type": 7}, "metadata_bad_type"),
        ({"token_endpoint_auth_method": "client_secret_basic"}, "token_endpoint_auth_method_not_allowed"),
        ({"token_endpoint_auth_method": "tls_client_auth"}, "tls_client_auth_dn_missing"),
        ({"token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=a",
          "tls_client_auth_dn": "CN=b"}, "tls_client_auth_dn_conflict"),
        ({"token_endpoint_auth_signing_alg": None}, "token_endpoint_auth_signing_alg_missing"),
        ({"id_token_signed_response_alg": "RS256"}, "signing_alg_not_allowed"),
        ({"grant_types": ["implicit"]}, "grant_type_not_allowed"),
        ({"response_types": ["token"]}, "response_type_not_allowed"),
        ({"application_type": "native"}, "application_type_not_allowed"),
        ({"scope": "accounts payments"}, "scope_not_allowed"),
        ({"software_id": "sw-2"}, "software_id_mismatch"),
    ],
    ids=["missing-scope", "bad-type", "auth-method", "tls-no-dn", "tls-two-dns", "jwt-no-alg", "alg", "grant",
         "response", "application-type", "scope-beyond-roles", "software-id"],
)
async def test_metadata_outside_the_profile_is_invalid_client_metadata(overrides: dict[str, Any], reason: str) -> None:
    """Each rule refuses with 400 invalid_client_metadata and its own reason."""
    assert await evaluate(**overrides) == (400, "invalid_client_metadata", reason)


async def test_a_client_id_other_than_the_path_s_is_refused_on_update() -> None:
    """On PUT /register/{ClientId}, a client_id claim must name that client."""
    assert await evaluate({"ClientId": "c-1"}, client_id="c-1") is None
    assert await evaluate({"ClientId": "c-1"}, client_id="c-2") == (400, "invalid_client_metadata",
                                                                    "registration_client_id_mismatch")


async def test_without_verified_facts_nothing_passes() -> None:
    """No verified request and SSA (an earlier check missing from the policy): refused, fail closed."""
    denial = await make_check(RegistrationMetadata).evaluate(view("POST"))
    assert denial is not None and denial.reason == "registration_unverified"
