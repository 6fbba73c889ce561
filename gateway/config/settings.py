"""config.yaml → validated, typed, immutable settings; errors name the file, the key path and the line."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator

from .schema import (
    NonNegativeSeconds,
    Port,
    PositiveInt,
    PositiveSeconds,
    StrictModel,
    located_errors,
)
from .yamlsource import YamlDocument, YamlSourceError, load_yaml

ENV_PREFIX = "DCRGW_"
"""Environment overrides: DCRGW_<SECTION>__<KEY>[__<KEY>…], e.g. DCRGW_UPSTREAM__URL."""

CONFIG_ENV = "DCRGW_CONFIG"
"""Path of the config file when --config is not given."""


class ConfigError(Exception):
    """Invalid configuration; `messages` are complete, user-facing lines."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


def _cidrs(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"expected an IP address or CIDR, got {item!r}") from None
    return value


DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"
"""`server.public_url` when the config does not set it."""


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL for {what}, got {value!r}")
    return value.rstrip("/")


class Listen(StrictModel):
    """A TCP listen address."""

    host: str = "127.0.0.1"
    """Interface to bind; 0.0.0.0 inside a container."""
    port: Port = 8080
    """TCP port; 0 picks a free one (tests)."""


class ServerTimeouts(StrictModel):
    """How long the public listener waits for a client, in seconds (slow clients hold no upstream connection:
    bodies are read in full before one is taken)."""

    header_read_seconds: PositiveSeconds = 10.0
    """From the first byte of a request to the end of its headers; then the connection is closed."""
    body_idle_seconds: PositiveSeconds = 10.0
    """The longest pause while a request body arrives; then 408 and the connection is closed."""
    body_total_seconds: PositiveSeconds = 30.0
    """The longest a whole request body may take to arrive; then 408 and the connection is closed."""
    send_seconds: PositiveSeconds = 30.0
    """The longest a response write to the client may wait (a client that stops reading); then the connection
    is closed and its upstream connection let go."""
    keepalive_seconds: PositiveSeconds = 75.0
    """How long an idle keep-alive connection stays open between requests (longer than the load balancer's
    idle timeout, so the balancer closes first)."""


class ServerSettings(StrictModel):
    """The public (TPP-facing) and admin (probes, metrics) listeners."""

    public: Listen = Listen(port=8080)
    """Where TPPs connect."""
    admin: Listen = Listen(port=9090)
    """Health, readiness and metrics; expose to the cluster only."""
    public_url: str = DEFAULT_PUBLIC_URL
    """The URL TPPs use to reach the gateway (advertised as token and registration endpoint). The URLs that
    name the gateway default to it when not set: `trust.registration_audiences`, a token issuer's `issuer`
    (with its `audiences`), `sandbox.issuer` and `sandbox.access_token_audience`; `config check` reports
    those that disagree with it (docs/deployment.md, "URLs that agree")."""
    max_body_bytes: PositiveInt = 1_048_576
    """Largest request body accepted; larger ones get 413. Bodies are read in full (bounded by this and
    `timeouts`) before the request is forwarded."""
    timeouts: ServerTimeouts = ServerTimeouts()
    drop_request_headers: tuple[str, ...] = ()
    """More inbound header names removed before forwarding, in any spelling (case, `_` = `-`), besides those the
    gateway always removes (docs/security.md): e.g. headers your backend trusts from its own infrastructure."""
    max_connections_per_client: PositiveInt = 256
    """Open connections one client address may hold at once (its address behind `trusted_proxies` counts
    requests in flight instead of connections); beyond it, new connections are closed at once and requests
    get 429."""
    workers: PositiveInt = 1
    """Worker processes sharing the listening ports (SO_REUSEPORT); `serve --workers N` overrides it.
    More than one needs `state.backend: redis` (security state must be shared) and fixed ports."""
    server_header: str = ""
    """The `Server` field of every answer on every listener (public, admin, sandbox), errors included. Empty
    (the default): none is sent — aiohttp's own names the Python and aiohttp versions. Else sent as is, e.g.
    `dcr-gateway` (no version: it helps an attacker pick exploits, not a TPP)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or CIDRs of the load balancers / ingresses in front of the gateway. When a request comes from
    one, its client address (`rate_limit` with `key: peer`) is the nearest X-Forwarded-For entry, right to
    left, that is not one of them; empty: the connection's own peer address, X-Forwarded-For ignored."""

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v, "public_url")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _cidrs(v)

    @field_validator("server_header")
    @classmethod
    def _server_header(cls, v: str) -> str:
        # RFC 9110 §10.2.4: product tokens and comments, visible ASCII and spaces (no CR/LF: header injection).
        if len(v) > 256 or v != v.strip() or any(not (0x20 <= ord(c) < 0x7F) for c in v):
            raise ValueError("expected visible ASCII characters and inner spaces (e.g. dcr-gateway), or \"\" for none")
        return v


class UpstreamTimeouts(StrictModel):
    """Upstream timeouts in seconds."""

    connect: PositiveSeconds = 2.0
    """Establishing a connection (from the pool or new)."""
    read: PositiveSeconds = 15.0
    """Between two reads of the upstream response."""
    total: PositiveSeconds = 30.0
    """Whole upstream exchange."""


class UpstreamPool(StrictModel):
    """Upstream connection pool."""

    max_connections: PositiveInt = 256
    """Simultaneous upstream connections."""
    keepalive_seconds: PositiveSeconds = 30.0
    """How long an idle upstream connection is kept."""


HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
"""An HTTP field name (RFC 9110 §5.1 token)."""
HeaderName = Annotated[str, Field(pattern=HEADER_NAME)]
"""A configured header name: every header the gateway sets or reads by configuration is one."""

