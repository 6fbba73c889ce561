"""Verified facts: typed, declared by the checks that establish them, each with its projections.

A `Fact` is declared once, at import, by the module of the check that establishes it, and listed in that
check's `produces`; the policy compiler collects them. A fact says how it leaves the gateway:

- `header`: how to render it as the value of the header config `policies.fact_headers` names for it (sent
  upstream only when no check denied); None: never forwarded (claim sets, the token object);
- `response_headers`: fields the gateway adds to the forwarded response (the RateLimit fields);
- `audit`: the decision event's fields it fills (`null` in every event where it is absent);
- `claim`: the claims it adds to the signed facts for the backend (config `upstream.signed_facts`, sent only
  when no check denied); None: never signed.

`Facts` is the per-request container, indexed by declaration (one slot per declared fact, allocated on the
first fact set): `facts.get(TOKEN)` is typed, and nothing but a declared fact can be stored. Facts hold
verified values only; work on unverified input lives in `RequestView.memo`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_DECLARED: list[Fact[Any]] = []
"""Every fact declared in this process, by index."""
_BY_NAME: dict[str, Fact[Any]] = {}
_AUDIT_KEYS: dict[str, None] = {}
"""The decision event's fact fields, all None, in declaration order: every event carries all of them (copied)."""


def same(value: T) -> T:
    """The value itself (an audit field that is the fact's value)."""
    return value


def header_text(value: object) -> str | None:
    """A text fact as a header value; a list of texts comma-joined; anything else (or empty) none."""
    if value.__class__ is str:
        return value or None
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    return value if isinstance(value, str) and value else None


def claim_named(name: str) -> Callable[[Any], dict[str, Any]]:
    """A fact signed as one claim of that name holding its value."""

    def claim(value: Any) -> dict[str, Any]:
        return {name: value}

    return claim


class Fact(Generic[T]):
    """One kind of verified fact: its name (the key of config `policies.fact_headers`), type and projections."""

    __slots__ = ("audit", "claim", "header", "index", "name", "response_headers", "type")

    def __init__(
        self,
        name: str,
        type_: type[Any],
        *,
        header: Callable[[T], str | None] | None = None,
        response_headers: Callable[[T], Sequence[tuple[str, str]] | None] | None = None,
        audit: Mapping[str, Callable[[T], Any]] | None = None,
        claim: Callable[[T], Mapping[str, Any]] | None = None,
    ) -> None:
        if name in _BY_NAME:
            raise ValueError(f"fact {name!r} is declared twice")
        self.name = name
        self.type = type_
        """What the value is (documentation and `policy explain`; not checked at run time)."""
        self.header = header
        """The value as a header value (None: not sendable); a line break or NUL in it sends nothing."""
        self.response_headers = response_headers
        """Fields added to the forwarded response when the fact is set."""
        self.audit: Mapping[str, Callable[[T], Any]] = dict(audit or {})
        """Decision-event field → how to read it from the value."""
        self.claim = claim
        """The claims the value adds to the signed facts (JSON values), None when it is never signed."""
        self.index = len(_DECLARED)
        _DECLARED.append(self)
        _BY_NAME[name] = self
        _AUDIT_KEYS.update(dict.fromkeys(self.audit))

    def __repr__(self) -> str:
        return f"Fact({self.name!r})"


def declared_fact(name: str) -> Fact[Any] | None:
    """The fact declared under `name`, if any check module declared one."""
    return _BY_NAME.get(name)


def audit_keys() -> tuple[str, ...]:
    """Every decision-event field a fact can fill."""
    return tuple(_AUDIT_KEYS)


