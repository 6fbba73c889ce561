"""What checks share: trust anchors, the key provider, the state store, revocations, the token verifier.

Only the shared dataclass and its protocols: what builds, starts and closes them is gateway/runtime.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..certificates import ForwardedCertificateReader
from ..config import CheckMode, TrustSettings, resolve_check_mode
from ..jose import KeyProvider
from ..pki.chain import ChainValidator, TrustAnchors
from ..pki.revocation import IssuerLookup, RevocationChecker
from ..state.store import StateStore
from .key_urls import CONFIGURED_URLS
from .revocation import Revocations
from .token_verifier import TokenVerifier

__all__ = ["CONFIGURED_URLS", "KeyProvider", "Services"]


def _no_hook() -> None:
    """A hook nobody listens to."""


@dataclass(slots=True)
class Services:
    """Built once per process; every check instance of every policy-set version shares it."""

    trust: TrustSettings
    keys: KeyProvider
    store: StateStore
    revocations: Revocations
    tokens: TokenVerifier
    clock: Callable[[], float]
    check_modes: Mapping[str, str] = field(default_factory=dict)
    """Check kind → "audit" to report its denials without enforcing them (config policies.check_modes)."""
    modes: Callable[[str, str | None], CheckMode] | None = None
    """(check kind, the policy's `mode` for it) → the mode it runs in: config `PolicySettings.check_mode`, the
    one rule (profile, then `check_modes`, then the policy). None: `check_modes`, then the policy."""
    on_replay: Callable[[], None] = _no_hook
    """Called once per replayed registration request jti (dcr_gateway_replay_rejections_total)."""
    on_fail_open: Callable[[str, str], None] | None = None
    """Called with (policy, check) when a check is passed over because the store is down (metrics)."""
    revocation: RevocationChecker | None = None
    """Answers whether a certificate is revoked (OCSP, CRL; config `trust.revocation`); None where nothing may be
    fetched (`policy test`): a check that asks then has an unknown status."""
    issuers: IssuerLookup | None = None
    """The validated issuer of a TPP certificate (chain validation), which signs its CRL and OCSP answers. Not
    given: `chains` (the issuer of the certificate's last validated chain; None for one never validated, whose
    revocation status is then unknown)."""
    certificates: ForwardedCertificateReader = field(init=False)
    """The forwarded TLS client certificate (config `trust.client_certificate`), read one way by every check
    that needs it: `client_certificate`, and `bearer_token` for RFC 8705 certificate-bound tokens."""

    chains: ChainValidator = field(init=False)
    """Certificate chains validated to the configured trust anchors (config `trust.certificate_authorities`,
    read and parsed here, once per process; ConfigError naming the key and file when one is unusable)."""

    def __post_init__(self) -> None:
        cfg = self.trust.client_certificate
        self.certificates = ForwardedCertificateReader(cfg.header, cfg.format, cfg.trusted_proxies,
                                                       chain_header=cfg.chain_header)
        self.chains = ChainValidator(TrustAnchors.load(self.trust.certificate_authorities),
                                     clock_skew_seconds=self.trust.clock_skew_seconds)
        if self.issuers is None:
            self.issuers = self.chains  # revocation asks for the issuer a validated chain found

    def check_mode(self, check: str, policy: str | None = None) -> CheckMode:
        """The mode check kind `check` runs in where its policy says `policy` (None: the policy says nothing)."""
        if self.modes is not None:
            return self.modes(check, policy)
        return resolve_check_mode(check, policy, self.check_modes)

    async def prefetch(self, uris: Iterable[str]) -> list[str]:
        """Warm configured key sets; return the URIs that failed."""
        results = await self.keys.prefetch(uris, policy=CONFIGURED_URLS)
        return [uri for uri, err in results.items() if err is not None]