FACTS_JWKS_PATH = "/facts/jwks.json"
"""Where the admin listener publishes the public key of `upstream.signed_facts`."""


class SignedFactsSettings(StrictModel):
    """What the gateway verified, signed for the backend: a short-lived compact JWS in one request header
    (as Google IAP's `x-goog-iap-jwt-assertion` or Cloudflare Access's `Cf-Access-Jwt-Assertion`). Sent only on
    requests every check allowed; the backend checks its signature, `iss`, `aud`, `exp`, `htm` and `htu`
    (docs/architecture.md, "Signed facts"). The public key is published on the admin listener at
    `/facts/jwks.json`."""

    enabled: bool = False
    """Send the signed facts header on every allowed request."""
    header: HeaderName = "X-DCR-Assertion"
    """The request header that carries the JWS (an incoming copy is always stripped)."""
    audience: str | None = None
    """`aud` of the JWS: the backend. Not set: upstream.url."""
    lifetime_seconds: PositiveInt = 60
    """`exp` is this many seconds after `iat`: long enough for the hop to the backend, no longer."""
    key_file: str | None = None
    """PEM private key that signs (EC P-256: ES256; RSA of 2048 bits or more: PS256), relative to the config
    file; `kid` is its RFC 7638 thumbprint. Not set: a key generated at start and kept in memory, which suits
    exactly one process — with `serve --workers N` or several replicas, every instance must sign with the key
    the backend trusts, so configure one (a Kubernetes Secret)."""
    published_key_files: tuple[str, ...] = ()
    """PEM files (public or private keys; only the public half is read) whose keys `/facts/jwks.json`
    publishes besides the signing key, for a rotation without a gap: publish the next key before signing with
    it, and the previous one for `lifetime_seconds` (plus the backend's cache time) after."""

    @field_validator("audience")
    @classmethod
    def _audience(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v, "upstream.signed_facts.audience")


class UpstreamSettings(StrictModel):
    """The bank's registration backend (the sandbox by default)."""

    url: str = "http://127.0.0.1:8081"
    """Base URL requests are forwarded to; the request path is appended."""
    timeouts: UpstreamTimeouts = UpstreamTimeouts()
    pool: UpstreamPool = UpstreamPool()
    signed_facts: SignedFactsSettings = SignedFactsSettings()

    @property
    def facts_audience(self) -> str:
        """`aud` of the signed facts: `signed_facts.audience`, else the upstream URL."""
        return self.signed_facts.audience or self.url

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v, "upstream.url")


class ShutdownSettings(StrictModel):
    """Graceful shutdown on SIGTERM."""

    readiness_delay_seconds: NonNegativeSeconds = 5.0
    """After SIGTERM, /readyz answers 503 for this long before the listener stops accepting."""
    drain_timeout_seconds: NonNegativeSeconds = 20.0
    """Then in-flight requests get this long to finish."""


class LoggingSettings(StrictModel):
    """Log output."""

    format: Literal["json", "console", "auto"] = "auto"
    """json: one JSON object a line (production); console: readable; auto: console on a TTY, else json."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Minimum level."""


class Introspection(StrictModel):
    """RFC 7662 token introspection for opaque tokens."""

    endpoint: str
    """Introspection URL (POST, form-encoded `token`)."""
    client_id: str
    """The gateway's client id at the authorization server."""
    client_secret_env: str
    """Name of the environment variable holding the gateway's client secret (never inline)."""
    cache_seconds: PositiveSeconds = 60.0
    """How long an `active` answer is reused; never beyond the token's `exp`."""
    timeout_seconds: PositiveSeconds = 3.0
    """Per-call timeout."""

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v, "endpoint")


class TokenIssuer(StrictModel):
    """An authorization server whose access tokens the gateway accepts."""

    issuer: str = ""
    """Exact `iss` claim value of its tokens. Not set: `server.public_url` (an authorization server published
    under the gateway's URL, as the sandbox is)."""
    jwks_uri: str | None = None
    """Where its token-signing keys are published (JWT access tokens)."""
    audiences: tuple[str, ...] = ()
    """Accepted `aud` values; empty means `aud` is not checked for this issuer. Not set, and `issuer` not set
    either: `[server.public_url]` (tokens of the authorization server behind the gateway name the gateway);
    with an explicit `issuer`, empty."""
    algorithms: tuple[Literal["PS256", "ES256", "RS256", "PS384", "PS512", "ES384"], ...] = ("PS256", "ES256")
    """Signature algorithms accepted (never `none`, never HMAC)."""
    token_types: tuple[str, ...] = ("at+jwt", "JWT")
    """Accepted JWS `typ` header values (RFC 9068 §2.1: `at+jwt`)."""
    client_id_claim: str = "client_id"
    """Claim naming the OAuth client the token was issued to."""
    introspection: Introspection | None = None
    """RFC 7662 endpoint for opaque (non-JWT) tokens."""

    @model_validator(mode="after")
    def _has_key_source(self) -> TokenIssuer:
        if not self.issuer:
            raise ValueError("issuer must not be empty (leave it out to use server.public_url)")
        if self.jwks_uri is None and self.introspection is None:
            raise ValueError("needs jwks_uri (JWT tokens) or introspection (opaque tokens)")
        if self.jwks_uri is not None:
            _http_url(self.jwks_uri, "jwks_uri")
        return self


class JwksSettings(StrictModel):
    """The JWKS cache shared by every check (Envoy jwt_authn-style)."""

    ttl_seconds: PositiveSeconds = 300.0
    """A fetched key set is reused this long before it is refetched."""
    min_refetch_interval_seconds: NonNegativeSeconds = 30.0
    """An unknown `kid` triggers a refetch at most this often per URI (no fetch storms)."""
    stale_max_seconds: NonNegativeSeconds = 3600.0
    """When refetching fails, the last good keys are served at most this long, then requests fail closed."""
    timeout_seconds: PositiveSeconds = 3.0
    """Per-fetch timeout."""
    max_bytes: PositiveInt = 262_144
    """Largest JWKS document accepted."""


