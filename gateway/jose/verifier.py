"""The one JWS verification path: every JWS the gateway or its sandbox relies on is verified by `JwsVerifier`.

Access tokens (`checks/token_verifier.py`), software statements (`checks/software_statement.py`), registration
requests (`checks/registration_request.py`), the tokens of `policy test`, and the sandbox's access tokens and
`private_key_jwt` client assertions all go through `JwsVerifier.verify`. Callers supply only what differs —
which keys (a `Trust`: allow-listed algorithms, where the key set is, the `typ` rule, the claim rules), the
size limit and a fixed `typ` — never the order, which is this one (read side by side from the three copies it
replaced, the checks' order kept exactly):

1. **strict compact parse** (`JwsVerifier.parse`, `jws.parse_compact`): size limit; three strict, canonical
   base64url segments; header and payload JSON objects without duplicate members; no `jwk` / `jku` / `x5u` /
   `x5c` (keys never come from the token); no `b64: false`; `crit` only for understood extensions. Then the
   verifier's fixed `typ`, when it has one (the SSA's `JWT`): it needs nothing but the header.
2. **trust**: the caller decides who may have signed — from the unverified `iss` (a token issuer, an SSA's
   directory) or from facts verified earlier (the SSA's `software_jwks_endpoint`) — and hands a `Trust` to
   `verify`. That choice is the only use of an unverified payload.
3. **alg allow-list** (`jws.check_algorithm`), before any key lookup: `none`, HS* and unlisted algorithms
   never cause a fetch (RFC 8725 §3.1).
4. **kid present**: no `kid`, no key to select.
5. **the trust's typ rule** (one media type, or one of several; RFC 8725 §3.11).
6. **key by kid through the key locator**: (issuer, JWKS URI, kid, URL policy) → `VerificationKey`; the JWKS
   cache (with its SSRF guard) in production, `StaticKeys` in `policy test` and in the sandbox.
7. **signature** (`jws.verify_signature`): the key's type, curve, `alg`, `use` and `key_ops` against the alg,
   the ECDSA signature shape (CVE-2022-21449), then the signature itself.
8. **claims rules** (`claims.validate_claims`): required claims, exp / nbf / iat with the leeway, lifetime,
   iss, aud — read only once the signature is good. A `Trust` without rules leaves the verified claims to the
   caller's own judgement (the sandbox's RFC 7523 wording).

A verifier built with `remember=N` keeps the last N JWSs it verified, by their exact text (a TPP sends the same
SSA in every registration request): the same text again skips the parse (a pure function of the text and the
verifier's limits) and, while the key its `kid` names now is the very key that verified it (same RFC 7638
thumbprint), the signature computation of step 7. Every other step runs on every verification: the fixed typ,
trust, allow-list, kid, typ rule, key lookup, the key's constraints and every claims rule at the current time.
Only a JWS whose signature verified is remembered, so the memo holds nothing an attacker signed.

Nothing outside `gateway/jose/` calls `verify_signature` or jwcrypto (tests/jose/test_one_door.py).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .claims import ClaimRules, check_typ, validate_claims
from .encoding import b64url_encode
from .errors import JoseError
from .jws import DEFAULT_MAX_BYTES, CompactJWS, check_algorithm, check_key, parse_compact, verify_signature
from .keys import JwkSet, VerificationKey
from .url_guard import UrlPolicy, address_category


@runtime_checkable
class KeyProvider(Protocol):
    """Where verification keys come from: the JWKS cache in production, `StaticKeys` in `policy test`, tests
    and the sandbox. Key sets are named by URI; `policy` is the SSRF policy the URI must pass."""

    async def get_key(self, uri: str, kid: str, *, policy: UrlPolicy | None = None) -> VerificationKey:
        """The key `kid` of the key set at `uri`; JoseError unknown_kid / jwks_unavailable / jwks_url_refused."""
        ...

    async def get_keyset(self, uri: str, *, policy: UrlPolicy | None = None) -> JwkSet:
        """The whole key set at `uri` (`use: tls` keys included)."""
        ...

    async def prefetch(
        self, uris: Iterable[str], *, policy: UrlPolicy | None = None
    ) -> dict[str, JoseError | None]:
        """Warm the key sets; each URI's error or None."""
        ...


KeyLocator = Callable[[str | None, str, str, UrlPolicy | None], Awaitable[VerificationKey]]
"""The key-locator hook: `(issuer, jwks_uri, kid, url_policy) -> VerificationKey`, JoseError when none."""


