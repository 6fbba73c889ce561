"""Denial reasons, declared once: each stable snake_case reason with its HTTP status, protocol error code and
WWW-Authenticate behaviour.

Every check declares its reasons in one table (`Check.reasons`, a `Reasons` subclass) and `Check.deny` builds a
denial only from a reason of that table; the refusals made outside checks (the HTTP layer, the router, the
engine's store errors, body reading, the upstream) are declared here, in `REFUSALS`. A reason that carries a
JOSE error code (`token_expired`, `ssa_bad_signature`) is one of a `JoseFamily`, expanded at import over the
closed set of codes of `gateway.jose.errors.JoseReason`: the set of reasons the gateway can give is finite and
known before the first request. docs/policies.md lists them all (tests/checks/test_reasons.py keeps it so).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Final, get_args

from .jose.errors import JoseReason

JOSE_CODES: Final[tuple[JoseReason, ...]] = get_args(JoseReason)
"""Every JOSE error code, in the order gateway/jose/errors.py declares them."""

REALM: Final = "dcr-gateway"
_UNSAFE_IN_QUOTED: Final = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def bearer_challenge(error: str | None, description: str | None = None, scope: str | None = None) -> str:
    """A `WWW-Authenticate: Bearer …` value (RFC 6750 §3); no error code when credentials were absent."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_UNSAFE_IN_QUOTED.sub("", description)}"')
    if scope:
        parts.append(f'scope="{_UNSAFE_IN_QUOTED.sub("", scope)}"')
    return "Bearer " + ", ".join(parts)


class Challenge(Enum):
    """What `WWW-Authenticate` a denial carries (RFC 6750 §3)."""

    NONE = "none"
    """No challenge."""
    BEARER = "bearer"
    """`Bearer realm="…"` without an error code: the credentials were absent (RFC 6750 §3.1)."""
    BEARER_ERROR = "bearer_error"
    """`Bearer realm="…", error="<the error code>", error_description="…"` (and `scope` when given)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """How a refusal is answered: HTTP status, protocol error code, WWW-Authenticate behaviour."""

    status: int
    error: str
    challenge: Challenge = Challenge.NONE

    def challenge_headers(self, description: str, scope: str | None = None) -> tuple[tuple[str, str], ...]:
        """The `WWW-Authenticate` header this answer carries for `description` (none for Challenge.NONE)."""
        if self.challenge is Challenge.NONE:
            return ()
        if self.challenge is Challenge.BEARER:
            return (("WWW-Authenticate", bearer_challenge(None)),)
        return (("WWW-Authenticate", bearer_challenge(self.error, description, scope)),)


class Reason:
    """One registered reason: its stable name (the attribute it is declared as) and its answer.

    `configurable` names the parameter (or config key) that may change the answer, e.g. a check's `status`; the
    declared answer is then the default, and the check passes the one its parameters chose to `Check.deny`.
    """

    __slots__ = ("answer", "configurable", "jose", "name")

    def __init__(self, status: int, error: str, challenge: Challenge = Challenge.NONE, *,
                 configurable: str = "", jose: JoseReason | None = None, name: str = "") -> None:
        self.answer: Final = Answer(status, error, challenge)
        self.configurable: Final = configurable
        self.jose: Final = jose
        """The JOSE error code this reason stands for, when it comes from a `JoseFamily` (only reachable so)."""
        self.name = name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def status(self) -> int:
        """The (default) HTTP status."""
        return self.answer.status

    @property
    def error(self) -> str:
        """The (default) protocol error code."""
        return self.answer.error

    def __repr__(self) -> str:
        return f"Reason({self.name!r}, {self.answer.status}, {self.answer.error!r})"


class JoseFamily:
    """The reasons `<prefix><code>`, one per JOSE error code but `excluded` (codes the check answers otherwise,
    e.g. `jwks_unavailable` → 503), all answered alike. `family[exc.reason]` is the reason for a JoseError."""

    __slots__ = ("answer", "attr", "by_code", "excluded", "prefix")

    def __init__(self, prefix: str, status: int, error: str, challenge: Challenge = Challenge.NONE, *,
                 excluded: tuple[JoseReason, ...] = ()) -> None:
        unknown = set(excluded) - set(JOSE_CODES)
        if unknown:
            raise TypeError(f"JoseFamily {prefix!r}: {sorted(unknown)} are not JOSE error codes")
        self.prefix = prefix
        self.answer = Answer(status, error, challenge)
        self.excluded = frozenset(excluded)
        self.by_code: dict[str, Reason] = {}
        self.attr = ""
        """The attribute it is declared as in its table (looked up as `<table>.<attr>[exc.reason]`)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def codes(self) -> tuple[JoseReason, ...]:
        """The JOSE codes this family has a reason for."""
        return tuple(c for c in JOSE_CODES if c not in self.excluded)

    def __getitem__(self, code: JoseReason) -> Reason:
        """The reason for a JoseError's code (KeyError for an excluded code: the check answers it otherwise)."""
        return self.by_code[code]

    def _bind(self, explicit: dict[str, Reason]) -> None:
        """Make the family's reasons; a name also declared explicitly in the table is that reason (same answer)."""
        a = self.answer
        for code in self.codes():
            name = self.prefix + code
            reason = explicit.get(name)
            if reason is None:
                reason = Reason(a.status, a.error, a.challenge, jose=code, name=name)
            elif reason.answer != a or reason.configurable:
                raise TypeError(f"{name} is declared with {reason.answer}, its JoseFamily answers {a}")
            self.by_code[code] = reason


