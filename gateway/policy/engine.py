"""Compiled policies and their evaluation: decisions are values with reasons (allow | deny | audit_deny)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from ..checks.base import Check, Denial, RequestView
from ..observability.logging import get_logger
from ..state.store import StoreUnavailable
from .router import Match, Router

log = get_logger("policy")

Outcome = Literal["allow", "deny", "audit_deny"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of evaluating a policy for one request."""

    outcome: Outcome
    policy: str | None
    mode: str
    denials: tuple[Denial, ...] = ()

    @property
    def forward(self) -> bool:
        """True when the request goes upstream (allowed, or denied in audit mode)."""
        return self.outcome != "deny"

    @property
    def denial(self) -> Denial | None:
        """The first denial (the one a client sees in enforce mode)."""
        return self.denials[0] if self.denials else None


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A policy ready to run: its checks are built once, with parsed parameters."""

    name: str
    description: str
    mode: Literal["enforce", "audit"]
    template: str
    methods: tuple[str, ...]
    checks: tuple[Check, ...]  # type: ignore[type-arg]
    source: str

    @property
    def needs_body(self) -> bool:
        """True when any check reads the body."""
        return any(c.needs_body for c in self.checks)

    async def evaluate(
        self, request: RequestView, load_body: Callable[[], Awaitable[bytes]] | None = None
    ) -> Decision:
        """Run the checks in order; enforce stops at the first denial, audit runs them all.

        The body is read (bounded) only when the first check that needs it is reached, so a request
        refused for its token never has its body read.
        """
        denials: list[Denial] = []
        audit = self.mode == "audit"
        for check in self.checks:
            if check.needs_body and request.body is None:
                request.body = await load_body() if load_body is not None else b""
            try:
                denial = await check.evaluate(request)
            except StoreUnavailable:
                # Fail closed: the state a check depends on is unreachable.
                denial = Denial(503, "temporarily_unavailable", "security state store unavailable, retry later",
                                "state_unavailable", (("Retry-After", "1"),), check.name)
            if denial is not None:
                denials.append(denial)
                if not (audit or check.audit_only):
                    return Decision("deny", self.name, self.mode, tuple(denials))
        if not denials:
            return Decision("allow", self.name, self.mode)
        return Decision("audit_deny", self.name, self.mode, tuple(denials))

    async def after_response(self, request: RequestView, status: int) -> None:
        """Response hooks of every check (enforce mode only: audit mode has no side effects)."""
        if self.mode != "enforce":
            return
        for check in self.checks:
            await check.after_response(request, status)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """An immutable, validated set of policies; a reload builds a new one and swaps the reference."""

    version: str
    policies: tuple[CompiledPolicy, ...]
    router: Router[CompiledPolicy]
    unmatched_status: int

    def match(self, method: str, raw_path: str) -> Match[CompiledPolicy] | None:
        """The policy for a request, or why none applies."""
        return self.router.match(method, raw_path)

    def jwks_uris(self) -> tuple[str, ...]:
        """Every key set the policies need, for prefetching."""
        return tuple(sorted({u for p in self.policies for c in p.checks for u in c.jwks_uris()}))

    def unmatched(self, method: str, match: Match[CompiledPolicy] | None) -> Denial:
        """The denial for a request no policy applies to; it is never forwarded."""
        if match is not None and match.allowed:
            return Denial(405, "method_not_allowed", f"{method} is not allowed here", "method_not_allowed",
                          (("Allow", ", ".join(match.allowed)),), "router")
        if self.unmatched_status == 403:
            return Denial(403, "forbidden", "no policy allows this request", "no_policy", (), "router")
        return Denial(404, "not_found", "no such endpoint", "no_policy", (), "router")
