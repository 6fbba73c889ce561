"""Unit-level helpers for the check tests: one check instance on in-memory services, and a request view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from multidict import CIMultiDict

from gateway.checks.base import Check, RequestView
from gateway.checks.facts import Fact, Facts
from gateway.checks.services import Services
from gateway.checks.token import TOKEN, VerifiedToken
from gateway.config import Settings
from gateway.runtime import build_runtime

C = TypeVar("C", bound=Check[Any])

NOW = 1_700_000_000.0
ISS = "https://bank.example/as"


def services(**settings: Any) -> Services:
    """Services on the memory store (no network), from a settings dict such as {"trust": {…}}."""
    return build_runtime(Settings.model_validate(settings), None).services


def make_check(kind: type[C], svc: Services | None = None, **params: Any) -> C:
    """One instance of a check kind with `params` validated by its own parameter model."""
    return kind(kind.Params.model_validate(params), svc or services())


def token(client_id: str = "client-a", jti: str = "j1", iat: float = NOW) -> VerifiedToken:
    """A verified access token of `client_id` (as `bearer_token` would record it)."""
    return VerifiedToken("bank", ISS, client_id, jti, iat, iat + 300, frozenset(), None, {})


def view(
    method: str = "GET",
    path: str = "/x",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    *,
    body: bytes | None = None,
    params: dict[str, str] | None = None,
    tok: VerifiedToken | None = None,
    facts: Mapping[Fact[Any], Any] | None = None,
    now: float = NOW,
    dry_run: bool = False,
) -> RequestView:
    """A request as checks see it, with `facts` (fact → value) verified; `tok` is recorded as the token fact."""
    all_facts = Facts()
    for fact, value in (facts or {}).items():
        all_facts.set(fact, value)
    if tok is not None:
        all_facts.set(TOKEN, tok)
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    return RequestView(method, path, CIMultiDict(items), params=params or {}, body=body, facts=all_facts, now=now,
                       dry_run=dry_run, policy="p")