class Directory(StrictModel):
    """A software-statement issuer (e.g. the Open Banking Directory) whose SSAs the gateway accepts."""

    issuer: str = Field(min_length=1)
    """Exact `iss` of its SSAs, e.g. `OpenBanking Ltd`; an SSA is matched to its directory by this value."""
    jwks_uri: str
    """Where the directory publishes its SSA-signing keys (operator-configured: fetched as given)."""
    algorithms: tuple[Literal["PS256", "ES256"], ...] = Field(default=("PS256", "ES256"), min_length=1)
    """SSA signature algorithms accepted (OB Directory profile: PS256 or ES256; never `none`, never HMAC)."""

    @field_validator("jwks_uri")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v, "jwks_uri")


class SoftwareJwksPolicy(StrictModel):
    """Which TPP key-set URLs may be fetched: the SSA's `software_jwks_endpoint` is chosen by others, so every
    fetch goes through the SSRF guard (scheme, host allow-list, every resolved address vetted, no redirects).
    Size and time limits are those of `trust.jwks`. The defaults are the production ones."""

    allowed_hosts: tuple[str, ...] = ()
    """Host names (exact, or `*.suffix`) TPP key sets may live on, e.g. `keystore.openbanking.org.uk`;
    empty: any host that resolves only to public addresses."""
    allow_http: bool = False
    """Allow plain http (the loopback sandbox only; OB requires TLS for JWKS)."""
    allow_loopback: bool = False
    """Allow 127.0.0.0/8 and ::1 (the loopback sandbox only)."""
    allow_private: bool = False
    """Allow RFC 1918, CGNAT and fc00::/7 addresses (a bank-internal key mirror). Link-local (cloud metadata),
    multicast and reserved addresses are never allowed."""


class CertificateRevocationSettings(StrictModel):
    """How the revocation of TPP certificates is checked (OCSP, RFC 6960; CRLs, RFC 5280), when a policy's
    `client_certificate` asks for it (its `revocation` parameter). The responder and CRL URLs come from the
    certificates themselves, chosen by their CAs: every fetch goes through the SSRF guard (scheme, host allow-list,
    every resolved address vetted before any connection, no redirects) and is bounded in time and size."""

    allowed_hosts: tuple[str, ...] = ()
    """Host names (exact, or `*.suffix`) OCSP responders and CRLs may live on; empty: any host that resolves only
    to public addresses."""
    allow_http: bool = True
    """Allow plain http: OCSP and CRLs are served over http by nearly every CA (RFC 5280 §4.2.1.13, RFC 6960
    appendix A); their answers are signed, and only a signature by the issuer counts."""
    allow_loopback: bool = False
    """Allow 127.0.0.0/8 and ::1 (the loopback sandbox's test QTSP only)."""
    allow_private: bool = False
    """Allow RFC 1918, CGNAT and fc00::/7 addresses (a bank-internal OCSP or CRL mirror). Link-local (cloud
    metadata), multicast and reserved addresses are never allowed."""
    timeout_seconds: PositiveSeconds = 5.0
    """Per fetch: DNS, connect and the whole answer."""
    max_crl_bytes: PositiveInt = 8_388_608
    """Largest CRL accepted."""
    max_ocsp_response_bytes: PositiveInt = 65_536
    """Largest OCSP response accepted."""
    ocsp_cache_seconds: PositiveSeconds = 300.0
    """How long an OCSP answer without nextUpdate is reused (answers with one are reused until it)."""
    crl_cache_seconds: PositiveSeconds = 3600.0
    """How long a CRL without nextUpdate is reused (CRLs with one are reused until it, never past it + skew)."""
    failed_refetch_interval_seconds: NonNegativeSeconds = 5.0
    """After a failed fetch, no new attempt at that URL before this (an unreachable responder is not hammered)."""
    max_cached: PositiveInt = 1024
    """CRLs, and OCSP answers, kept in memory (each); the least recently used are forgotten first."""
    ocsp_hash: Literal["sha1", "sha256"] = "sha1"
    """Hash of the OCSP CertID: sha1 is what every responder understands (RFC 5019 §2.1.1); sha256 where the
    responder requires it."""
    ocsp_nonce: bool = False
    """Send an RFC 8954 nonce with each OCSP request (and refuse an answer echoing another). Off by default:
    responders built for caching (RFC 5019) ignore it."""


class ClientCertificateSettings(StrictModel):
    """Where the TPP's mTLS certificate comes from: the ingress that terminated TLS forwards it in a header."""

    header: HeaderName = "ssl-client-cert"
    """Header carrying the certificate (ingress-nginx: `ssl-client-cert`; Envoy: `x-forwarded-client-cert`;
    RFC 9440: `Client-Cert`)."""
    format: Literal["nginx", "xfcc", "rfc9440"] = "nginx"
    """nginx: URL-encoded PEM (`$ssl_client_escaped_cert`); xfcc: Envoy `Cert="<URL-encoded PEM>"` element;
    rfc9440: `:<base64 DER>:` (an RFC 8941 byte sequence)."""
    chain_header: HeaderName | None = None
    """rfc9440 only: the header with the rest of the client's chain (RFC 9440 §2.3). Not set:
    `Client-Cert-Chain`. (xfcc carries the chain in the `Chain=` key of its element; nginx's
    `$ssl_client_escaped_cert` is the leaf alone.) Used when a check validates the chain; the ingress must set
    or remove it as it does the certificate header."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or CIDRs of the proxies allowed to send that header (the request's peer address must be one);
    empty: no certificate header is ever trusted, so checks that need a certificate refuse."""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _cidrs(v)