class Reasons:
    """A reason table: `Reason` and `JoseFamily` class attributes. A subclass inherits its bases' reasons (the
    groups several checks share); a name means one reason object across the whole hierarchy.

    `by_name` (built when the class is made) is what `Check.deny` looks a reason up in.
    """

    by_name: ClassVar[dict[str, Reason]] = {}
    check: ClassVar[str] = ""
    """For the tables of refusals outside checks: the `check` their denials are attributed to."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        own = {k: v for k, v in vars(cls).items() if isinstance(v, Reason)}
        for family in (v for v in vars(cls).values() if isinstance(v, JoseFamily)):
            family._bind(own)
        table: dict[str, Reason] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                reasons = value.by_code.values() if isinstance(value, JoseFamily) else (value,)
                for reason in reasons:
                    if not isinstance(reason, Reason):
                        continue
                    if table.setdefault(reason.name, reason) is not reason:
                        raise TypeError(f"{cls.__qualname__}: reason {reason.name!r} is declared twice")
        cls.by_name = table

    @classmethod
    def all(cls) -> Iterator[Reason]:
        """Every reason of the table, by name."""
        return iter(sorted(cls.by_name.values(), key=lambda r: r.name))

    @classmethod
    def families(cls) -> tuple[JoseFamily, ...]:
        """The JOSE families of the table (its own and inherited)."""
        seen: dict[int, JoseFamily] = {}
        for klass in cls.__mro__:
            for value in vars(klass).values():
                if isinstance(value, JoseFamily):
                    seen.setdefault(id(value), value)
        return tuple(seen.values())


class UnregisteredReason(LookupError):
    """A denial built from a reason its check does not declare (a programming error, never a client's)."""


# -- refusals outside checks -------------------------------------------------------------------------------

_INVALID_REQUEST: Final = "invalid_request"


class HttpRefusals(Reasons):
    """The framing rule and header hygiene (gateway/http/inbound.py, docs/security.md) and the handler's own
    refusals before a policy runs; their denials name the check `http`."""

    check = "http"
    ambiguous_header = Reason(400, _INVALID_REQUEST)
    duplicate_header = Reason(400, _INVALID_REQUEST)
    override_header = Reason(400, _INVALID_REQUEST)
    connection_header = Reason(400, _INVALID_REQUEST)
    transfer_encoding = Reason(501, _INVALID_REQUEST)
    expectation = Reason(417, _INVALID_REQUEST)
    content_encoding = Reason(415, _INVALID_REQUEST)
    body_not_allowed = Reason(400, _INVALID_REQUEST)
    client_concurrency = Reason(429, "too_many_requests")


class RouterRefusals(Reasons):
    """A request no policy applies to (never forwarded); denials name the check `router`."""

    check = "router"
    no_policy = Reason(404, "not_found", configurable="policies.unmatched_status")
    """403 `forbidden` (`FORBIDDEN`) when config `policies.unmatched_status` is 403."""
    FORBIDDEN: ClassVar[Answer] = Answer(403, "forbidden")
    method_not_allowed = Reason(405, "method_not_allowed")


class StoreRefusals(Reasons):
    """The engine's answer when a check's state store cannot answer (fail closed); the denial names that check."""

    state_unavailable = Reason(503, "temporarily_unavailable")


class BodyRefusals(Reasons):
    """Reading the request body (gateway/http/proxy.py) and the upstream exchange: answered as errors, before
    or after the decision (no check)."""

    body_too_large = Reason(413, "request_too_large")
    body_timeout = Reason(408, _INVALID_REQUEST)
    body_incomplete = Reason(400, _INVALID_REQUEST)
    plaintext_needed = Reason(415, _INVALID_REQUEST)
    upstream_unavailable = Reason(502, "bad_gateway")
    upstream_timeout = Reason(504, "gateway_timeout")


REFUSALS: Final[tuple[type[Reasons], ...]] = (HttpRefusals, RouterRefusals, StoreRefusals, BodyRefusals)
"""The one registry of refusals made outside checks."""