class Facts:
    """The verified facts of one request: one slot per declared fact, typed by its `Fact`."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: list[Any] | None = None

    def get(self, fact: Fact[T]) -> T | None:
        """The fact's value, or None when no check established it for this request."""
        values = self._values
        if values is None or fact.index >= len(values):
            return None
        value: T | None = values[fact.index]
        return value

    def set(self, fact: Fact[T], value: T) -> None:
        """Record a verified fact (a check does, once it has verified it)."""
        values = self._values
        if values is None:
            values = self._values = [None] * len(_DECLARED)
        elif fact.index >= len(values):  # declared after this request started (never in the gateway itself)
            values.extend([None] * (fact.index + 1 - len(values)))
        values[fact.index] = value

    def __contains__(self, fact: Fact[Any]) -> bool:
        return self.get(fact) is not None

    def __bool__(self) -> bool:
        return self._values is not None and any(v is not None for v in self._values)

    def items(self) -> Iterator[tuple[Fact[Any], Any]]:
        """(fact, value) of every fact set, in declaration order."""
        for i, value in enumerate(self._values or ()):
            if value is not None:
                yield _DECLARED[i], value

    def claims(self) -> dict[str, Any]:
        """The signed-facts claims of every fact set that has a `claim` projection, in declaration order."""
        out: dict[str, Any] = {}
        for i, value in enumerate(self._values or ()):
            if value is not None and (claim := _DECLARED[i].claim) is not None:
                out.update(claim(value))
        return out

    def audit_fields(self) -> dict[str, Any]:
        """The decision event's fact fields: every one a fact can fill, None where its fact is absent."""
        fields: dict[str, Any] = _AUDIT_KEYS.copy()
        if self._values is not None:
            for i, value in enumerate(self._values):
                if value is not None and (audit := _DECLARED[i].audit):
                    for key, read in audit.items():
                        fields[key] = read(value)
        return fields


class FactHeaders:
    """Config `policies.fact_headers` bound to the declared facts, once per app: fact → the header it goes in.

    A name no check declares, or a fact that cannot be a header value (a claim set), sends nothing: the same
    as a fact no check of the request's policy established."""

    __slots__ = ("entries",)

    def __init__(self, names: Mapping[str, str]) -> None:
        entries = []
        for name, header in names.items():
            fact = _BY_NAME.get(name)
            if fact is not None and fact.header is not None:
                entries.append((fact, header))
        self.entries: tuple[tuple[Fact[Any], str], ...] = tuple(entries)

    @staticmethod
    def problems(names: Mapping[str, str]) -> list[str]:
        """What is wrong with a `policies.fact_headers` mapping: a name no check declares (a typo sends nothing,
        silently), or a fact that cannot be a header value. `policy lint` reports them."""
        headers = sorted(f.name for f in _DECLARED if f.header is not None)
        out = []
        for name in names:
            fact = _BY_NAME.get(name)
            if fact is None:
                out.append(f"policies.fact_headers.{name}: no check declares a fact named {name!r} "
                           f"(facts that can be headers: {', '.join(headers)})")
            elif fact.header is None:
                out.append(f"policies.fact_headers.{name}: the fact {name!r} cannot be a header value "
                           f"(facts that can be headers: {', '.join(headers)})")
        return out

    def project(self, facts: Facts) -> dict[str, str]:
        """The headers for these facts, in config order; a value with a line break is not sent (a signed claim
        can carry one: the backend sees the fact as absent rather than a header split in two)."""
        out: dict[str, str] = {}
        values = facts._values  # the container's own module: no call per entry
        if values is None:
            return out
        size = len(values)
        for fact, header in self.entries:
            i = fact.index
            value = values[i] if i < size else None
            if value is None:
                continue
            text = fact.header(value)  # type: ignore[misc]  # entries hold only facts with a renderer
            if text and "\r" not in text and "\n" not in text and "\0" not in text:
                out[header] = text
        return out


def response_headers(responding: Sequence[Fact[Any]], facts: Facts) -> list[tuple[str, str]] | None:
    """The response fields of the `responding` facts (those with `response_headers`) set for this request."""
    out: list[tuple[str, str]] | None = None
    for fact in responding:
        value = facts.get(fact)
        if value is not None and fact.response_headers is not None:
            fields = fact.response_headers(value)
            if fields:
                out = [*out, *fields] if out is not None else list(fields)
    return out