def provider_locator(keys: KeyProvider) -> KeyLocator:
    """The locator that looks `kid` up in the key set at the JWKS URI through `keys`."""

    async def locate(issuer: str | None, jwks_uri: str, kid: str, policy: UrlPolicy | None) -> VerificationKey:
        return await keys.get_key(jwks_uri, kid, policy=policy)

    return locate


class StaticKeys:
    """A KeyProvider serving key sets known in advance, by URI: keys generated for `policy test`, a sandbox's
    own signing key, tests. URL policies are applied to the URI's text and literal addresses; host names are
    never resolved and nothing is fetched."""

    __slots__ = ("_sets",)

    def __init__(self, sets: Mapping[str, JwkSet] | None = None) -> None:
        self._sets: dict[str, JwkSet] = dict(sets or {})

    def serve(self, uri: str, keyset: JwkSet) -> None:
        """Serve `keyset` at `uri`."""
        self._sets[uri] = keyset

    async def get_keyset(self, uri: str, *, policy: UrlPolicy | None = None) -> JwkSet:
        """The key set served at `uri`, if the URL policy admits it."""
        if policy is not None:
            _vet(uri, policy)
        keyset = self._sets.get(uri)
        if keyset is None:
            raise JoseError("jwks_unavailable", f"key set {uri} unavailable: not served in policy test")
        return keyset

    async def get_key(self, uri: str, kid: str, *, policy: UrlPolicy | None = None) -> VerificationKey:
        """The key with this kid in the set served at `uri`."""
        key = (await self.get_keyset(uri, policy=policy)).get(kid)
        if key is None:
            raise JoseError("unknown_kid", "no key with this kid in the key set")
        return key

    async def prefetch(
        self, uris: Iterable[str], *, policy: UrlPolicy | None = None
    ) -> dict[str, JoseError | None]:
        """Always warm."""
        return {u: None for u in uris}


def _vet(uri: str, policy: UrlPolicy) -> None:
    parsed = policy.check_syntax(uri)
    try:
        ip = ipaddress.ip_address((parsed.raw_host or "").strip("[]"))
    except ValueError:
        return  # a name: never resolved here
    if not policy.address_allowed(ip):
        kind = address_category(ip).replace("_", "-")
        raise JoseError("jwks_url_refused", f"key set URL {uri} unavailable: host is a {kind} address")


@dataclass(frozen=True, slots=True)
class Trust:
    """Who may have signed a JWS: decided by the caller (step 2), built once per issuer where it can be."""

    algorithms: frozenset[str]
    """The alg allow-list (only asymmetric algorithms can ever pass, whatever is listed)."""
    jwks_uri: str
    """The key set the key must come from."""
    rules: ClaimRules | None
    """Claim rules checked after the signature; None: the caller judges the verified claims itself."""
    issuer: str | None = None
    """The issuer the keys belong to, for the locator."""
    url_policy: UrlPolicy | None = None
    """The SSRF policy `jwks_uri` must pass (strict for URLs taken from signed documents)."""
    typ: str | tuple[str, ...] | None = None
    """The `typ` header: this media type, or one of these; None: not checked."""


