"""`software_statement`: the registration request's SSA is a JWT signed by a trusted directory (OB Directory
profile), valid now, from an Active organisation, carrying the claims the other DCR checks rely on."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from ..config import Directory
from ..config.schema import PositiveSeconds, StrictModel
from ..jose import ClaimRules, JoseError, JwsVerifier, Trust
from ..jose.claims import ANY_VALUE, IDENTIFIER, NAME, STRINGS, TEXT, ClaimType, read_claim
from ..jose.errors import quoted
from ..reasons import JoseFamily, Reason
from .base import Check, Denial, RequestView
from .params import ParamError
from .registration import (
    MAX_SSA_BYTES,
    ORG_ID,
    SOFTWARE_ID,
    SOFTWARE_ROLES,
    SSA_CLAIMS,
    RegistrationError,
    RequestBodyReasons,
    request_jws,
    services_locator,
)
from .services import CONFIGURED_URLS, Services

REMEMBERED_SSAS: Final = 256
"""Verified SSAs each `software_statement` check remembers (about one per TPP registering; at most
`MAX_SSA_BYTES` each, a few MB in the worst case): the least recently seen is forgotten first."""
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


_INVALID: Final = "invalid_software_statement"
_UNAPPROVED: Final = "unapproved_software_statement"


class SoftwareStatementReasons(RequestBodyReasons):
    """Why `software_statement` refuses: RFC 7591 invalid_ / unapproved_software_statement (400), the body's
    structure (`request_*`, 400 invalid_client_metadata), or 503 when a trusted directory's keys are unavailable."""

    ssa_missing = Reason(400, _INVALID)
    ssa_malformed = Reason(400, _INVALID)
    """Not a string, or not a compact JWS (the JOSE code `malformed`)."""
    ssa = JoseFamily("ssa_", 400, _INVALID, excluded=("jwks_unavailable", "jwks_url_refused"))
    """The SSA refused by the JOSE layer: `ssa_<jose code>`."""
    ssa_too_old = Reason(400, _INVALID)
    ssa_issuer_not_trusted = Reason(400, _UNAPPROVED)
    ssa_org_not_active = Reason(400, _UNAPPROVED)
    ssa_role_missing = Reason(400, _UNAPPROVED)
    directory_jwks_unavailable = Reason(503, "temporarily_unavailable")
    """The trusted directory's key set cannot be had (fail closed), with Retry-After."""


R = SoftwareStatementReasons


@dataclass(frozen=True, slots=True)
class _Trusted:
    name: str
    directory: Directory
    trust: Trust


