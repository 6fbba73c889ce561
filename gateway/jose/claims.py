"""JWT claim validation (RFC 7519 §4.1) with an explicit leeway, and the `typ` header check."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import JoseError, quoted

_STRING_CLAIMS = ("iss", "sub", "jti")


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """What a verified JWT must satisfy; built once per check from its policy parameters."""

    issuers: frozenset[str] | None = None  # None: any issuer (checked elsewhere, e.g. against the SSA)
    audiences: frozenset[str] | None = None  # None: `aud` not checked
    leeway_seconds: float = 30.0  # clock skew tolerated on exp / nbf / iat
    max_lifetime_seconds: float | None = None  # bound on exp - iat (or exp - now without iat)
    require: frozenset[str] = frozenset({"exp"})
    typ: str | None = None  # expected `typ` header, e.g. "JWT"; None: not checked

    def __post_init__(self) -> None:
        if not (math.isfinite(self.leeway_seconds) and self.leeway_seconds >= 0):
            raise ValueError("leeway_seconds must be a finite number >= 0")
        if self.max_lifetime_seconds is not None and not self.max_lifetime_seconds > 0:
            raise ValueError("max_lifetime_seconds must be > 0")

    @classmethod
    def build(
        cls,
        *,
        issuers: Iterable[str] | str | None = None,
        audiences: Iterable[str] | str | None = None,
        leeway_seconds: float = 30.0,
        max_lifetime_seconds: float | None = None,
        require: Iterable[str] = ("exp",),
        typ: str | None = None,
    ) -> ClaimRules:
        """Convenience constructor accepting a single string or any iterable for issuers / audiences."""
        return cls(
            issuers=_as_set(issuers),
            audiences=_as_set(audiences),
            leeway_seconds=leeway_seconds,
            max_lifetime_seconds=max_lifetime_seconds,
            require=frozenset(require),
            typ=typ,
        )


def _as_set(value: Iterable[str] | str | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset({value}) if isinstance(value, str) else frozenset(value)


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        if name in claims:
            raise JoseError("bad_claim", f"claim {name!r} is null")
        return None
    # RFC 7519 §2 NumericDate: a JSON number (bool is an int subclass in Python: refused).
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JoseError("bad_claim", f"claim {name!r} must be a NumericDate (seconds since the epoch)")
    return float(value)


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims["aud"]
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return aud
    raise JoseError("bad_claim", "claim 'aud' must be a string or an array of strings (RFC 7519 §4.1.3)")


def validate_claims(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """Check required claims, exp/nbf/iat with leeway, lifetime, iss and aud; JoseError on a failure."""
    for name in sorted(rules.require):
        if name not in claims:
            raise JoseError("missing_claim", f"required claim {name!r} is missing")
    for name in _STRING_CLAIMS:
        if name in claims and (not isinstance(claims[name], str) or not claims[name]):
            raise JoseError("bad_claim", f"claim {name!r} must be a non-empty string")

    leeway = rules.leeway_seconds
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    # RFC 7519 §4.1.4: the current time MUST be before exp.
    if exp is not None and now - leeway >= exp:
        raise JoseError("expired", "token has expired (exp)")
    # RFC 7519 §4.1.5: the current time MUST be at or after nbf.
    if nbf is not None and now + leeway < nbf:
        raise JoseError("not_yet_valid", "token is not valid yet (nbf)")
    if iat is not None and iat > now + leeway:
        raise JoseError("iat_in_future", "token was issued in the future (iat)")
    if exp is not None and iat is not None and exp < iat:
        raise JoseError("bad_claim", "exp is before iat")
    if rules.max_lifetime_seconds is not None and exp is not None:
        # SECURITY: long-lived tokens widen the replay window; without iat, measure from now.
        lifetime = exp - (iat if iat is not None else now)
        if lifetime > rules.max_lifetime_seconds:
            raise JoseError(
                "lifetime_too_long", f"token lifetime exceeds {rules.max_lifetime_seconds:g} seconds"
            )

    if rules.issuers is not None:
        if "iss" not in claims:
            raise JoseError("missing_claim", "required claim 'iss' is missing")
        if claims["iss"] not in rules.issuers:
            raise JoseError("iss_mismatch", "issuer (iss) is not trusted here")
    if rules.audiences is not None:
        if "aud" not in claims:
            raise JoseError("missing_claim", "required claim 'aud' is missing")
        if rules.audiences.isdisjoint(_audiences(claims)):
            raise JoseError("aud_mismatch", "audience (aud) does not name this recipient")
    elif "aud" in claims:
        _audiences(claims)  # type check even when not matched


def _media_type(value: str) -> str:
    # RFC 7515 §4.1.9: case-insensitive; "application/" may be omitted.
    lowered = value.strip().lower()
    return lowered.removeprefix("application/")


def check_typ(header: Mapping[str, Any], expected: str | None) -> None:
    """Refuse a `typ` header that is absent or differs from `expected` (RFC 7515 §4.1.9, RFC 8725 §3.11)."""
    if expected is None:
        return
    typ = header.get("typ")
    if not isinstance(typ, str):
        raise JoseError("typ_mismatch", f"typ header missing; expected {expected!r}")
    if _media_type(typ) != _media_type(expected):
        raise JoseError("typ_mismatch", f"typ header {quoted(typ)} is not {expected!r}")