@dataclass(frozen=True, slots=True)
class VerifiedJwt:
    """A JWT whose signature and claims have been verified."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    alg: str
    kid: str
    key_thumbprint: str  # RFC 7638 thumbprint of the key that verified it (safe to log)
    signing_input: bytes = field(repr=False)


def _typ_ok(typ: object, expected: str) -> bool:
    try:
        check_typ({"typ": typ}, expected)
    except JoseError:
        return False
    return True


def _check_typ_rule(header: Mapping[str, Any], rule: str | tuple[str, ...]) -> None:
    if isinstance(rule, str):
        check_typ(header, rule)
        return
    typ = header.get("typ")
    if not any(_typ_ok(typ, expected) for expected in rule):
        raise JoseError("typ_mismatch", f"typ header must be one of: {', '.join(rule)}")


@dataclass(frozen=True, slots=True)
class _Verified:
    """A JWS whose signature verified (`JwsVerifier(remember=N)`): its parse, its signature segment as sent, and
    the RFC 7638 thumbprint of the key that verified it."""

    jws: CompactJWS
    signature_b64: str
    thumbprint: str


class JwsVerifier:
    """Compiled once per caller; `parse` and `verify` run per JWS, always in the order of this module."""

    __slots__ = ("_clock", "_locate", "_remember", "_verified", "max_bytes", "missing_kid", "typ", "understood_crit")

    def __init__(
        self,
        keys: KeyProvider | None = None,
        *,
        locate: KeyLocator | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        typ: str | None = None,
        understood_crit: frozenset[str] = frozenset(),
        missing_kid: str = "JWS header must contain a 'kid'",
        clock: Callable[[], float] = time.time,
        remember: int = 0,
    ) -> None:
        if (keys is None) == (locate is None):
            raise ValueError("give exactly one of keys (a KeyProvider) or locate (a KeyLocator)")
        if locate is None:
            assert keys is not None
            locate = provider_locator(keys)
        self._locate = locate
        self.max_bytes = max_bytes
        self.typ = typ
        self.understood_crit = understood_crit
        self.missing_kid = missing_kid
        self._clock = clock
        if remember < 0:
            raise ValueError("remember must be >= 0")
        self._remember = remember
        # signing input (ASCII(header '.' payload)) -> the verified JWS; least recently verified first.
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()

    def _remembered(self, token: str) -> CompactJWS | None:
        """The parse of `token` when this exact text verified before and is still remembered."""
        dot = token.rfind(".")
        if dot < 0 or len(token) > self.max_bytes or not token.isascii():
            return None
        seen = self._verified.get(token[:dot].encode("ascii"))
        if seen is None or seen.signature_b64 != token[dot + 1:]:
            return None
        return seen.jws

    def parse(self, token: str) -> CompactJWS:
        """Step 1: the strict parse, then the fixed `typ`; the result is NOT verified."""
        jws = self._remembered(token) if self._verified else None
        if jws is None:
            jws = parse_compact(token, max_bytes=self.max_bytes, understood_crit=self.understood_crit)
        if self.typ is not None:
            # RFC 8725 §3.11: checked before anything else costs a lookup.
            check_typ(jws.header, self.typ)
        return jws

    async def locate(self, trust: Trust, kid: str) -> VerificationKey:
        """Step 6 alone: the key `kid` where `trust` says the keys are (e.g. to re-check a cached token's key)."""
        return await self._locate(trust.issuer, trust.jwks_uri, kid, trust.url_policy)

    async def verify(
        self, jws: CompactJWS | str, trust: Trust, *, now: float | None = None, kid_if_absent: str | None = None
    ) -> VerifiedJwt:
        """Steps 3 to 8 on a parsed JWS (steps 1 to 8 on a compact string); JoseError on the first failure.

        `kid_if_absent`: the key to look up when the JWS names none (`kid` is optional, RFC 7515 §4.1.4) — the
        caller's choice from the key set it trusts (the sandbox: a client key set's only signature key); never
        used when the JWS names a kid."""
        if isinstance(jws, str):
            jws = self.parse(jws)
        # SECURITY: the allow-list before any key lookup, so `none`, HS* (alg confusion, RFC 8725 §3.1) and
        # unlisted algorithms never cause a fetch.
        check_algorithm(jws, trust.algorithms)
        kid = jws.kid if jws.kid is not None else kid_if_absent
        if kid is None:
            raise JoseError("missing_kid", self.missing_kid)
        if trust.typ is not None:
            _check_typ_rule(jws.header, trust.typ)
        # SECURITY: the key comes only from the key set the trust names, never from the token (RFC 8725 §3.10).
        key = await self.locate(trust, kid)
        seen = self._verified.get(jws.signing_input) if self._verified else None
        if seen is not None and seen.jws.signature == jws.signature and seen.thumbprint == key.thumbprint:
            # This very signature was verified with this very key: its constraints are judged again, the
            # signature computation (a pure function of key, alg, signing input and signature) is not.
            check_key(jws, key, trust.algorithms)
            self._verified.move_to_end(jws.signing_input)
        else:
            verify_signature(jws, key, trust.algorithms)
            if self._remember:
                self._keep(jws, key.thumbprint)
        if jws.claims is None:  # pragma: no cover - parse_compact(json_payload=True) always sets claims
            raise JoseError("payload_not_json", "JWS payload is not a JSON object")
        if trust.rules is not None:
            validate_claims(jws.claims, trust.rules, self._clock() if now is None else now)
        return VerifiedJwt(jws.header, jws.claims, jws.alg, kid, key.thumbprint, jws.signing_input)

    def _keep(self, jws: CompactJWS, thumbprint: str) -> None:
        """Remember a JWS whose signature `thumbprint`'s key verified, forgetting the oldest beyond `remember`."""
        self._verified[jws.signing_input] = _Verified(jws, b64url_encode(jws.signature), thumbprint)
        self._verified.move_to_end(jws.signing_input)
        while len(self._verified) > self._remember:
            self._verified.popitem(last=False)

    def remembered(self) -> int:
        """How many verified JWSs are remembered (`remember=N`; tests, diagnostics)."""
        return len(self._verified)

