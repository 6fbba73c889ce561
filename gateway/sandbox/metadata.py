"""Registration request validation: OBClientRegistrationRequest1 (DCR v3.1, with the v3.2 spellings).

The payload of the request JWS is checked claim by claim — types, enums, required claims — and the SSA is
decoded WITHOUT verifying its signature (the gateway verifies both signatures before the request gets
here) to check the request against it and to flatten its claims into the registration (digest §4, §5).
Where the specification contradicts itself, digest §12 decides: a UUIDv4 `jti` in either case, the DN
claim only with tls_client_auth, `aud` present but not compared (that is the gateway's policy).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from .client_auth import AUTH_METHODS as AUTH_METHODS  # registered: exactly the methods the token endpoint implements
from .crypto import CryptoError, decode_unverified
from .jsonvalues import JsonValueError, check

KEY_SET_METHODS: Final = ("private_key_jwt", "self_signed_tls_client_auth")
"""Methods whose credential is in the client's key set: the SSA's software_jwks_endpoint."""
GRANT_TYPES: Final = ("client_credentials", "authorization_code", "refresh_token")
RESPONSE_TYPES: Final = ("code", "code id_token")
APPLICATION_TYPES: Final = ("web", "mobile")
SIGNING_ALGS: Final = ("PS256", "ES256")
SCOPES: Final = ("openid", "accounts", "payments", "fundsconfirmations")
ROLE_SCOPES: Final = {"AISP": "accounts", "PISP": "payments", "CBPII": "fundsconfirmations"}
# The SSA's JWT claims describe the SSA itself, not the software: they are not flattened into the client.
SSA_TOKEN_CLAIMS: Final = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})
# Nor are the names the sandbox answers with: a "client_secret" claim would replace the real secret in the 201
# answer, leaving a client whose secret nobody received.
SERVER_CLAIMS: Final = frozenset({"client_id", "client_secret", "client_id_issued_at", "client_secret_expires_at"})

_BASE62: Final = re.compile(r"[0-9A-Za-z]{1,22}")  # v3.2+ length (digest §12.2)
_UUID4: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"
)
_MAX_URI: Final = 256
_MAX_DN: Final = 512  # v3.4 relaxed String(128) to 512: real subject DNs can be longer
MAX_SSA_STRING: Final = 2048
"""The longest string (or member name) among the SSA claims, which are stored and returned with the client."""

INVALID_METADATA: Final = "invalid_client_metadata"
INVALID_REDIRECT_URI: Final = "invalid_redirect_uri"
INVALID_SSA: Final = "invalid_software_statement"


class MetadataError(Exception):
    """A registration request the sandbox refuses; `error` is an RFC 7591 §3.2.2 code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Registration:
    """A validated registration request: the metadata to store and the SSA claims to flatten."""

    metadata: dict[str, Any]
    ssa_claims: dict[str, Any]
    software_id: str
    auth_method: str
    jwks_uri: str | None
    requested_client_id: str | None

    def document(self, client_id: str, issued_at: int) -> dict[str, Any]:
        """The registration as returned by POST/GET/PUT: client fields, metadata, then SSA claims."""
        doc: dict[str, Any] = {
            "client_id": client_id,
            "client_id_issued_at": issued_at,
            "client_secret_expires_at": 0,
        }
        doc.update(self.metadata)
        for name, value in self.ssa_claims.items():
            if name not in SSA_TOKEN_CLAIMS and name not in SERVER_CLAIMS and name not in doc:
                doc[name] = value
        return doc


def scope_tokens(value: Any) -> tuple[str, ...]:
    """A registered or requested scope as tokens: v3.2 space-separated string or v3.1 array."""
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _fail(error: str, description: str) -> MetadataError:
    return MetadataError(error, description)


def _string(claims: Mapping[str, Any], name: str, *, error: str = INVALID_METADATA) -> str:
    value = claims.get(name)
    if value is None:
        raise _fail(error, f"{name} is required")
    if not isinstance(value, str) or not value:
        raise _fail(error, f"{name} must be a non-empty string")
    return value


