"""JWT claim validation (RFC 7519 §4.1) with an explicit leeway, the `typ` header check, and the one typed,
bounded read (`ClaimType`, `read_claim`) that every check uses for every claim it relies on."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .errors import JoseError, quoted

MAX_SAFE_INTEGER: Final = 2**53 - 1
"""Largest magnitude of a number claim: beyond it a JSON number is not an exact integer everywhere (RFC 7493
§2.2), and Python would raise OverflowError turning a huge integer into a float."""
MAX_NUMERIC_DATE: Final = 253_402_300_799
"""9999-12-31T23:59:59Z: the latest NumericDate (RFC 7519 §2) accepted in exp, nbf and iat."""
MAX_CLAIM_LENGTH: Final = 2048
"""Longest string a claim may hold, unless its ClaimType says less (URLs fit; a JWS body does not)."""
MAX_CLAIM_ITEMS: Final = 100
"""Most strings an array claim may hold, unless its ClaimType says less."""

Shape = Literal["string", "strings", "string_or_strings", "number", "value"]


@dataclass(frozen=True, slots=True)
class ClaimType:
    """The JSON type and bounds of a claim a check reads: the one rule every claim read goes through.

    Strings are non-blank and at most `max_length` characters (and match `pattern` / pass `test` when given);
    arrays hold `min_items` to `max_items` such strings; numbers are JSON numbers, never booleans, within
    [`minimum`, `maximum`] (checked on the value as parsed, before any float conversion or arithmetic);
    `value` is any non-empty string, array or object (a claim a policy requires without knowing its type).
    """

    what: str
    """What the claim must be, for the description: "claim 'x' must be <what>"."""
    shape: Shape = "string"
    max_length: int = MAX_CLAIM_LENGTH
    pattern: re.Pattern[str] | None = None
    test: Callable[[str], bool] | None = None
    min_items: int = 1
    max_items: int = MAX_CLAIM_ITEMS
    minimum: int = -MAX_SAFE_INTEGER
    maximum: int = MAX_SAFE_INTEGER
    blank: bool = False
    """Strings may be empty or blank (e.g. an access token's `scope` granting nothing)."""

    _judge: Callable[[Any], bool] = field(init=False, repr=False, compare=False)
    """`accepts`, specialised once for this type's shape and bounds (it runs for every claim of every request)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_judge", _judge_of(self))

    def accepts(self, value: Any) -> bool:
        """True when `value` (as parsed from JSON) has this type and lies within its bounds."""
        return self._judge(value)


def _judge_of(kind: ClaimType) -> Callable[[Any], bool]:
    """The function judging a value against `kind`: its shape picked and its bounds bound now, not on each call."""
    max_length, blank, test = kind.max_length, kind.blank, kind.test
    fullmatch = None if kind.pattern is None else kind.pattern.fullmatch

    def string(value: Any) -> bool:
        if not isinstance(value, str) or len(value) > max_length:
            return False
        # Blank: empty or only whitespace (exactly when value.strip() is empty), without building the stripped copy.
        if not blank and (not value or value.isspace()):
            return False
        if fullmatch is not None and fullmatch(value) is None:
            return False
        return test is None or test(value)

    min_items, max_items, minimum, maximum = kind.min_items, kind.max_items, kind.minimum, kind.maximum

    def strings(value: Any) -> bool:
        if not isinstance(value, list) or not min_items <= len(value) <= max_items:
            return False
        for item in value:  # a loop, not all(genexpr): this runs for every item of every array claim
            if not string(item):
                return False
        return True

    def string_or_strings(value: Any) -> bool:
        return string(value) if isinstance(value, str) else strings(value)

    def number(value: Any) -> bool:
        # SECURITY: bool is an int in Python; NaN fails both comparisons; comparing before converting means a
        # 400-digit integer is refused here instead of raising OverflowError in float() (issue 13).
        return isinstance(value, int | float) and not isinstance(value, bool) and minimum <= value <= maximum

    def any_value(value: Any) -> bool:
        if isinstance(value, str):
            return bool(value) and string(value)
        return isinstance(value, list | dict) and bool(value)

    judges: dict[Shape, Callable[[Any], bool]] = {"string": string, "strings": strings,
                                                   "string_or_strings": string_or_strings, "number": number,
                                                   "value": any_value}
    return judges[kind.shape]


EMPTY: Final[tuple[Any, ...]] = (None, "", [], {})
"""Values a required claim may not have: absent, null or empty are all "missing"."""


def read_claim(claims: Mapping[str, Any], name: str, kind: ClaimType, *, required: bool = False) -> Any:
    """The claim's value, checked against `kind`; None when absent and not `required`.

    JoseError `missing_claim` when `required` and the claim is absent, null or empty; `bad_claim` when it is
    present with another type or out of bounds. The description names the claim, never its value.
    """
    if name not in claims or (required and claims[name] in EMPTY):
        if required:
            raise JoseError("missing_claim", f"required claim {quoted(name)} is missing")
        return None
    value = claims[name]
    if not kind._judge(value):
        raise JoseError("bad_claim", f"claim {quoted(name)} must be {kind.what}")
    return value


TEXT: Final = ClaimType("a non-empty string")
NAME: Final = ClaimType("a non-empty string of at most 255 characters", max_length=255)
"""Names and short codes: org_name, token_endpoint_auth_method, jti (a replay-cache key and an audit field)."""
# SECURITY: software_id, org_id and role names become backend headers (X-DCR-*): visible ASCII only, bounded
# (no CR/LF header injection, no spaces).
IDENTIFIER: Final = ClaimType("1 to 64 visible ASCII characters", pattern=re.compile(r"[\x21-\x7e]{1,64}"))
CLIENT_ID: Final = ClaimType("1 to 255 printable ASCII characters (RFC 6749 A.1)",
                             pattern=re.compile(r"[\x20-\x7e]{1,255}"))
NUMERIC_DATE: Final = ClaimType("a NumericDate (seconds since the epoch, up to the year 9999)", shape="number",
                                minimum=0, maximum=MAX_NUMERIC_DATE)
AUDIENCE: Final = ClaimType("a string or an array of strings (RFC 7519 §4.1.3)", shape="string_or_strings",
                            min_items=0)
SCOPE: Final = ClaimType("a space-separated string or an array of strings", shape="string_or_strings",
                         max_length=4096, min_items=0)
TOKEN_SCOPE: Final = ClaimType("a space-separated string (RFC 9068 §2.2.3)", max_length=4096, blank=True)
STRINGS: Final = ClaimType("a non-empty array of non-empty strings", shape="strings")
ANY_VALUE: Final = ClaimType("a non-empty string, array or object", shape="value")


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """What a verified JWT must satisfy; built once per check from its policy parameters."""

    issuers: frozenset[str] | None = None  # None: any issuer (checked elsewhere, e.g. against the SSA)
    audiences: frozenset[str] | None = None  # None: `aud` not checked
    leeway_seconds: float = 30.0  # clock skew tolerated on exp / nbf / iat
    max_lifetime_seconds: float | None = None  # bound on exp - iat (or exp - now without iat)
    require: frozenset[str] = frozenset({"exp"})
    _require_order: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """`require` sorted once: the first missing claim named is the same whatever the set's order."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_require_order", tuple(sorted(self.require)))
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
    ) -> ClaimRules:
        """Convenience constructor accepting a single string or any iterable for issuers / audiences."""
        return cls(
            issuers=_as_set(issuers),
            audiences=_as_set(audiences),
            leeway_seconds=leeway_seconds,
            max_lifetime_seconds=max_lifetime_seconds,
            require=frozenset(require),
        )


def _as_set(value: Iterable[str] | str | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset({value}) if isinstance(value, str) else frozenset(value)


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = read_claim(claims, name, NUMERIC_DATE)
    return None if value is None else float(value)


def validate_claims(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """Check required claims, exp/nbf/iat with leeway, lifetime, iss and aud; JoseError on a failure."""
    for name in rules._require_order:
        if name not in claims:
            raise JoseError("missing_claim", f"required claim {name!r} is missing")
    read_claim(claims, "iss", TEXT)
    read_claim(claims, "sub", TEXT)
    read_claim(claims, "jti", NAME)

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
        aud = read_claim(claims, "aud", AUDIENCE)
        if rules.audiences.isdisjoint([aud] if isinstance(aud, str) else aud):
            raise JoseError("aud_mismatch", "audience (aud) does not name this recipient")
    else:
        read_claim(claims, "aud", AUDIENCE)  # type check even when not matched


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
