"""`software_statement`: the registration request's SSA is a JWT signed by a trusted directory (OB Directory
profile), valid now, from an Active organisation, carrying the claims the other DCR checks rely on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from ..config import Directory
from ..config.schema import PositiveSeconds, StrictModel
from ..jose import ClaimRules, JoseError, check_algorithm, check_typ, parse_compact, validate_claims, verify_signature
from ..jose.claims import ANY_VALUE, IDENTIFIER, NAME, STRINGS, TEXT, ClaimType, read_claim
from ..jose.errors import quoted
from .base import Check, Denial, RequestView
from .params import ParamError
from .registration import (
    MAX_SSA_BYTES,
    ORG_ID,
    SOFTWARE_ID,
    SOFTWARE_ROLES,
    SSA_CLAIMS,
    RegistrationError,
    request_jws,
)
from .services import CONFIGURED_URLS, Services

ACTIVE = "Active"
"""The only `org_status` that may register (OB Directory: Active | Revoked | Withdrawn)."""


class SoftwareStatementParams(StrictModel):
    """Parameters of `software_statement`."""

    directories: tuple[str, ...] = ()
    """Names of trusted directories from config `trust.directories`; empty: every configured directory."""
    required_roles: tuple[str, ...] = ()
    """Roles the SSA's `software_roles` must all include (e.g. `[AISP]`); otherwise unapproved_software_statement."""
    required_claims: tuple[str, ...] = ()
    """Claims required besides software_id, org_id, software_jwks_endpoint, software_redirect_uris and
    software_roles (always required), e.g. `[org_name, software_client_name]` as ForgeRock SAPIG does."""
    max_age_seconds: PositiveSeconds | None = None
    """Refuse SSAs whose `iat` is older than this. Unset: no limit (OB sets no SSA lifetime)."""


@dataclass(frozen=True, slots=True)
class _Trusted:
    name: str
    directory: Directory
    algorithms: frozenset[str]


class SoftwareStatement(Check[SoftwareStatementParams]):
    """Verify the SSA inside the registration request and record its claims as facts."""

    name = "software_statement"
    Params = SoftwareStatementParams
    needs_body = True
    __slots__ = ("_directories", "_rules")

    def __init__(self, params: SoftwareStatementParams, services: Services) -> None:
        super().__init__(params, services)
        configured = services.trust.directories
        names = params.directories or tuple(configured)
        trusted: dict[str, _Trusted] = {}
        for i, name in enumerate(names):
            if name not in configured:
                valid = ", ".join(sorted(configured)) or "none configured"
                raise ParamError(["directories", i], f"unknown directory {name!r} (config trust.directories: {valid})")
            d = configured[name]
            trusted[d.issuer] = _Trusted(name, d, frozenset(d.algorithms))
        # With no directory configured every SSA is refused as untrusted at request time (fail closed), while
        # the policy set still loads (e.g. `policy lint` with a config that has no trust anchors yet).
        self._directories = trusted
        self._rules = ClaimRules.build(leeway_seconds=services.trust.clock_skew_seconds, require=("iss", "iat"))

    def jwks_uris(self) -> tuple[str, ...]:
        """The trusted directories' key sets, for prefetching."""
        return tuple(t.directory.jwks_uri for t in self._directories.values())

    def _invalid(self, reason: str, description: str) -> Denial:
        return self.deny(400, "invalid_software_statement", description, reason)

    def _unapproved(self, reason: str, description: str) -> Denial:
        return self.deny(400, "unapproved_software_statement", description, reason)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass with the SSA facts set, or refuse (400 invalid_/unapproved_software_statement)."""
        try:
            jws = request_jws(request)
        except RegistrationError as exc:
            return self.deny(400, "invalid_client_metadata", exc.description, exc.reason)
        raw = (jws.claims or {}).get("software_statement")
        if raw is None:
            return self._invalid("ssa_missing", "the registration request has no software_statement claim")
        if not isinstance(raw, str):
            return self._invalid("ssa_malformed", "software_statement must be a signed JWT (a string)")
        try:
            ssa = parse_compact(raw, max_bytes=MAX_SSA_BYTES)
            # RFC 8725 §3.11 / OB Directory profile: typ JWT; checked before anything else costs a lookup.
            check_typ(ssa.header, "JWT")
        except JoseError as exc:
            return self._invalid(f"ssa_{exc.reason}", f"software statement: {exc.description}")
        claims: Mapping[str, Any] = ssa.claims or {}
        iss = claims.get("iss")
        trusted = self._directories.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            return self._unapproved("ssa_issuer_not_trusted",
                                    f"the software statement's issuer {quoted(iss)} is not a trusted directory")
        try:
            # SECURITY: `none` and HS* are refused before any key lookup (alg confusion, RFC 8725 §3.1).
            check_algorithm(ssa, trusted.algorithms)
            if ssa.kid is None:
                raise JoseError("missing_kid", "JWS header must contain a 'kid'")
            key = await self.services.keys.get_key(trusted.directory.jwks_uri, ssa.kid, policy=CONFIGURED_URLS)
            verify_signature(ssa, key, trusted.algorithms)
            validate_claims(claims, self._rules, request.now)
        except JoseError as exc:
            if exc.reason in ("jwks_unavailable", "jwks_url_refused"):
                # Our trust anchor is unreachable: not the TPP's fault, and never a reason to accept.
                return self.deny(503, "temporarily_unavailable",
                                 f"the keys of directory {trusted.name!r} are unavailable, retry later",
                                 "directory_jwks_unavailable", (("Retry-After", "5"),))
            return self._invalid(f"ssa_{exc.reason}", f"software statement: {exc.description}")
        denial = self._judge(claims, request.now)
        if denial is not None:
            return denial
        roles = [str(r) for r in claims["software_roles"]]
        request.facts[SSA_CLAIMS] = dict(claims)
        request.facts[SOFTWARE_ID] = claims["software_id"]
        request.facts[ORG_ID] = claims["org_id"]
        request.facts[SOFTWARE_ROLES] = roles
        return None

    def _judge(self, claims: Mapping[str, Any], now: float) -> Denial | None:
        """Age, shape of the claims other checks rely on, organisation status and roles of a verified SSA."""
        limit = self.params.max_age_seconds
        iat = claims["iat"]  # validate_claims: present and a NumericDate
        if limit is not None and now - float(iat) > limit + self.services.trust.clock_skew_seconds:
            return self._invalid("ssa_too_old", f"the software statement was issued more than {limit:g} seconds ago")
        problem = _shape_problem(claims, self.params.required_claims)
        if problem is not None:
            return self._invalid(*problem)
        status = claims.get("org_status")
        if status != ACTIVE:
            what = "has no org_status" if status is None else f"has org_status {quoted(status)}"
            return self._unapproved("ssa_org_not_active",
                                    f"the software statement {what}; only Active organisations may register")
        missing = sorted(set(self.params.required_roles) - set(claims["software_roles"]))
        if missing:
            return self._unapproved("ssa_role_missing", "the software statement lacks the software_roles required "
                                                        f"here: {', '.join(missing)}")
        return None


def _absolute_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


_ROLES: Final = ClaimType("a non-empty array of role names (1 to 64 visible ASCII characters each)",
                          shape="strings", max_items=16, pattern=IDENTIFIER.pattern)
SSA_CLAIM_TYPES: Final[Mapping[str, ClaimType]] = {
    "software_id": IDENTIFIER,
    "org_id": IDENTIFIER,
    "software_jwks_endpoint": ClaimType("an absolute http(s) URL", test=_absolute_url),
    "software_redirect_uris": STRINGS,
    "software_roles": _ROLES,
    "org_status": NAME,
    "org_name": NAME,
    "software_client_name": NAME,
    "software_client_id": NAME,
    "software_client_description": TEXT,
}
"""Types of the SSA claims the checks read (OB Directory SSA, digest §6): the five always required, those a
policy's `required_claims` names (one this table does not know must be a non-empty string, array or object),
and `org_status` whenever present."""
ALWAYS_REQUIRED: Final = ("software_id", "org_id", "software_jwks_endpoint", "software_redirect_uris",
                          "software_roles")


def _shape_problem(claims: Mapping[str, Any], extra: tuple[str, ...]) -> tuple[str, str] | None:
    """(reason, description) when a claim the DCR checks rely on is missing or of the wrong type."""
    try:
        for name in (*ALWAYS_REQUIRED, *extra):
            read_claim(claims, name, SSA_CLAIM_TYPES.get(name, ANY_VALUE), required=True)
        read_claim(claims, "org_status", SSA_CLAIM_TYPES["org_status"])
    except JoseError as exc:
        return f"ssa_{exc.reason}", f"software statement: {exc.description}"
    return None
