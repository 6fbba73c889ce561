"""The policy file format (YAML), as strict models; check parameters are validated by each check."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from ..schema import StrictModel

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class MatchSpec(StrictModel):
    """Which requests a policy applies to."""

    path: str
    """Path template, e.g. `/open-banking/v3.1/register/{ClientId}`; `{Name}` segments bind parameters."""
    methods: tuple[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], ...] = Field(min_length=1)
    """HTTP methods, upper case."""


class PolicySpec(StrictModel):
    """One policy: a route, a mode and an ordered list of checks."""

    name: str
    """Stable snake_case name, used in metrics, audit events and `policy explain`."""
    description: str = ""
    """What the policy is for, in one sentence."""
    match: MatchSpec
    mode: Literal["enforce", "audit"] = "enforce"
    """enforce: a failing check refuses the request. audit: every check runs, would-be denials are logged and
    counted, and the request is forwarded (dry run)."""
    checks: list[dict[str, Any]] = []
    """Ordered checks, each a one-key mapping `check_name: {parameters}` (or `check_name: {}`)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"expected a snake_case name (a-z, 0-9, _), got {v!r}")
        return v


class PolicyFile(StrictModel):
    """A policy file: a list of policies."""

    policies: list[PolicySpec] = Field(min_length=1)
    """The policies this file defines."""


class TestRequest(StrictModel):
    """The request of a policy test case."""

    method: str
    path: str
    headers: dict[str, str] = {}
    token: dict[str, Any] | None = None
    """Access token to sign with the test key of an issuer and send as `Authorization: Bearer`:
    `{issuer: <name>, claims: {...}, header: {...}}`; default claims (iss, aud, iat, exp, jti) are filled in."""
    body: str | None = None
    peer: str = "127.0.0.1"
    revoked: bool = False
    """Revoke the token before sending (tests the revocation path)."""


class TestExpect(StrictModel):
    """The expected decision of a policy test case."""

    decision: Literal["allow", "deny", "audit_deny"]
    status: int | None = None
    error: str | None = None
    reason: str | None = None
    check: str | None = None
    policy: str | None = None


class TestCase(StrictModel):
    """One policy test case."""

    name: str
    request: TestRequest
    expect: TestExpect


class TestFile(StrictModel):
    """A `*_test.yaml` file beside the policies."""

    cases: list[TestCase] = Field(min_length=1)
