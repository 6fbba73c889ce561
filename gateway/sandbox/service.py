"""The sandbox as one object: settings compiled once, resources (keys, store, HTTP client) opened at start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web

from ..config import ClientCertificateSettings, Settings
from ..observability.logging import get_logger
from .client_auth import ClientAuthenticator, PresentedCertificates
from .crypto import KeySet
from .gateway_facts import GatewayFactsVerifier
from .jwks_fetcher import JwksFetcher
from .keyring import KeyRing
from .store import DB_FILE, Store
from .tokens import TokenService

log = get_logger("sandbox")

TOKEN_PATH = "/oauth2/token"  # noqa: S105 (a path)
REGISTRATION_PATH = "/open-banking/v3.1/register"
JWKS_PATH = "/jwks"


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Everything request handlers read from the settings, computed once."""

    state_dir: Path
    issuer: str
    audience: str
    token_endpoint: str
    registration_endpoint: str
    jwks_uri: str
    token_lifetime: int
    leeway: float
    directory_issuer: str
    max_body_bytes: int
    portal_url: str | None
    tpp_jwks_allowed_hosts: tuple[str, ...]
    tpp_jwks_timeout: float
    tpp_jwks_cache_seconds: float
    client_certificate: ClientCertificateSettings
    """Where the TPP's TLS client certificate comes from: the gateway's `trust.client_certificate`."""
    registration_auth: Literal["bearer", "certificate"]
    """How POST /register is authenticated (Settings.sandbox_registration_auth)."""
    facts_header: str
    facts_issuer: str
    facts_audience: str
    facts_jwks_uri: str | None
    """The gateway's signed facts: header, `iss` (the gateway's public URL), `aud` (this backend) and where
    its key is published (used only when the key was not handed over in process)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxConfig:
        """Compile the sandbox section (and the gateway's public URL it advertises)."""
        sb = settings.sandbox
        public = settings.server.public_url
        return cls(
            state_dir=settings.resolve_path(sb.state_dir),
            issuer=sb.issuer or public,
            audience=sb.access_token_audience or public,
            token_endpoint=public + TOKEN_PATH,
            registration_endpoint=public + REGISTRATION_PATH,
            jwks_uri=public + JWKS_PATH,
            token_lifetime=sb.access_token_lifetime_seconds,
            leeway=sb.clock_skew_seconds,
            directory_issuer=sb.directory_issuer,
            max_body_bytes=sb.max_body_bytes,
            portal_url=sb.portal_url,
            tpp_jwks_allowed_hosts=tuple(sb.tpp_jwks_allowed_hosts),
            tpp_jwks_timeout=sb.tpp_jwks_timeout_seconds,
            tpp_jwks_cache_seconds=sb.tpp_jwks_cache_seconds,
            client_certificate=settings.trust.client_certificate,
            registration_auth=settings.sandbox_registration_auth,
            facts_header=settings.upstream.signed_facts.header,
            facts_issuer=public,
            facts_audience=settings.upstream.facts_audience,
            facts_jwks_uri=settings.facts_jwks_uri,
        )


@dataclass(frozen=True, slots=True)
class Resources:
    """What the sandbox opens at start and closes at stop."""

    keys: KeyRing
    store: Store
    tokens: TokenService
    clients: ClientAuthenticator
    certificates: PresentedCertificates
    """The TLS client certificate behind a request (signed facts, else a trusted proxy's header)."""
    facts: GatewayFactsVerifier
    session: aiohttp.ClientSession


class Sandbox:
    """The sandbox bank: its compiled config and, once started, its resources."""

    def __init__(self, settings: Settings, gateway_jwks: dict[str, Any] | None = None) -> None:
        """`gateway_jwks`: the public key of the gateway's signed facts, when the gateway runs in this process
        (nothing is fetched then); else it is fetched from `SandboxConfig.facts_jwks_uri` when first needed."""
        self.config = SandboxConfig.from_settings(settings)
        self._gateway_keys = KeySet.from_document(gateway_jwks) if gateway_jwks is not None else None
        self._resources: Resources | None = None

    @property
    def resources(self) -> Resources:
        """The open resources (only between start and close)."""
        if self._resources is None:
            raise RuntimeError("sandbox not started")
        return self._resources

    async def lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        """`cleanup_ctx` hook: open keys, store and HTTP client; close them on shutdown."""
        cfg = self.config
        keys = await asyncio.to_thread(KeyRing.load, cfg.state_dir)
        store = await Store.open(cfg.state_dir / DB_FILE)
        session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        try:
            fetcher = JwksFetcher(
                session,
                allowed_hosts=cfg.tpp_jwks_allowed_hosts,
                timeout=cfg.tpp_jwks_timeout,
                ttl=cfg.tpp_jwks_cache_seconds,
            )
            tokens = TokenService(
                key=keys.token,
                store=store,
                issuer=cfg.issuer,
                audience=cfg.audience,
                lifetime=cfg.token_lifetime,
                leeway=cfg.leeway,
            )
            clients = ClientAuthenticator(
                store, fetcher, audiences=(cfg.token_endpoint, cfg.issuer), leeway=cfg.leeway
            )
            facts = GatewayFactsVerifier(
                header=cfg.facts_header,
                issuer=cfg.facts_issuer,
                audience=cfg.facts_audience,
                leeway=cfg.leeway,
                keys=self._gateway_keys,
                jwks_uri=cfg.facts_jwks_uri,
                # The gateway's own key set: only its configured URL is ever fetched.
                fetcher=JwksFetcher(session, allowed_hosts=("*",), timeout=cfg.tpp_jwks_timeout, ttl=60.0),
            )
            self._resources = Resources(
                keys=keys,
                store=store,
                tokens=tokens,
                clients=clients,
                certificates=PresentedCertificates(cfg.client_certificate, facts),
                facts=facts,
                session=session,
            )
            log.info(
                "sandbox_started",
                state_dir=str(cfg.state_dir),
                token_kid=keys.token.kid,
                directory_kid=keys.directory.kid,
            )
            yield
        finally:
            self._resources = None
            await session.close()
            await store.close()


SANDBOX = web.AppKey("dcr_sandbox", Sandbox)
"""The sandbox service in its aiohttp app."""
