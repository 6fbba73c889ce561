"""The policy file format (YAML), as strict models; check parameters are validated by each check."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from ..config.schema import StrictModel

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class MatchSpec(StrictModel):
    """Which requests a policy applies to."""

    path: str
    """Path template, e.g. `/open-banking/v3.1/register/{ClientId}`; `{Name}` segments bind parameters."""
    methods: tuple[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], ...] = Field(min_length=1)
    """HTTP methods, upper case."""


class StreamBodySpec(StrictModel):
    """Forward the request body as it arrives instead of reading it in full first (request buffering)."""

    max_bytes: PositiveInt
    """Largest body accepted on this route (413 beyond; the upstream connection is then closed)."""
    idle_seconds: PositiveFloat = 10.0
    """The longest pause while the body arrives (408 and the upstream connection closed)."""
    total_seconds: PositiveFloat = 300.0
    """The longest the whole body may take."""


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
    stream_body: StreamBodySpec | None = None
    """Stream the request body upstream as it arrives, under the client's own framing, with these limits instead
    of `server.max_body_bytes` and `server.timeouts` (for large uploads). No check of the policy may read the
    body. A stalled body then holds an upstream connection for up to `idle_seconds`: use sparingly."""
    accept_content_encoding: tuple[str, ...] = ()
    """Content codings (e.g. `gzip`) a request body may carry on this route. By default a coded body is refused
    (415): the gateway never decompresses, so an accepted one is forwarded byte for byte, and a check of the
    policy that reads the body refuses it (415 `plaintext_needed`)."""
    allow_body_on: tuple[Literal["GET", "HEAD", "DELETE", "OPTIONS"], ...] = ()
    """Methods that may carry a request body on this route. By default a body on GET, HEAD, DELETE or OPTIONS
    is refused (400 `body_not_allowed`): backends disagree on whether such a body exists."""

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


class SoftwareStatementSpec(StrictModel):
    """The SSA of a test registration request, signed with a key generated for the run for its directory."""

    directory: str | None = None
    """Name in config `trust.directories` whose key signs it (default: the first configured)."""
    claims: dict[str, Any] = {}
    """Overrides of the default SSA claims (an Active org with roles AISP, PISP, CBPII); `null` removes one."""
    header: dict[str, Any] = {}
    """Overrides of the JWS header (`alg`, `kid`, `typ`, extra members; `alg: none` sends it unsigned)."""
    signed_by: Literal["directory", "attacker"] = "directory"
    """`attacker`: signed by another key under the directory's kid."""
    raw: str | None = None
    """Send this string as the software_statement claim instead."""


class RegistrationSpec(StrictModel):
    """A registration request JWS built for the run and sent as the body (Content-Type application/jose)."""

    ssa: SoftwareStatementSpec = SoftwareStatementSpec()
    claims: dict[str, Any] = {}
    """Overrides of the default request claims (iss = software_id, aud, iat, exp = now + 300, jti, FAPI
    metadata, redirect_uris from the SSA); `null` removes one."""
    header: dict[str, Any] = {}
    """Overrides of the JWS header (`alg`, `kid`, extra members such as `jku`; `alg: none` sends it unsigned)."""
    signed_by: Literal["tpp", "attacker"] = "tpp"
    """`tpp`: the software's signing key, published in its software JWKS; `attacker`: another key, same kid."""
    replayed: bool = False
    """Send the same request once before this one (tests `replay`)."""
    encoding: Literal["jose", "json_string"] = "jose"
    """`json_string`: the JWS as a JSON string with Content-Type application/json."""


class ClientCertSpec(StrictModel):
    """A TPP transport certificate forwarded as the ingress would (config `trust.client_certificate`)."""

    cert: Literal["tpp", "unregistered", "expired", "not_yet_valid"] = "tpp"
    """`tpp`: the software's transport certificate (a `use: tls` key in its JWKS); `unregistered`: a valid
    certificate absent from the JWKS; `expired` / `not_yet_valid`: listed in the JWKS but out of date."""
    raw: str | None = None
    """Send this header value instead."""


class TestRequest(StrictModel):
    """The request of a policy test case."""

    method: str
    path: str
    headers: dict[str, str] = {}
    token: dict[str, Any] | None = None
    """Access token to sign with the test key of an issuer and send as `Authorization: Bearer`:
    `{issuer: <name>, claims: {...}, header: {...}}`; default claims (iss, aud, iat, exp, jti) are filled in;
    `cnf_client_cert: true` binds it to the test client certificate (RFC 8705 `cnf.x5t#S256`)."""
    registration: RegistrationSpec | None = None
    """A signed registration request (with its SSA) as the body; excludes `body`."""
    client_cert: ClientCertSpec | None = None
    """A client certificate in the configured forwarding header."""
    body: str | None = None
    peer: str | None = None
    """The address the request comes from. Not set: the configured ingress — the first address of config
    `trust.client_certificate.trusted_proxies` (so a forwarded certificate is believed, as behind the real
    ingress), or 127.0.0.1 when that list is empty."""
    revoked: bool = False
    """Revoke the token before sending (tests the revocation path)."""

    @model_validator(mode="after")
    def _one_body(self) -> TestRequest:
        if self.registration is not None and self.body is not None:
            raise ValueError("give either body or registration, not both")
        return self


class TestExpect(StrictModel):
    """The expected decision of a policy test case."""

    decision: Literal["allow", "deny", "audit_deny", "refused"]
    """`refused`: the check refuses, enforced or not — `deny` where it is enforced, `audit_deny` where it runs
    in audit mode (its policy's `mode` or config `policies.check_modes`); for a case that must hold under a
    laptop's config and a production one alike."""
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