def _enum(claims: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = _string(claims, name)
    if value not in allowed:
        raise _fail(INVALID_METADATA, f"{name} must be one of: {', '.join(allowed)}")
    return value


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if value is None:
        raise _fail(INVALID_METADATA, f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _fail(INVALID_METADATA, f"{name} must be a NumericDate (seconds since the epoch)")
    return float(value)


def _string_list(
    claims: Mapping[str, Any], name: str, *, error: str = INVALID_METADATA, required: bool = True
) -> list[str] | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise _fail(error, f"{name} is required")
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(error, f"{name} must be a non-empty array of strings")
    if len(set(value)) != len(value):
        raise _fail(error, f"{name} has duplicate values")
    return value


def _check_request_jwt_claims(claims: Mapping[str, Any], *, now: float, leeway: float) -> str:
    """iss, iat, exp, aud, jti of the request JWT; returns iss."""
    iss = _string(claims, "iss")
    if not _BASE62.fullmatch(iss):
        raise _fail(INVALID_METADATA, "iss must be Base62, 1 to 22 characters (the software_id)")
    iat = _numeric_date(claims, "iat")
    exp = _numeric_date(claims, "exp")
    if exp + leeway < now:
        raise _fail(INVALID_METADATA, "the registration request has expired (exp)")
    if iat - leeway > now:
        raise _fail(INVALID_METADATA, "the registration request is issued in the future (iat)")
    if exp < iat:
        raise _fail(INVALID_METADATA, "exp is before iat")
    aud = claims.get("aud")
    aud_ok = (isinstance(aud, str) and aud) or (
        isinstance(aud, list) and aud and all(isinstance(a, str) and a for a in aud)
    )
    if not aud_ok:
        raise _fail(INVALID_METADATA, "aud is required (a string or an array of strings)")
    jti = _string(claims, "jti")
    if not _UUID4.fullmatch(jti):
        raise _fail(INVALID_METADATA, "jti must be a UUID v4")
    return iss


def _decode_ssa(claims: Mapping[str, Any]) -> tuple[dict[str, Any], str, list[str]]:
    """The SSA's claims (signature NOT verified here), its software_id and software_redirect_uris."""
    ssa = _string(claims, "software_statement", error=INVALID_SSA)
    try:
        _, ssa_claims = decode_unverified(ssa)
    except CryptoError as exc:
        raise _fail(INVALID_SSA, f"software_statement is not a JWS the sandbox accepts: {exc.description}") from None
    try:
        check(ssa_claims, max_string=MAX_SSA_STRING)
    except JsonValueError as exc:
        raise _fail(INVALID_SSA, f"software_statement claims: {exc}") from None
    software_id = ssa_claims.get("software_id")
    if not isinstance(software_id, str) or not _BASE62.fullmatch(software_id):
        raise _fail(
            INVALID_SSA, "the software_statement must contain a Base62 software_id (1 to 22 characters)"
        )
    redirects = _string_list(ssa_claims, "software_redirect_uris", error=INVALID_SSA)
    assert redirects is not None
    return ssa_claims, software_id, redirects


def _check_redirect_uris(claims: Mapping[str, Any], allowed: list[str]) -> list[str]:
    uris = _string_list(claims, "redirect_uris", error=INVALID_REDIRECT_URI)
    assert uris is not None
    for uri in uris:
        if len(uri) > _MAX_URI:
            raise _fail(INVALID_REDIRECT_URI, f"redirect_uris must be at most {_MAX_URI} characters")
        try:
            parts = urlsplit(uri)
            host = (parts.hostname or "").lower()
        except ValueError:
            raise _fail(INVALID_REDIRECT_URI, f"redirect_uri {uri!r} is not a URL") from None
        if parts.scheme != "https" or not host:
            raise _fail(INVALID_REDIRECT_URI, "redirect_uris must use the https scheme")
        if host == "localhost" or host.endswith(".localhost"):
            raise _fail(INVALID_REDIRECT_URI, "redirect_uris must not point at localhost")
        if parts.fragment:
            raise _fail(INVALID_REDIRECT_URI, "redirect_uris must not have a fragment (RFC 6749 §3.1.2)")
        if uri not in allowed:
            raise _fail(
                INVALID_REDIRECT_URI,
                "redirect_uris must match or be a subset of the SSA's software_redirect_uris",
            )
    return uris


def _check_dn(claims: Mapping[str, Any], auth_method: str) -> dict[str, str]:
    """tls_client_auth_dn (v3.1) / tls_client_auth_subject_dn (v3.2): with, and only with, tls_client_auth."""
    given: dict[str, str] = {}
    for name in ("tls_client_auth_dn", "tls_client_auth_subject_dn"):
        value = claims.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value or len(value) > _MAX_DN:
            raise _fail(INVALID_METADATA, f"{name} must be a string of 1 to {_MAX_DN} characters")
        given[name] = value
    if auth_method == "tls_client_auth":
        if not given:
            raise _fail(
                INVALID_METADATA, "tls_client_auth_subject_dn must be provided to use tls_client_auth"
            )
        if len(set(given.values())) > 1:
            raise _fail(INVALID_METADATA, "tls_client_auth_dn and tls_client_auth_subject_dn differ")
    elif given:
        raise _fail(
            INVALID_METADATA,
            f"{next(iter(given))} is only allowed with token_endpoint_auth_method tls_client_auth",
        )
    return given


def _check_scope(claims: Mapping[str, Any], ssa_claims: Mapping[str, Any]) -> str | list[str]:
    """v3.2 space-separated string or v3.1 array, echoed in the form given; default from the SSA roles."""
    value = claims.get("scope")
    if value is None:
        roles = ssa_claims.get("software_roles")
        derived = (
            [ROLE_SCOPES[r] for r in roles if isinstance(r, str) and r in ROLE_SCOPES]
            if isinstance(roles, list)
            else []
        )
        return " ".join(dict.fromkeys(derived or [s for s in SCOPES if s != "openid"]))
    if isinstance(value, str):
        tokens = value.split(" ")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        tokens = list(value)
    else:
        raise _fail(
            INVALID_METADATA, "scope must be a space-separated string (v3.2) or an array of strings (v3.1)"
        )
    if not tokens or any(not t for t in tokens):
        raise _fail(INVALID_METADATA, "scope must not be empty or contain empty values")
    unknown = [t for t in tokens if t not in SCOPES]
    if unknown:
        raise _fail(INVALID_METADATA, f"unsupported scope {unknown[0]!r}; supported: {' '.join(SCOPES)}")
    return value


def _scheme(url: str) -> str | None:
    try:
        return urlsplit(url).scheme
    except ValueError:  # e.g. an unclosed IPv6 literal
        return None


def validate_registration(claims: Mapping[str, Any], *, now: float, leeway: float) -> Registration:
    """Check a registration request payload; raise MetadataError with the first problem found."""
    iss = _check_request_jwt_claims(claims, now=now, leeway=leeway)
    ssa_claims, software_id, ssa_redirects = _decode_ssa(claims)
    if iss != software_id:
        raise _fail(INVALID_METADATA, "iss must be the software_id of the software_statement")
    requested_software_id = claims.get("software_id")
    if requested_software_id is not None and requested_software_id != software_id:
        raise _fail(INVALID_METADATA, "software_id must equal the software_statement's software_id")
    redirect_uris = _check_redirect_uris(claims, ssa_redirects)
    auth_method = _enum(claims, "token_endpoint_auth_method", AUTH_METHODS)
    grant_types = _string_list(claims, "grant_types")
    assert grant_types is not None
    bad = [g for g in grant_types if g not in GRANT_TYPES]
    if bad:
        raise _fail(
            INVALID_METADATA, f"unsupported grant_type {bad[0]!r}; supported: {', '.join(GRANT_TYPES)}"
        )
    response_types = _string_list(claims, "response_types", required=False)
    if response_types is not None:
        bad = [r for r in response_types if r not in RESPONSE_TYPES]
        if bad:
            raise _fail(
                INVALID_METADATA, f"unsupported response_type {bad[0]!r}; supported: code, code id_token"
            )
    elif "authorization_code" in grant_types:
        response_types = ["code id_token"]  # the OB default (digest §4)
    application_type = _enum(claims, "application_type", APPLICATION_TYPES)
    id_token_alg = _enum(claims, "id_token_signed_response_alg", SIGNING_ALGS)
    request_object_alg = _enum(claims, "request_object_signing_alg", SIGNING_ALGS)
    auth_alg: str | None = None
    if auth_method == "private_key_jwt" or claims.get("token_endpoint_auth_signing_alg") is not None:
        auth_alg = _enum(claims, "token_endpoint_auth_signing_alg", SIGNING_ALGS)
    dn = _check_dn(claims, auth_method)
    scope = _check_scope(claims, ssa_claims)
    jwks_uri: str | None = None
    if auth_method in KEY_SET_METHODS:
        endpoint = ssa_claims.get("software_jwks_endpoint")
        if not isinstance(endpoint, str) or _scheme(endpoint) not in ("http", "https"):
            raise _fail(
                INVALID_SSA, f"{auth_method} needs a software_jwks_endpoint URL in the software_statement"
            )
        jwks_uri = endpoint
    requested_client_id = claims.get("client_id")

    metadata: dict[str, Any] = {
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": auth_method,
        "grant_types": grant_types,
    }
    if response_types is not None:
        metadata["response_types"] = response_types
    metadata.update(
        {
            "software_id": software_id,
            "scope": scope,
            "software_statement": claims["software_statement"],
            "application_type": application_type,
            "id_token_signed_response_alg": id_token_alg,
            "request_object_signing_alg": request_object_alg,
        }
    )
    if auth_alg is not None:
        metadata["token_endpoint_auth_signing_alg"] = auth_alg
    metadata.update(dn)
    return Registration(
        metadata=metadata,
        ssa_claims=ssa_claims,
        software_id=software_id,
        auth_method=auth_method,
        jwks_uri=jwks_uri,
        requested_client_id=requested_client_id if isinstance(requested_client_id, str) else None,
    )