Purpose = Literal["transport", "signing"]
"""What a set of trust anchors vouches for: `transport` — the TPP's mTLS certificate (eIDAS QWAC, OB transport
certificate); `signing` — the certificates in the `x5c` of the TPP's signing keys (eIDAS QSealC, OB signing
certificate)."""


class CertificateAuthority(StrictModel):
    """One named set of trust anchors (e.g. the OB issuing CAs, or the eIDAS QTSPs a bank accepts) for one
    purpose. PEM files, relative to the config file, each holding one or more CA certificates; read and parsed
    once at start."""

    purpose: Purpose
    """`transport` (QWAC / OB transport) or `signing` (QSealC / OB signing): checks accept a set only for its
    purpose (`client_certificate` `anchors`, `registration_request` `x5c_anchors`)."""
    roots: tuple[str, ...] = Field(min_length=1)
    """PEM files of the roots: the trust anchors a chain must end in."""
    intermediates: tuple[str, ...] = ()
    """PEM files of issuing CAs that may complete a chain the client presents without them (they are not
    trusted by themselves: each must chain to a root)."""


class TrustSettings(StrictModel):
    """Environment-specific trust anchors, referenced by name from policies."""

    token_issuers: dict[str, TokenIssuer] = {}
    """Authorization servers by name (policies say `issuers: [name]`)."""
    clock_skew_seconds: NonNegativeSeconds = 30.0
    """Leeway for exp / nbf / iat comparisons."""
    revocation_ttl_seconds: PositiveSeconds = 86400.0
    """How long a client-wide revocation (after a confirmed DELETE) is kept: at least the longest token lifetime."""
    jwks: JwksSettings = JwksSettings()
    directories: dict[str, Directory] = {}
    """Trusted software-statement issuers by name; an SSA from any other issuer is refused
    (`unapproved_software_statement`)."""
    software_jwks: SoftwareJwksPolicy = SoftwareJwksPolicy()
    """SSRF guard for the TPP key sets named by SSAs (`software_jwks_endpoint`)."""
    registration_audiences: tuple[str, ...] = ()
    """Accepted `aud` values of registration requests (the authorization server's issuer or the bank's OB
    organisation id). Not set: `[server.public_url]`. Empty (`[]`): `aud` must be present but is not
    matched."""
    client_certificate: ClientCertificateSettings = ClientCertificateSettings()
    """How the TPP's transport certificate reaches the gateway."""
    certificate_authorities: dict[str, CertificateAuthority] = {}
    """Trust anchors for certificate chains, by name (policies say `anchors: [name]`); empty: no chain is
    validated. The sandbox's test CA is `<sandbox.state_dir>/transport-ca.pem` (docs/deployment.md)."""
    revocation: CertificateRevocationSettings = CertificateRevocationSettings()
    """How TPP certificate revocation (OCSP, CRL) is checked, for policies that ask for it."""

    @model_validator(mode="after")
    def _distinct_directory_issuers(self) -> TrustSettings:
        seen: dict[str, str] = {}
        for name, directory in self.directories.items():
            if directory.issuer in seen:
                raise ValueError(f"directories {seen[directory.issuer]} and {name} have the same issuer")
            seen[directory.issuer] = name
        return self


PROFILE_DIRS = {"bank": "policies", "ob_standard": "policies/ob_standard"}
"""The shipped policy directory of each profile (relative to the config file)."""

PROFILE_ENFORCED_CHECKS = {"bank": (), "ob_standard": ("client_certificate",)}
"""Checks a profile authenticates requests with: never put in audit by `check_modes` or a policy."""

CheckModeName = Literal["enforce", "audit"]


@dataclass(frozen=True, slots=True)
class CheckMode:
    """The mode one check of one policy runs in, and where it comes from (`resolve_check_mode`)."""

    mode: CheckModeName
    source: Literal["default", "policy", "config", "profile"]
    """default: neither the policy nor the config says; policy: the check's `mode` in the policy file;
    config: `policies.check_modes` (the operator's override, which wins); profile: the profile always
    enforces this check (`PROFILE_ENFORCED_CHECKS`)."""
    policy: CheckModeName | None = None
    """What the policy file says for this check (its `mode` parameter), None when it says nothing."""
    config: CheckModeName | None = None
    """What config `policies.check_modes` says for this check kind, None when it says nothing."""

    @property
    def audit(self) -> bool:
        """Denials are reported (audit_deny) but not enforced."""
        return self.mode == "audit"

    def describe(self) -> str:
        """`audit (check_modes in the config; policy says enforce)`: the mode and both sources."""
        if self.source == "default":
            return self.mode
        if self.source == "policy":
            return f"{self.mode} (policy)"
        if self.source == "profile":
            overruled = [f"{w} says audit" for w, m in (("check_modes", self.config), ("policy", self.policy))
                         if m == "audit"]
            return f"{self.mode} (the profile always enforces it{'; ' if overruled else ''}{', '.join(overruled)})"
        policy = f"; policy says {self.policy}" if self.policy is not None else ""
        return f"{self.mode} (policies.check_modes in the config{policy})"


def resolve_check_mode(check: str, policy: str | None, check_modes: Mapping[str, str],
                       pinned: Iterable[str] = ()) -> CheckMode:
    """The mode a check runs in, the one rule every consumer uses (the policy compiler, `policy explain`, the
    OpenAPI document): a check the profile authenticates with (`pinned`) is always enforced; otherwise config
    `policies.check_modes` wins when it names the check kind (the operator's override: forcing audit fleet-wide
    during an incident, or enforcement over a policy's audit), then the check's own `mode` in the policy file,
    then enforce. A policy whose own `mode` is audit dry-runs every check whatever this says (the engine)."""
    said = policy if policy in ("enforce", "audit") else None
    configured = check_modes.get(check)
    config = configured if configured in ("enforce", "audit") else None
    if check in pinned:
        return CheckMode("enforce", "profile", said, config)  # type: ignore[arg-type]
    if config is not None:
        return CheckMode(config, "config", said, config)  # type: ignore[arg-type]
    if said is not None:
        return CheckMode(said, "policy", said)  # type: ignore[arg-type]
    return CheckMode("enforce", "default")


