"""`registration_metadata`: the verified registration request asks only for what the verified SSA and the
bank's FAPI profile allow (OB DCR 3.1 data dictionary and data mapping; digest rules V11-V20)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import Field

from ..certificates import DN_CLAIMS
from ..config.schema import StrictModel
from ..jose import JoseError
from ..jose.claims import CLIENT_ID, EMPTY, IDENTIFIER, NAME, SCOPE, STRINGS, ClaimType, read_claim
from ..jose.errors import quoted
from ..reasons import Reason, Reasons
from .base import Check, Denial, RequestView
from .registration import registration_claims_of, ssa_claims_of
from .services import Services

SIGNING_ALG_CLAIMS: Final = ("id_token_signed_response_alg", "request_object_signing_alg",
                             "token_endpoint_auth_signing_alg")
"""The DN of the certificate used with tls_client_auth: RFC 8705 / OB 3.2+ name, then the OB 3.1 name."""
JWT_AUTH_METHODS: Final = frozenset({"private_key_jwt", "client_secret_jwt"})
REDIRECT_URIS: Final = ClaimType("an array of URLs", shape="strings", min_items=0)
DN: Final = ClaimType("an RFC 4514 DN string of at most 1024 characters", max_length=1024)
"""tls_client_auth_subject_dn / tls_client_auth_dn: client_certificate parses at most 1024 characters."""
METADATA_TYPES: Final[Mapping[str, ClaimType]] = {
    "token_endpoint_auth_method": NAME,
    **dict.fromkeys(SIGNING_ALG_CLAIMS, NAME),
    **dict.fromkeys(DN_CLAIMS, DN),
    "grant_types": STRINGS,
    "response_types": STRINGS,
    "application_type": NAME,
    "scope": SCOPE,
    "software_id": IDENTIFIER,
    "client_id": CLIENT_ID,
}
"""Types of the registration metadata this check reads (RFC 7591 §2, OB DCR 3.1 data dictionary); each is
checked when present, before any rule compares its value."""


class RegistrationMetadataParams(StrictModel):
    """Parameters of `registration_metadata`."""

    token_endpoint_auth_methods: tuple[str, ...] = Field(default=("private_key_jwt", "tls_client_auth"),
                                                         min_length=1)
    """Accepted `token_endpoint_auth_method` values. OB DCR's FAPI pair: 3.1 lists only these, 3.2/3.3 add the
    non-FAPI client_secret_*, none lists self_signed_tls_client_auth (FAPI 1.0 Advanced allows it, RFC 8705 §2.2;
    the bank's profile, policies/dcr.yaml, adds it)."""
    signing_algorithms: tuple[str, ...] = Field(default=("PS256", "ES256"), min_length=1)
    """Accepted id_token_signed_response_alg, request_object_signing_alg and token_endpoint_auth_signing_alg."""
    grant_types: tuple[str, ...] = Field(default=("client_credentials", "authorization_code", "refresh_token"),
                                         min_length=1)
    """Accepted `grant_types` values."""
    response_types: tuple[str, ...] = Field(default=("code", "code id_token"), min_length=1)
    """Accepted `response_types` values (compared as sets of space-separated words)."""
    application_types: tuple[str, ...] = Field(default=("web", "mobile"), min_length=1)
    """Accepted `application_type` values."""
    required_claims: tuple[str, ...] = ("token_endpoint_auth_method", "grant_types", "application_type",
                                        "id_token_signed_response_alg", "request_object_signing_alg", "scope")
    """Claims the request must carry (redirect_uris is always required). OB 3.1 makes the first five 1..1;
    `scope` as ForgeRock SAPIG requires it."""
    role_scopes: dict[str, tuple[str, ...]] = {"AISP": ("accounts",), "PISP": ("payments",),
                                               "CBPII": ("fundsconfirmations",)}
    """SSA role → scopes it permits (OB data mapping: accounts ⇔ AISP, payments ⇔ PISP, fundsconfirmations ⇔
    CBPII)."""
    always_allowed_scopes: tuple[str, ...] = ("openid",)
    """Scopes allowed whatever the roles."""
    path_param: str = "ClientId"
    """On PUT: a `client_id` claim, when present, must equal this path parameter."""


_META: Final = (400, "invalid_client_metadata")
_REDIRECT: Final = (400, "invalid_redirect_uri")


class RegistrationMetadataReasons(Reasons):
    """Why `registration_metadata` refuses: RFC 7591 §3.2.2 invalid_redirect_uri or invalid_client_metadata."""

    redirect_uris_missing = Reason(*_REDIRECT)
    redirect_uri_invalid = Reason(*_REDIRECT)
    redirect_uri_not_https = Reason(*_REDIRECT)
    redirect_uri_localhost = Reason(*_REDIRECT)
    redirect_uri_fragment = Reason(*_REDIRECT)
    redirect_uri_not_in_software_statement = Reason(*_REDIRECT)
    metadata_missing_claim = Reason(*_META)
    metadata_bad_type = Reason(*_META)
    token_endpoint_auth_method_not_allowed = Reason(*_META)
    tls_client_auth_dn_missing = Reason(*_META)
    tls_client_auth_dn_conflict = Reason(*_META)
    token_endpoint_auth_signing_alg_missing = Reason(*_META)
    signing_alg_not_allowed = Reason(*_META)
    grant_type_not_allowed = Reason(*_META)
    response_type_not_allowed = Reason(*_META)
    application_type_not_allowed = Reason(*_META)
    scope_not_allowed = Reason(*_META)
    software_id_mismatch = Reason(*_META)
    registration_client_id_mismatch = Reason(*_META)
    registration_unverified = Reason(*_META)


R = RegistrationMetadataReasons


class RegistrationMetadata(Check[RegistrationMetadataParams]):
    """Refuse metadata outside the SSA and the profile: 400 invalid_redirect_uri or invalid_client_metadata.

    Needs the facts of `software_statement` and `registration_request`: place it after them.
    """

    name = "registration_metadata"
    Params = RegistrationMetadataParams
    reasons = RegistrationMetadataReasons
    __slots__ = ("_algs", "_app_types", "_grants", "_methods", "_responses")

    def __init__(self, params: RegistrationMetadataParams, services: Services) -> None:
        super().__init__(params, services)
        self._methods = frozenset(params.token_endpoint_auth_methods)
        self._algs = frozenset(params.signing_algorithms)
        self._grants = frozenset(params.grant_types)
        self._responses = frozenset(_words(r) for r in params.response_types)
        self._app_types = frozenset(params.application_types)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass when every metadata rule holds; the first violation is the answer."""
        claims = registration_claims_of(request.facts)
        ssa = ssa_claims_of(request.facts)
        if claims is None or ssa is None:
            return self.deny(R.registration_unverified, "no verified registration request and software statement")
        return (
            self._redirect_uris(claims, ssa)
            or self._required(claims)
            or self._types(claims)
            or self._auth_method(claims)
            or self._signing_algs(claims)
            or self._grant_and_response_types(claims)
            or self._scope(claims, ssa)
            or self._identity(claims, ssa, request)
        )

    def _redirect_uris(self, claims: Mapping[str, Any], ssa: Mapping[str, Any]) -> Denial | None:
        uris = claims.get("redirect_uris")
        # OB 3.1: 1..*. Its "if omitted, use all software_redirect_uris" contradicts that; refused (digest §12.1).
        if uris is None or uris == []:
            return self.deny(R.redirect_uris_missing, "redirect_uris is required and must not be empty")
        try:
            read_claim(claims, "redirect_uris", REDIRECT_URIS)
        except JoseError as exc:
            return self.deny(R.redirect_uri_invalid, exc.description)
        registered = {u for u in ssa["software_redirect_uris"] if isinstance(u, str)}
        for uri in uris:  # every one of them (SAPIG-core's loop returned after the first: digest §10)
            problem = _redirect_problem(uri)
            if problem is not None:
                return self.deny(*problem)
            if uri not in registered:
                return self.deny(R.redirect_uri_not_in_software_statement,
                                      f"redirect_uri {quoted(uri)} is not among the software statement's "
                                      f"software_redirect_uris")
        return None

    def _required(self, claims: Mapping[str, Any]) -> Denial | None:
        for name in self.params.required_claims:
            if claims.get(name) in EMPTY:
                return self.deny(R.metadata_missing_claim, f"the registration request must contain {name}")
        return None

    def _types(self, claims: Mapping[str, Any]) -> Denial | None:
        try:
            for name, kind in METADATA_TYPES.items():
                read_claim(claims, name, kind)
        except JoseError as exc:
            return self.deny(R.metadata_bad_type, exc.description)
        return None

    def _auth_method(self, claims: Mapping[str, Any]) -> Denial | None:
        method = claims.get("token_endpoint_auth_method")
        if method is None:
            return None  # optional when the policy does not require it
        if method not in self._methods:
            return self.deny(R.token_endpoint_auth_method_not_allowed,
                              f"token_endpoint_auth_method {quoted(method)} is not supported; must be one of: "
                              f"{', '.join(self.params.token_endpoint_auth_methods)}")
        dns = [claims[n] for n in DN_CLAIMS if claims.get(n) is not None]
        if method == "tls_client_auth":
            if not dns:
                return self.deny(R.tls_client_auth_dn_missing, "tls_client_auth requires tls_client_auth_subject_dn "
                                                                "(or tls_client_auth_dn in OB 3.1)")
            if len(set(dns)) > 1:
                return self.deny(R.tls_client_auth_dn_conflict,
                                  "tls_client_auth_subject_dn and tls_client_auth_dn differ; send one DN")
        if method in JWT_AUTH_METHODS and claims.get("token_endpoint_auth_signing_alg") is None:
            return self.deny(R.token_endpoint_auth_signing_alg_missing,
                              f"{method} requires token_endpoint_auth_signing_alg")
        return None

    def _signing_algs(self, claims: Mapping[str, Any]) -> Denial | None:
        for name in SIGNING_ALG_CLAIMS:
            value = claims.get(name)
            if value is None:
                continue
            if value not in self._algs:
                return self.deny(R.signing_alg_not_allowed, f"{name} {quoted(value)} is not allowed; must be one "
                                                             f"of: {', '.join(self.params.signing_algorithms)}")
        return None

    def _grant_and_response_types(self, claims: Mapping[str, Any]) -> Denial | None:
        grants = claims.get("grant_types")
        if grants is not None:
            for grant in grants:
                if grant not in self._grants:
                    return self.deny(R.grant_type_not_allowed, f"grant_type {quoted(grant)} is not supported; must "
                                                                f"be among: {', '.join(self.params.grant_types)}")
        responses = claims.get("response_types")
        if responses is not None:
            for value in responses:
                if _words(value) not in self._responses:
                    allowed = ", ".join(f'"{r}"' for r in self.params.response_types)
                    return self.deny(R.response_type_not_allowed,
                                      f"response_type {quoted(value)} is not supported; must be one of: {allowed}")
        app_type = claims.get("application_type")
        if app_type is not None and app_type not in self._app_types:
            return self.deny(R.application_type_not_allowed, f"application_type {quoted(app_type)} is not "
                                                              f"supported; must be one of: "
                                                              f"{', '.join(self.params.application_types)}")
        return None

    def _scope(self, claims: Mapping[str, Any], ssa: Mapping[str, Any]) -> Denial | None:
        scope = claims.get("scope")
        if scope is None:
            return None
        # OB 3.1: an array of strings; OB 3.2+: one space-separated string (types: METADATA_TYPES).
        requested = scope.split() if isinstance(scope, str) else [w for s in scope for w in s.split()]
        allowed = set(self.params.always_allowed_scopes)
        for role in ssa["software_roles"]:
            allowed.update(self.params.role_scopes.get(role, ()))
        refused = sorted({s for s in requested if s not in allowed})
        if refused:
            roles = ", ".join(ssa["software_roles"])
            return self.deny(R.scope_not_allowed, f"scope {quoted(' '.join(refused), 128)} is not permitted by the "
                                                   f"software statement's roles ({quoted(roles, 128)})")
        return None

    def _identity(self, claims: Mapping[str, Any], ssa: Mapping[str, Any], request: RequestView) -> Denial | None:
        software_id = claims.get("software_id")
        if software_id is not None and software_id != ssa["software_id"]:
            return self.deny(R.software_id_mismatch, f"software_id {quoted(software_id)} is not the software "
                                                      f"statement's {quoted(ssa['software_id'])}")
        path_client = request.params.get(self.params.path_param)
        client_id = claims.get("client_id")
        if path_client is not None and client_id is not None and client_id != path_client:
            return self.deny(R.registration_client_id_mismatch,
                              f"client_id {quoted(client_id)} in the request is not the ClientId of the path")
        return None


def _words(value: str) -> frozenset[str]:
    return frozenset(value.split())


def _redirect_problem(uri: Any) -> tuple[Reason, str] | None:
    """(reason, description) when a redirect URI is not an https URL to a public host without a fragment."""
    if not isinstance(uri, str) or not uri:
        return R.redirect_uri_invalid, "each redirect_uri must be a non-empty string"
    try:
        parts = urlsplit(uri)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return R.redirect_uri_invalid, f"redirect_uri {quoted(uri)} is not a valid URL"
    if parts.scheme.lower() != "https":
        return R.redirect_uri_not_https, f"redirect_uri {quoted(uri)} must use the https scheme"
    if not host:
        return R.redirect_uri_invalid, f"redirect_uri {quoted(uri)} has no host"
    if _is_local(host):
        return R.redirect_uri_localhost, f"redirect_uri {quoted(uri)} must not point at localhost or a loopback address"
    if parts.fragment or uri.endswith("#"):
        return R.redirect_uri_fragment, f"redirect_uri {quoted(uri)} must not contain a fragment (RFC 6749 §3.1.2)"
    return None


def _is_local(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761 §6.3
        return True
    if ":" not in host and not host[-1:].isdigit():
        return False  # neither IPv6 (has a colon) nor dotted-decimal IPv4 (ends in a digit): a name
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified
