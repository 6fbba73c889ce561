"""A DCR world on 127.0.0.1: a directory JWKS server, a TPP JWKS server, the bank (token JWKS + registration
backend), and a real gateway in front of the bank. Keys and certificates are real; nothing leaves loopback."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.checks.services import CONFIGURED_URLS
from gateway.jose import JwksCache, JwksCacheSettings, SigningKey, generate_signing_key, sign_compact, sign_jwt
from gateway.jose.encoding import b64url_encode, json_dumps_compact
from gateway.policy.testing import forwarded_certificate, issue_certificate, tls_jwk
from tests.conftest import SHIPPED_POLICIES, RunningGateway, StartServer

REGISTER = "/open-banking/v3.1/register"
BANK_ISSUER = "https://as.bank.test"
DIRECTORY_ISSUER = "OpenBanking Ltd"
AUD = "https://as.bank.test"
SOFTWARE_ID = "AttackTableSoftware1"
ORG_ID = "0015800001041REAAY"
SUBJECT = f"CN={SOFTWARE_ID},OU={ORG_ID},O=OpenBanking,C=GB"
REDIRECT = "https://tpp.example.com/callback"
CERT_HEADER = "ssl-client-cert"


@dataclass(frozen=True)
class Keys:
    """Key material made once per test session (key generation is the slow part)."""

    bank: SigningKey
    directory: SigningKey
    tpp_rsa: SigningKey
    tpp_ec: SigningKey
    transport: SigningKey
    cert: bytes
    other_cert: bytes
    expired_cert: bytes
    attacker_rsa: SigningKey
    attacker_ec: SigningKey


@cache
def keys() -> Keys:
    """The session's keys and certificates."""
    now = datetime.now(UTC)
    day = timedelta(days=1)
    transport = generate_signing_key("EC", kid="tpp-transport")
    return Keys(
        bank=generate_signing_key("RSA", kid="bank-1"),
        directory=generate_signing_key("RSA", kid="directory-1"),
        tpp_rsa=generate_signing_key("RSA", kid="tpp-sig-rsa"),
        tpp_ec=generate_signing_key("EC", kid="tpp-sig-ec"),
        transport=transport,
        cert=issue_certificate(transport, SUBJECT, not_before=now - day, not_after=now + 90 * day),
        other_cert=issue_certificate(generate_signing_key("EC"), SUBJECT, not_before=now - day,
                                     not_after=now + 90 * day),
        expired_cert=issue_certificate(transport, SUBJECT, not_before=now - 90 * day, not_after=now - day),
        attacker_rsa=generate_signing_key("RSA", kid="attacker-rsa"),
        attacker_ec=generate_signing_key("EC", kid="attacker-ec"),
    )


class KeyServer:
    """Serves a JWKS at /jwks, a 302 at /redirect, and counts hits per path."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self.jwks = jwks
        self.hits: dict[str, int] = {}
        self.app = web.Application()
        self.app.router.add_get("/jwks", self._jwks)
        self.app.router.add_get("/redirect", self._redirect)

    async def _jwks(self, request: web.Request) -> web.Response:
        self.hits["/jwks"] = self.hits.get("/jwks", 0) + 1
        return web.json_response(self.jwks)

    async def _redirect(self, request: web.Request) -> web.Response:
        self.hits["/redirect"] = self.hits.get("/redirect", 0) + 1
        raise web.HTTPFound("/jwks")


class Backend:
    """The bank's registration backend and token JWKS; records what the gateway forwarded."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str, dict[str, str], bytes]] = []
        self.app = web.Application()
        self.app.router.add_get("/jwks", self._jwks)
        self.app.router.add_post(REGISTER, self._create)
        self.app.router.add_route("*", REGISTER + "/{cid}", self._client)

    async def _jwks(self, _: web.Request) -> web.Response:
        return web.json_response({"keys": [keys().bank.public_jwk(alg="PS256")]})

    async def _record(self, request: web.Request) -> None:
        self.hits.append((request.method, request.path, dict(request.headers), await request.read()))

    async def _create(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"client_id": "new-client"}, status=201)

    async def _client(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"client_id": request.match_info["cid"]})


@dataclass
class Resolver:
    """An injected DNS resolver: answers from a table and records every question (nothing goes to real DNS)."""

    table: dict[str, list[str]]
    asked: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"{host} does not resolve in this test")
        return self.table[host]


def _trace(started: list[str]) -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    async def on_request_start(_s: Any, _c: Any, params: aiohttp.TraceRequestStartParams) -> None:
        started.append(str(params.url))

    async def on_connection_create_start(_s: Any, _c: Any, _p: Any) -> None:
        started.append("connection")

    trace.on_request_start.append(on_request_start)
    trace.on_connection_create_start.append(on_connection_create_start)
    return trace


@dataclass
class World:
    """Everything a DCR end-to-end test needs, with helpers to build requests."""

    gw: RunningGateway
    backend: Backend
    directory: KeyServer
    tpp: KeyServer
    directory_url: str
    tpp_url: str
    resolver: Resolver
    fetches: list[str]
    """Every outbound request or connection the gateway's JWKS cache started (trace hooks)."""
    session: aiohttp.ClientSession

    # -- tokens and certificates ------------------------------------------------------------------
    def token(self, client_id: str = "app-1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": BANK_ISSUER, "client_id": client_id, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        body.update(claims)
        return sign_jwt(body, keys().bank, "PS256", typ="at+jwt")

    def cert_header(self, der: bytes | None = None) -> dict[str, str]:
        return {CERT_HEADER: forwarded_certificate(keys().cert if der is None else der, "nginx")}

    # -- software statement and registration request ----------------------------------------------
    def ssa_claims(self, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": DIRECTORY_ISSUER, "iat": int(time.time()), "jti": str(uuid.uuid4()),
            "software_id": SOFTWARE_ID, "software_client_name": "Attack table app",
            "software_jwks_endpoint": self.tpp_url + "/jwks", "software_redirect_uris": [REDIRECT],
            "software_roles": ["AISP", "PISP", "CBPII"], "org_status": "Active", "org_id": ORG_ID,
            "org_name": "Attack Table TPP Ltd",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def ssa(self, key: SigningKey | None = None, header: Mapping[str, Any] | None = None, **overrides: Any) -> str:
        signer = key or keys().directory
        h = {"alg": "PS256", "kid": keys().directory.kid, "typ": "JWT", **(header or {})}
        return sign_compact(h, json_dumps_compact(self.ssa_claims(**overrides)), signer)

    def claims(self, ssa: str | None = None, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": SOFTWARE_ID, "aud": AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()),
            "software_id": SOFTWARE_ID, "software_statement": ssa or self.ssa(), "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "PS256",
            "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
            "response_types": ["code id_token"], "application_type": "web",
            "id_token_signed_response_alg": "PS256", "request_object_signing_alg": "PS256",
            "scope": "openid accounts payments fundsconfirmations",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def request(self, key: SigningKey | None = None, header: Mapping[str, Any] | None = None,
                payload: bytes | None = None, **claims: Any) -> str:
        """A registration request signed (by default) with the TPP's PS256 key."""
        signer = key or keys().tpp_rsa
        h = {"alg": "PS256", "kid": keys().tpp_rsa.kid, **(header or {})}
        body = payload if payload is not None else json_dumps_compact(self.claims(**claims))
        return sign_compact(h, body, signer)

    def unsigned(self, header: Mapping[str, Any], payload: bytes | None = None, signature: bytes = b"") -> str:
        """header.payload.signature with the given raw parts (for alg none, HMAC, zero signatures)."""
        body = payload if payload is not None else json_dumps_compact(self.claims())
        return f"{b64url_encode(json_dumps_compact(dict(header)))}.{b64url_encode(body)}.{b64url_encode(signature)}"

    # -- sending ------------------------------------------------------------------------------------
    def headers(self, client_id: str = "app-1", cert: bool = True, **extra: str) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token(client_id)}", "client_id": client_id,
             "Content-Type": "application/jose"}
        if cert:
            h.update(self.cert_header())
        h.update(extra)
        return h

    async def post(self, body: str | bytes, **kw: Any) -> aiohttp.ClientResponse:
        return await self.gw.client.post(REGISTER, data=body, headers=self.headers(**kw))

    async def put(self, client_id: str, body: str | bytes, **kw: Any) -> aiohttp.ClientResponse:
        return await self.gw.client.put(f"{REGISTER}/{client_id}", data=body, headers=self.headers(client_id, **kw))

    def denials(self, reason: str) -> float:
        """How many requests were denied with `reason` (any policy, any check)."""
        total = 0.0
        for metric in self.gw.metrics.registry.collect():
            for s in metric.samples:
                if (s.name == "dcr_gateway_decisions_total" and s.labels.get("reason") == reason
                        and s.labels.get("decision") == "deny"):
                    total += s.value
        return total

    def registrations(self) -> int:
        return len(self.backend.hits)


Starter = Callable[..., Awaitable[RunningGateway]]


async def make_world(start_server: StartServer, running_gateway: Starter, *, policy_dir: Path = SHIPPED_POLICIES,
                     resolver_table: dict[str, list[str]] | None = None, **overrides: Any) -> World:
    """Start the servers and a gateway; its JWKS cache gets an injected resolver and traced session."""
    k = keys()
    backend = Backend()
    directory = KeyServer({"keys": [k.directory.public_jwk(alg="PS256")]})
    tpp = KeyServer({"keys": [k.tpp_rsa.public_jwk(alg="PS256"), k.tpp_ec.public_jwk(alg="ES256"),
                              tls_jwk(k.transport, k.cert), tls_jwk(k.transport, k.expired_cert)]})
    bank_url = str((await start_server(backend.app)).make_url("")).rstrip("/")
    directory_url = str((await start_server(directory.app)).make_url("")).rstrip("/")
    tpp_url = str((await start_server(tpp.app)).make_url("")).rstrip("/")
    trust: dict[str, Any] = {
        "token_issuers": {"bank": {"issuer": BANK_ISSUER, "jwks_uri": bank_url + "/jwks", "token_types": ["at+jwt"]}},
        "directories": {"ob": {"issuer": DIRECTORY_ISSUER, "jwks_uri": directory_url + "/jwks"}},
        # As the sandbox profile: the TPP's key set is on loopback over http. Private and link-local stay refused.
        "software_jwks": {"allow_http": True, "allow_loopback": True},
        "registration_audiences": [AUD],
        "client_certificate": {"header": CERT_HEADER, "format": "nginx", "trusted_proxies": ["127.0.0.1/32", "::1/128"]},
        **overrides.pop("trust", {}),
    }
    gw = await running_gateway(bank_url, policy_dir=policy_dir, trust=trust, **overrides)
    resolver = Resolver(resolver_table or {})
    fetches: list[str] = []
    session = aiohttp.ClientSession(trace_configs=[_trace(fetches)], trust_env=False,
                                    timeout=aiohttp.ClientTimeout(total=3))
    # The gateway's own JWKS cache, rebuilt with an injected resolver and a traced session (public constructor
    # arguments), so tests can prove a refused URL was never connected to.
    cache_settings = JwksCacheSettings(min_refetch_interval_seconds=30, fetch_timeout_seconds=3)
    cache_ = JwksCache(session=session, policy=CONFIGURED_URLS, resolver=resolver, settings=cache_settings)
    # Checks read services.keys per request; the original cache stays the token verifier's (closed at teardown).
    gw.services.keys = cache_
    return World(gw, backend, directory, tpp, directory_url, tpp_url, resolver, fetches, session)


def b64(data: bytes) -> str:
    """Standard base64 (x5c)."""
    return base64.b64encode(data).decode("ascii")