class PolicySettings(StrictModel):
    """Where policies come from and what happens to requests no policy matches."""

    profile: Literal["bank", "ob_standard"] = "bank"
    """The API profile, one switch: `bank` — the bank's page, a bearer token and a `client_id` header on every
    call (policies/); `ob_standard` — the Open Banking standard profile, POST authenticated by the TPP's
    transport certificate alone (policies/ob_standard/). It chooses the default of `dir`, and `ob_standard`
    always enforces `client_certificate` (the check that authenticates its registrations): a `check_modes`
    audit for it is ignored, and `config check` says so."""
    dir: str = "policies"
    """Directory of policy YAML files (relative to the config file). `*_test.yaml` files hold test cases. Not
    set: the profile's, `policies` (bank) or `policies/ob_standard` (ob_standard)."""
    unmatched_status: Literal[403, 404] = 404
    """Status for a request that matches no policy; it is never forwarded."""
    reload_interval_seconds: NonNegativeSeconds = 2.0
    """How often the directory is checked for changes (0 disables polling; SIGHUP still reloads)."""
    check_modes: dict[str, Literal["enforce", "audit"]] = {}
    """Per check kind, `audit` makes its denials reported but not enforced in every policy (e.g. the
    sandbox runs `client_certificate` in audit mode in the bank profile: there is no mTLS ingress on a
    laptop), `enforce` enforces them. The operator's override: it wins over a check's own `mode` in a policy,
    both ways (docs/policies.md, "Which mode wins"). Never audit for the checks the profile authenticates
    with (`ob_standard`: `client_certificate`)."""
    fact_headers: dict[str, HeaderName] = {
        "client_id": "X-DCR-Client-Id",
        "software_id": "X-DCR-Software-Id",
        "org_id": "X-DCR-Org-Id",
        "software_roles": "X-DCR-Software-Roles",
        "client_cert_s256": "X-DCR-Client-Cert-S256",
    }
    """Verified facts sent to the backend, fact name → header the gateway sets itself (an HTTP field name: an RFC
    9110 token, no space or colon). Incoming copies of these headers are always stripped, so the backend can trust
    them."""

    _ignored_modes: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _profile_dir(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("dir") is None:
            profile = data.get("profile", "bank")
            data = {**data, "dir": PROFILE_DIRS.get(profile, PROFILE_DIRS["bank"]) if isinstance(profile, str)
                    else PROFILE_DIRS["bank"]}
        return data

    @model_validator(mode="after")
    def _profile_enforces(self) -> PolicySettings:
        # SECURITY: in ob_standard the client certificate is the only authentication of POST; auditing it
        # would forward unauthenticated registrations (fail closed: the profile wins over check_modes).
        ignored = tuple(c for c in PROFILE_ENFORCED_CHECKS[self.profile] if self.check_modes.get(c) == "audit")
        if ignored:
            # The model is frozen; this runs once, while it is being built.
            object.__setattr__(self, "check_modes", {**self.check_modes, **dict.fromkeys(ignored, "enforce")})
            self._ignored_modes = ignored
        return self

    @property
    def ignored_check_modes(self) -> tuple[str, ...]:
        """Checks whose `check_modes` audit the profile overrode (they are enforced)."""
        return self._ignored_modes

    def check_mode(self, check: str, policy: str | None = None) -> CheckMode:
        """The mode check kind `check` runs in where its policy says `policy` (its `mode`, None: nothing), by
        the one rule (`resolve_check_mode`): the profile's checks enforced, then `check_modes`, then the policy."""
        configured = {**self.check_modes, **dict.fromkeys(self._ignored_modes, "audit")}  # as the file says
        return resolve_check_mode(check, policy, configured, PROFILE_ENFORCED_CHECKS[self.profile])


class AuditSettings(StrictModel):
    """The audit trail: one hash-chained JSON event per request that reaches the policy engine."""

    sink: Literal["stdout", "file", "off"] = "stdout"
    """stdout (with the logs, marked `"kind":"dcr_gateway_audit"`), an append-only file, or off."""

    @field_validator("sink", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false
    path: str = "audit.log"
    """File for the `file` sink (relative to the config file)."""


class SandboxSettings(StrictModel):
    """The sandbox bank (reference backend). Never enabled in production."""

    enabled: bool = False
    """Start the sandbox in the same process as the gateway (`make run`)."""
    listen: Listen = Listen(port=8081)
    """Sandbox listener (DCR backend, token endpoint, developer portal)."""
    state_dir: str = ".sandbox"
    """Keys and the SQLite store; relative paths are relative to the config file."""
    issuer: str | None = None
    """OAuth issuer: `iss` of access tokens and discovery's `issuer`. Not set: server.public_url (discovery
    is served through the gateway, and its issuer must be the URL it is fetched under)."""
    access_token_audience: str | None = None
    """`aud` of issued access tokens (RFC 9068 §2.2). Not set: server.public_url (the gateway)."""
    access_token_lifetime_seconds: PositiveInt = 3600
    """Lifetime of issued access tokens (`expires_in`)."""
    directory_issuer: str = "OpenBanking Ltd"
    """`iss` of the SSAs the sandbox directory mints (the OB Directory's name)."""
    clock_skew_seconds: NonNegativeSeconds = 60.0
    """Leeway for exp/iat/nbf when checking tokens, client assertions and registration requests."""
    max_body_bytes: PositiveInt = 65536
    """Largest request body the sandbox reads; larger bodies get a 400 JSON error."""
    portal_url: str | None = None
    """Base URL of the sandbox listener in hosted TPP `jwks_uri`s; default the URL the request came in on."""
    tpp_jwks_allowed_hosts: list[str] = ["127.0.0.1", "localhost", "::1"]
    """Hosts the sandbox may fetch a TPP JWKS from for private_key_jwt (SSRF guard); "*" allows any."""
    tpp_jwks_timeout_seconds: PositiveSeconds = 5.0
    """Total timeout of one TPP JWKS fetch."""
    tpp_jwks_cache_seconds: NonNegativeSeconds = 300.0
    """How long a fetched TPP JWKS is reused (an unknown kid or self_signed_tls_client_auth certificate refetches
    sooner, at most every 10 seconds)."""
    playground: bool = True
    """Serve the playground at `/playground` on the sandbox listener: a web page that walks a TPP developer
    through the DCR flow through the gateway, with a TPP key it generates per session (kept in memory, never
    sent out). Part of the sandbox only: on with it, and off whenever the sandbox is (production)."""
    registration_auth: Literal["bearer", "certificate"] | None = None
    """How `POST /open-banking/v3.1/register` is authenticated: `bearer` — a sandbox access token (the bank's
    page); `certificate` — the TPP's transport certificate alone, as the gateway's signed facts assert it (the
    OB standard profile; needs upstream.signed_facts). Not set: from policies.profile. GET, PUT and DELETE
    always take an access token, and a certificate-bound one (RFC 8705) only with its certificate."""
    gateway_jwks_uri: str | None = None
    """Where a sandbox run on its own (`dcr-gateway sandbox serve`) fetches the key of the gateway's signed
    facts. Not set: the admin listener of this config's gateway (`http://<server.admin>/facts/jwks.json`). In
    the gateway's process (`sandbox.enabled`) the sandbox is handed the key and fetches nothing."""

    @field_validator("issuer", "access_token_audience", "portal_url", "gateway_jwks_uri")
    @classmethod
    def _urls(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v, "this key")


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")


def redis_url_problem(url: str) -> str | None:
    """Why `url` is not a usable Redis URL, without repeating it (it may hold a password); None when fine."""
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        return f"expected a URL with scheme {', '.join(s + '://' for s in REDIS_SCHEMES)}"
    if parts.scheme == "unix":
        return None if parts.path else "a unix:// URL needs a socket path"
    if not parts.netloc.rpartition("@")[2]:
        return "the URL names no host"
    if parts.scheme == "redis+sentinel" and not parts.path.strip("/"):
        return "a redis+sentinel:// URL needs the master's service name as its path (/mymaster)"
    return None


def url_has_password(url: str) -> bool:
    """True when a URL carries a password in its user-info part (`redis://:secret@host`)."""
    return bool(urlsplit(url).password)


class BreakerSettings(StrictModel):
    """Circuit breaker in front of Redis: a dead Redis must not add its timeout to every request."""

    failure_threshold: PositiveInt = 5
    """Consecutive failed calls (errors or timeouts) that open the circuit."""
    open_seconds: PositiveSeconds = 5.0
    """While open, calls fail at once (checks then fail closed or open as their policy says); afterwards one
    probe call is let through (half-open): success closes the circuit, failure opens it again."""


class LocalCacheSettings(StrictModel):
    """A local copy of the revocation marks, so the lookup made on every request does not go to Redis each time.

    Kept correct by Redis (server-assisted invalidation: `CLIENT TRACKING … BCAST`, Redis 6 or later) and
    used only while that link is up; see docs/scaling.md for what it costs in staleness."""

    enabled: bool = True
    """Off: every revocation lookup is a Redis round trip, as before."""
    max_age_seconds: PositiveSeconds = Field(default=1.0, le=60)
    """The staleness bound if the invalidation link fails silently: an entry is re-read from Redis at least this
    often, and the cache is bypassed when the link has not been heard from for this long (it is pinged every
    quarter of it). In normal operation a revocation anywhere is seen at the next invalidation, well under it."""
    max_entries: PositiveInt = 100_000
    """Entries kept per process (about 200 bytes each); the oldest go first."""


class RedisSettings(StrictModel):
    """The Redis server holding shared security state (`state.backend: redis`)."""

    model_config = ConfigDict(hide_input_in_errors=True)  # SECURITY: the URL may hold a password

    url: SecretStr | None = None
    """`redis://host:6379/0`, `rediss://` (TLS), `unix:///path.sock` or
    `redis+sentinel://host1:26379,host2:26379/mymaster[/db]`. A URL with a password must come from the
    environment (DCRGW_STATE__REDIS__URL or `url_env`), never from the config file; it is never logged."""
    url_env: str | None = None
    """Name of an environment variable holding the URL (e.g. from a Kubernetes Secret); used when `url` is
    unset."""
    key_prefix: str = Field(default="dcrgw:", min_length=1, max_length=64)
    """Prepended to every key, so several gateways (or other users) can share one Redis."""
    pool_size: PositiveInt = 32
    """Commands in flight per process, at most (they are pipelined over one connection per process); calls beyond
    it queue first come, first served, within `timeout_seconds`."""
    timeout_seconds: PositiveSeconds = 0.25
    """Bound on each store call (waiting its turn, connecting, the command); past it the call fails as unavailable,
    and a connection whose oldest command is unanswered past it is dropped."""
    breaker: BreakerSettings = BreakerSettings()
    local_cache: LocalCacheSettings = LocalCacheSettings()

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            problem = redis_url_problem(v.get_secret_value())
            if problem:
                raise ValueError(problem)  # SECURITY: never echo the value, it may hold a password
        return v

    def resolve_url(self, env: Mapping[str, str] | None = None) -> str:
        """The URL to connect to: `url`, else the variable named by `url_env`; ConfigError when neither."""
        if self.url is not None:
            return self.url.get_secret_value()
        env = os.environ if env is None else env
        if self.url_env is None:
            raise ConfigError(["state.redis: set url (DCRGW_STATE__REDIS__URL) or url_env for state.backend redis"])
        value = env.get(self.url_env)
        if not value:
            raise ConfigError([f"state.redis.url_env: environment variable {self.url_env} is not set or empty"])
        problem = redis_url_problem(value)
        if problem:
            raise ConfigError([f"state.redis.url_env: environment variable {self.url_env}: {problem}"])
        return value


class StateSettings(StrictModel):
    """Shared security state: JTI replay cache, token and client revocations, rate-limit counters."""

    backend: Literal["memory", "redis"] = "memory"
    """memory: in this process only (one instance). redis: shared by every replica and worker — required as
    soon as there is more than one, or a replayed jti or a revoked token is accepted by an instance that did
    not see the first request."""
    redis: RedisSettings = RedisSettings()

    @model_validator(mode="after")
    def _redis_configured(self) -> StateSettings:
        if self.backend == "redis" and self.redis.url is None and self.redis.url_env is None:
            raise ValueError("state.backend redis needs state.redis.url (from DCRGW_STATE__REDIS__URL) or "
                             "state.redis.url_env")
        return self


class Settings(StrictModel):
    """The whole configuration."""

    model_config = ConfigDict(hide_input_in_errors=True)  # SECURITY: state.redis.url may hold a password

    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    logging: LoggingSettings = LoggingSettings()
    sandbox: SandboxSettings = SandboxSettings()
    trust: TrustSettings = TrustSettings()
    policies: PolicySettings = PolicySettings()
    audit: AuditSettings = AuditSettings()
    state: StateSettings = StateSettings()
    base_dir: str = Field(default=".", exclude=True)
    """Directory of the config file; relative paths resolve against it (set by the loader)."""

    @model_validator(mode="before")
    @classmethod
    def _derive_urls(cls, data: Any) -> Any:
        """Fill the URLs that name the gateway, where the config leaves them out, from server.public_url."""
        if not isinstance(data, dict):
            return data
        public = _public_url_of(data)
        if public is None:
            return data  # server.public_url is itself wrong: its own error is reported
        data = dict(data)
        trust = data.get("trust", {})
        if isinstance(trust, dict):
            trust = dict(trust)
            if trust.get("registration_audiences") is None:
                trust["registration_audiences"] = [public]
            issuers = trust.get("token_issuers")
            if isinstance(issuers, dict):
                trust["token_issuers"] = {name: _derive_issuer(issuer, public) for name, issuer in issuers.items()}
            data["trust"] = trust
        sandbox = data.get("sandbox", {})
        if isinstance(sandbox, dict):
            data["sandbox"] = {**sandbox, **{key: public for key in ("issuer", "access_token_audience")
                                             if sandbox.get(key) is None}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _anchor_paths(cls, data: Any) -> Any:
        """Make the PEM paths of trust.certificate_authorities absolute (relative to the config file), so the
        trust settings alone say where the anchors are (they are read once, when the services are built)."""
        if not isinstance(data, dict):
            return data
        trust = data.get("trust")
        if not isinstance(trust, dict):
            return data
        authorities = trust.get("certificate_authorities")
        if not isinstance(authorities, dict):
            return data
        base = Path(data.get("base_dir", ".") if isinstance(data.get("base_dir", "."), str) else ".")
        resolved = {}
        for name, ca in authorities.items():
            if isinstance(ca, dict):
                ca = {**ca, **{key: [str(base / p) if isinstance(p, str) and p and not Path(p).is_absolute() else p
                                     for p in files]
                               for key in ("roots", "intermediates")
                               if isinstance(files := ca.get(key), list | tuple)}}
            resolved[name] = ca
        return {**data, "trust": {**trust, "certificate_authorities": resolved}}

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        used: dict[tuple[str, int], str] = {}
        listeners = {"server.public": self.server.public, "server.admin": self.server.admin}
        if self.sandbox.enabled:
            listeners["sandbox.listen"] = self.sandbox.listen
        for name, listen in listeners.items():
            key = (listen.host, listen.port)
            if listen.port and key in used:
                raise ValueError(f"{name} uses the same address as {used[key]} ({listen.host}:{listen.port})")
            used[key] = name
        return self

    @model_validator(mode="after")
    def _sandbox_registration_auth(self) -> Settings:
        if self.sandbox.enabled and self.sandbox_registration_auth == "certificate" \
                and not self.upstream.signed_facts.enabled:
            raise ValueError("sandbox.registration_auth certificate (the ob_standard profile's) needs "
                             "upstream.signed_facts.enabled: true — the sandbox believes the gateway's certificate "
                             "check only through its signature")
        return self

    @property
    def sandbox_registration_auth(self) -> Literal["bearer", "certificate"]:
        """How the sandbox authenticates registrations: `sandbox.registration_auth`, else by profile."""
        configured = self.sandbox.registration_auth
        if configured is not None:
            return configured
        return "certificate" if self.policies.profile == "ob_standard" else "bearer"

    @property
    def facts_jwks_uri(self) -> str | None:
        """Where the signed facts' key is published: `sandbox.gateway_jwks_uri`, else this config's admin
        listener (None when its port is chosen at start)."""
        if self.sandbox.gateway_jwks_uri is not None:
            return self.sandbox.gateway_jwks_uri
        admin = self.server.admin
        if admin.port == 0:
            return None
        # A wildcard bind (all interfaces) is reached on loopback from this host.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(admin.host, admin.host)  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{admin.port}{FACTS_JWKS_PATH}"

    @model_validator(mode="after")
    def _workers(self) -> Settings:
        check_workers(self, self.server.workers)
        return self

    def resolve_path(self, value: str) -> Path:
        """A configured path, relative to the config file's directory."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p


DERIVED_DEFAULTS = {
    "trust.token_issuers.<name>.issuer": "server.public_url",
    "trust.token_issuers.<name>.audiences": "[server.public_url] without issuer, else []",
    "trust.registration_audiences": "[server.public_url]",
    "sandbox.issuer": "server.public_url",
    "sandbox.access_token_audience": "server.public_url",
    "policies.dir": "the profile's",
}
"""Keys whose default is computed from other keys when the config leaves them out (docs/configuration.md)."""


def _public_url_of(data: dict[str, Any]) -> str | None:
    """server.public_url of raw config data, normalised as its validator does; None when it is not valid."""
    server = data.get("server")
    if isinstance(server, ServerSettings):
        return server.public_url
    value = server.get("public_url", DEFAULT_PUBLIC_URL) if isinstance(server, dict) else DEFAULT_PUBLIC_URL
    if not isinstance(value, str):
        return None
    try:
        return _http_url(value, "public_url")
    except ValueError:
        return None


def _derive_issuer(issuer: Any, public: str) -> Any:
    """A token issuer without `issuer` is the one behind the gateway: iss and aud are the public URL."""
    if not isinstance(issuer, dict) or issuer.get("issuer") is not None:
        return issuer
    derived = {**issuer, "issuer": public}
    if derived.get("audiences") is None:
        derived["audiences"] = [public]
    return derived


def check_workers(settings: Settings, workers: int) -> None:
    """Refuse a worker count the rest of the config cannot serve safely (ValueError naming the keys)."""
    if workers <= 1:
        return
    if settings.sandbox.enabled:
        raise ValueError(f"{workers} workers: the in-process sandbox runs in one process only; "
                         "set sandbox.enabled: false (run the sandbox on its own) or server.workers: 1")
    if settings.state.backend != "redis":
        raise ValueError(f"{workers} workers need state.backend: redis — with the memory store each worker "
                         "would keep its own replay cache, revocations and rate limits")
    facts = settings.upstream.signed_facts
    if facts.enabled and facts.key_file is None:
        raise ValueError(f"{workers} workers need upstream.signed_facts.key_file — each worker would sign with "
                         "a key of its own, and the backend could trust only one of them")
    if settings.server.public.port == 0 or settings.server.admin.port == 0:
        raise ValueError(f"{workers} workers need fixed server.public.port and server.admin.port "
                         "(port 0 would give each worker a different port)")


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Apply DCRGW_A__B=value overrides (values parsed as YAML scalars); return the names used."""
    used = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
        used.append(name)
    return used


def config_path(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The config file: `path`, else $DCRGW_CONFIG, else ./config.yaml."""
    env = os.environ if env is None else env
    return Path(path or env.get(CONFIG_ENV) or "config.yaml")


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load, override from the environment, and validate; raise ConfigError with every problem."""
    env = os.environ if env is None else env
    cfg_path = config_path(path, env)
    try:
        doc = load_yaml(cfg_path)
    except YamlSourceError as exc:
        raise ConfigError([str(exc)]) from None
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([f"{cfg_path}: expected a mapping at the top level"])
    problems = _secrets_in_file(data, doc, cfg_path)
    if problems:
        raise ConfigError(problems)
    _apply_env(data, env)
    data["base_dir"] = str(cfg_path.resolve().parent)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_attribute(exc, doc, cfg_path, env)) from None


def _secrets_in_file(data: dict[str, Any], doc: YamlDocument, cfg_path: Path) -> list[str]:
    """SECURITY: a Redis password written in the config file ends up in ConfigMaps and repositories."""
    state = data.get("state")
    redis = state.get("redis") if isinstance(state, dict) else None
    url = redis.get("url") if isinstance(redis, dict) else None
    if isinstance(url, str) and url_has_password(url):
        line = doc.line_of(["state", "redis", "url"])
        return [f"{cfg_path}: state.redis.url: a password must not be written in the config file; set "
                f"DCRGW_STATE__REDIS__URL or state.redis.url_env instead (line {line or 1})"]
    return []


def _attribute(exc: ValidationError, doc: YamlDocument, cfg_path: Path, env: Mapping[str, str]) -> list[str]:
    """Name the environment variable when the bad value came from one (its own key, or a key under the one the
    error is about: a mistyped `DCRGW_SERVR__PORT` is an unknown key `servr` the file does not have), else the
    file and line."""
    overrides: dict[tuple[str, ...], str] = {}
    for name in env:
        if name.startswith(ENV_PREFIX) and name != CONFIG_ENV:
            path = tuple(p.lower() for p in name[len(ENV_PREFIX):].split("__") if p)
            if path:
                overrides[path] = name
    messages = []
    for where, dotted, line, message in located_errors(exc, doc):
        loc = tuple(str(p) for p in where)
        names = [n for path, n in sorted(overrides.items()) if path[:len(loc)] == loc] if loc else []
        if not names:
            suffix = f" (line {line})" if line is not None else ""
            messages.append(f"{cfg_path}: {dotted}: {message}{suffix}")
            continue
        exact = overrides.get(loc)
        if exact is not None or not doc.has(list(loc)):
            messages.append(f"environment {exact or ', '.join(names)}: {dotted}: {message}")
        else:  # a value of the file's, with a part from the environment: name both
            messages.append(f"environment {', '.join(names)}: {dotted}: {message} (with {cfg_path}, line {line or 1})")
    return messages