class SoftwareStatement(Check[SoftwareStatementParams]):
    """Verify the SSA inside the registration request and record its claims as facts."""

    name = "software_statement"
    Params = SoftwareStatementParams
    produces = (SSA_CLAIMS, SOFTWARE_ID, ORG_ID, SOFTWARE_ROLES)
    reasons = SoftwareStatementReasons
    needs_body = True
    __slots__ = ("_directories", "_judged", "_verifier")

    def __init__(self, params: SoftwareStatementParams, services: Services) -> None:
        super().__init__(params, services)
        configured = services.trust.directories
        names = params.directories or tuple(configured)
        rules = ClaimRules.build(leeway_seconds=services.trust.clock_skew_seconds, require=("iss", "iat"))
        trusted: dict[str, _Trusted] = {}
        for i, name in enumerate(names):
            if name not in configured:
                valid = ", ".join(sorted(configured)) or "none configured"
                raise ParamError(["directories", i], f"unknown directory {name!r} (config trust.directories: {valid})")
            d = configured[name]
            trusted[d.issuer] = _Trusted(name, d, Trust(algorithms=frozenset(d.algorithms), jwks_uri=d.jwks_uri,
                                                        rules=rules, issuer=d.issuer, url_policy=CONFIGURED_URLS))
        # With no directory configured every SSA is refused as untrusted at request time (fail closed), while
        # the policy set still loads (e.g. `policy lint` with a config that has no trust anchors yet).
        self._directories = trusted
        # The one JWS path (gateway/jose/verifier.py). RFC 8725 §3.11 / OB Directory profile: typ JWT, the fixed
        # typ checked right after the parse, before anything else costs a lookup. A TPP sends the same SSA in
        # every registration request: the verifier remembers the SSAs it verified (their parse and signature;
        # the key, its constraints and every claim are judged again on each request).
        self._verifier = JwsVerifier(locate=services_locator(services), max_bytes=MAX_SSA_BYTES, typ="JWT",
                                     remember=REMEMBERED_SSAS)
        # The texts of verified SSAs whose claims passed the judgement that depends on nothing else (their
        # shape, org_status, roles: `_judge_claims`); the text fixes the claims. Least recently judged first, as
        # many as the verifier remembers. The age is judged on every request.
        self._judged: OrderedDict[str, None] = OrderedDict()

    def jwks_uris(self) -> tuple[str, ...]:
        """The trusted directories' key sets, for prefetching."""
        return tuple(t.directory.jwks_uri for t in self._directories.values())

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass with the SSA facts set, or refuse (400 invalid_/unapproved_software_statement)."""
        try:
            jws = request_jws(request)
        except RegistrationError as exc:
            return self.deny(exc.refusal, exc.description)
        raw = (jws.claims or {}).get("software_statement")
        if raw is None:
            return self.deny(R.ssa_missing, "the registration request has no software_statement claim")
        if not isinstance(raw, str):
            return self.deny(R.ssa_malformed, "software_statement must be a signed JWT (a string)")
        try:
            ssa = self._verifier.parse(raw)
        except JoseError as exc:
            return self.deny(R.ssa[exc.reason], f"software statement: {exc.description}")
        claims: Mapping[str, Any] = ssa.claims or {}
        iss = claims.get("iss")
        trusted = self._directories.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            return self.deny(R.ssa_issuer_not_trusted,
                             f"the software statement's issuer {quoted(iss)} is not a trusted directory")
        try:
            # alg allow-list (before any key lookup), kid, the directory's key, signature, claims: in that order.
            await self._verifier.verify(ssa, trusted.trust, now=request.now)
        except JoseError as exc:
            if exc.reason in ("jwks_unavailable", "jwks_url_refused"):
                # Our trust anchor is unreachable: not the TPP's fault, and never a reason to accept.
                return self.deny(R.directory_jwks_unavailable,
                                 f"the keys of directory {trusted.name!r} are unavailable, retry later",
                                 (("Retry-After", "5"),))
            return self.deny(R.ssa[exc.reason], f"software statement: {exc.description}")
        denial = self._judge(raw, claims, request.now)
        if denial is not None:
            return denial
        roles = [str(r) for r in claims["software_roles"]]
        request.facts.set(SSA_CLAIMS, dict(claims))
        request.facts.set(SOFTWARE_ID, claims["software_id"])
        request.facts.set(ORG_ID, claims["org_id"])
        request.facts.set(SOFTWARE_ROLES, roles)
        return None

    def _judge(self, text: str, claims: Mapping[str, Any], now: float) -> Denial | None:
        """Age, shape of the claims other checks rely on, organisation status and roles of a verified SSA."""
        limit = self.params.max_age_seconds
        iat = claims["iat"]  # validate_claims: present and a NumericDate
        if limit is not None and now - float(iat) > limit + self.services.trust.clock_skew_seconds:
            return self.deny(R.ssa_too_old, f"the software statement was issued more than {limit:g} seconds ago")
        if text in self._judged:
            self._judged.move_to_end(text)
            return None
        denial = self._judge_claims(claims)
        if denial is None:
            self._judged[text] = None
            if len(self._judged) > REMEMBERED_SSAS:
                self._judged.popitem(last=False)
        return denial

    def _judge_claims(self, claims: Mapping[str, Any]) -> Denial | None:
        """What depends on the claims alone: their shape, the organisation's status and the roles."""
        problem = _shape_problem(claims, self.params.required_claims)
        if problem is not None:
            return self.deny(*problem)
        status = claims.get("org_status")
        if status != ACTIVE:
            what = "has no org_status" if status is None else f"has org_status {quoted(status)}"
            return self.deny(R.ssa_org_not_active,
                             f"the software statement {what}; only Active organisations may register")
        missing = sorted(set(self.params.required_roles) - set(claims["software_roles"]))
        if missing:
            return self.deny(R.ssa_role_missing, "the software statement lacks the software_roles required "
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


def _shape_problem(claims: Mapping[str, Any], extra: tuple[str, ...]) -> tuple[Reason, str] | None:
    """(reason, description) when a claim the DCR checks rely on is missing or of the wrong type."""
    try:
        for name in (*ALWAYS_REQUIRED, *extra):
            read_claim(claims, name, SSA_CLAIM_TYPES.get(name, ANY_VALUE), required=True)
        read_claim(claims, "org_status", SSA_CLAIM_TYPES["org_status"])
    except JoseError as exc:
        return R.ssa[exc.reason], f"software statement: {exc.description}"
    return None
