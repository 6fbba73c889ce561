"""Is a certificate revoked? Asked of its issuer's OCSP responder (RFC 6960) and CRL (RFC 5280 §5), one answer:
good, revoked or unknown.

- Where to ask comes from the certificate itself (AIA `id-ad-ocsp`, CRL distribution points; http(s) only), so
  every fetch goes through the one guarded fetch path (`gateway.jose.guarded_fetch`): the URL policy of config
  `trust.revocation` (loopback and private addresses refused by default) is proven before any connection, no
  redirect is followed, and time and size are capped.
- A CRL counts only when signed by the issuer's key (`is_signature_valid`), named after the issuer, complete (not a
  delta) and current: cached until its nextUpdate, refetched then, and never used past nextUpdate + skew.
- An OCSP answer counts only when successful, signed by the issuer or by a responder certificate the issuer
  issued for OCSPSigning (whose own status is taken from the issuer's CRL unless it carries id-pkix-ocsp-nocheck,
  RFC 6960 §4.2.2.2.1), about this very certificate (cert id), with thisUpdate not in the future and nextUpdate not
  passed (beyond the skew); cached until nextUpdate (a short default without one).
- One fetch in flight per CRL URL and per OCSP question (concurrent callers share it); bounded caches; a failed
  fetch is not retried sooner than `failed_refetch_interval_seconds`.

Whether "unknown" refuses (hard_fail) or passes (soft_fail) is the caller's policy: this module only answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, SignatureAlgorithmOID

from ..config import CertificateRevocationSettings
from ..jose.errors import quoted_url
from ..jose.guarded_fetch import FetchFailed, FetchLimits, FetchResult, guarded_fetch, guarded_session
from ..jose.url_guard import HostResolver, UrlGuard, UrlPolicy
from ..observability.logging import get_logger

log = get_logger("revocation")

Method = Literal["ocsp", "crl"]
METHODS: Final[tuple[Method, ...]] = ("ocsp", "crl")
Outcome = Literal["good", "revoked", "unknown", "error"]
"""One method's answer: good / revoked (decisive), unknown (the responder does not know the certificate, or the
certificate names no place to ask), error (no usable answer: unreachable, refused, invalid, stale)."""
OUTCOMES: Final[tuple[Outcome, ...]] = ("good", "revoked", "unknown", "error")
Status = Literal["good", "revoked", "unknown"]
HashName = Literal["sha1", "sha256"]
_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}
_CRL_ACCEPT: Final = "application/pkix-crl, application/x-pkcs7-crl;q=0.5, */*;q=0.1"
_OCSP_REQUEST: Final = "application/ocsp-request"
_OCSP_RESPONSE: Final = "application/ocsp-response"
_SCHEMES: Final = ("http://", "https://")


class IssuerLookup(Protocol):
    """Where the issuer certificate comes from (chain validation): the issuer of `cert`, or None."""

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The certificate that issued `cert` (signature already verified), None when unknown."""
        ...


@dataclass(frozen=True, slots=True)
class RevocationSettings:
    """Limits and lifetimes of revocation checking (config `trust.revocation`)."""

    fetch_timeout_seconds: float = 5.0  # DNS + connect + whole body
    max_crl_bytes: int = 8 * 1024 * 1024
    max_ocsp_bytes: int = 64 * 1024
    skew_seconds: float = 30.0  # leeway on thisUpdate / nextUpdate
    ocsp_default_ttl_seconds: float = 300.0  # how long an OCSP answer without nextUpdate is reused
    crl_default_ttl_seconds: float = 3600.0  # how long a CRL without nextUpdate is reused
    failed_refetch_interval_seconds: float = 5.0  # no new attempt at a failed URL before this
    max_entries: int = 1024  # CRLs and OCSP answers kept (each), least recently used forgotten first
    ocsp_hash: HashName = "sha1"  # CertID hash (RFC 5019 §2.1.1: SHA-1 is what every responder understands)
    ocsp_nonce: bool = False  # send an RFC 8954 nonce (and require it echoed when the answer carries one)

    def __post_init__(self) -> None:
        for name in ("fetch_timeout_seconds", "ocsp_default_ttl_seconds", "crl_default_ttl_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0")
        for name in ("skew_seconds", "failed_refetch_interval_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0")
        if min(self.max_crl_bytes, self.max_ocsp_bytes, self.max_entries) <= 0:
            raise ValueError("max_crl_bytes, max_ocsp_bytes and max_entries must be > 0")


def _ignore(*_: object) -> None:
    """A hook nobody listens to."""


@dataclass(frozen=True, slots=True)
class RevocationEvents:
    """Hooks for metrics: every method answer, every fetch, every cache hit, every unknown status let through."""

    on_check: Callable[[Method, Outcome], None] = _ignore
    on_fetch: Callable[[Method, FetchResult], None] = _ignore
    on_cache_hit: Callable[[Method], None] = _ignore
    on_soft_fail: Callable[[], None] = _ignore


@dataclass(frozen=True, slots=True)
class MethodAnswer:
    """What one method said about one certificate."""

    method: Method
    outcome: Outcome
    description: str
    revoked_at: datetime | None = None
    reason: str | None = None  # the CRL entry's / OCSP answer's revocation reason, when given


@dataclass(frozen=True, slots=True)
class RevocationStatus:
    """The answer: `status` decided by `method` (None when nothing decided), and what each method asked said."""

    status: Status
    method: Method | None
    description: str
    answers: tuple[MethodAnswer, ...] = ()


class _Unusable(Exception):
    """No usable answer from a source; the description says why."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" when every waiter went away


class _Flights(Generic[K, V]):
    """One task in flight per key: concurrent callers await the same one (and a cancelled caller cancels no one)."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, start: Callable[[], Awaitable[V]]) -> V:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._run(key, start))
            task.add_done_callback(_consume)
            self._tasks[key] = task
        return await asyncio.shield(task)

    async def _run(self, key: K, start: Callable[[], Awaitable[V]]) -> V:
        try:
            return await start()
        finally:
            self._tasks.pop(key, None)

    def cancel(self) -> None:
        for task in self._tasks.values():
            task.cancel()


class _Lru(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry first."""

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._limit = limit

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def setdefault(self, key: K, make: Callable[[], V]) -> V:
        """The entry of `key`, made (and the oldest forgotten beyond the limit) when absent."""
        value = self.get(key)
        if value is None:
            value = self._items[key] = make()
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class _CrlEntry:
    crl: x509.CertificateRevocationList | None = None
    fresh_until: float = -math.inf  # nextUpdate (or fetch + default TTL): refetch after this
    usable_until: float = -math.inf  # nextUpdate + skew: never used after this
    failed: _Unusable | None = None
    failed_at: float = -math.inf
    verified_for: set[bytes] = field(default_factory=set)  # issuer SPKI digests whose signature check passed


@dataclass(slots=True)
class _OcspEntry:
    answer: MethodAnswer | None = None
    fresh_until: float = -math.inf
    failed: _Unusable | None = None
    failed_at: float = -math.inf


def crl_urls(cert: x509.Certificate) -> list[str]:
    """The http(s) URLs of the certificate's CRL distribution points that name a complete CRL by its issuer."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    urls: list[str] = []
    for point in points:
        # An indirect CRL (cRLIssuer) or a reason-partitioned one is not the complete CRL of the issuer.
        if point.crl_issuer or point.reasons or not point.full_name:
            continue
        urls.extend(_http_uris(point.full_name))
    return list(dict.fromkeys(urls))


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The http(s) OCSP responder URLs of the certificate's Authority Information Access extension."""
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    names = [d.access_location for d in access if d.access_method == AuthorityInformationAccessOID.OCSP]
    return list(dict.fromkeys(_http_uris(names)))


def _http_uris(names: Iterable[x509.GeneralName]) -> list[str]:
    return [n.value for n in names
            if isinstance(n, x509.UniformResourceIdentifier) and n.value.lower().startswith(_SCHEMES)]


def _spki_digest(cert: x509.Certificate) -> bytes:
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def _signature_valid(key: object, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bool:
    """True when `signature` over `data` verifies with `key` (RSA PKCS#1 v1.5, ECDSA, EdDSA)."""
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


class RevocationChecker:
    """Answers "is this certificate revoked?" by OCSP and CRL, with caches shared by every request of the process."""

    __slots__ = ("_clock", "_crl_flights", "_crls", "_events", "_guards", "_ocsp", "_ocsp_flights", "_owns_session",
                 "_session", "_ssl", "settings")

    def __init__(
        self,
        *,
        policy: UrlPolicy | None = None,
        settings: RevocationSettings | None = None,
        session: aiohttp.ClientSession | None = None,
        resolver: HostResolver | None = None,
        clock: Callable[[], float] = time.time,
        events: RevocationEvents | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings or RevocationSettings()
        url_policy = policy or UrlPolicy(allow_http=True)
        self._guards: dict[Method, UrlGuard] = {
            "crl": UrlGuard(url_policy, resolver, noun="CRL distribution point"),
            "ocsp": UrlGuard(url_policy, resolver, noun="OCSP responder"),
        }
        self._session = session
        self._owns_session = session is None
        self._ssl: ssl.SSLContext | bool = ssl_context or True
        self._clock = clock
        self._events = events or RevocationEvents()
        self._crls: _Lru[str, _CrlEntry] = _Lru(self.settings.max_entries)
        self._ocsp: _Lru[tuple[str, bytes, bytes, int], _OcspEntry] = _Lru(self.settings.max_entries)
        self._crl_flights: _Flights[str, None] = _Flights()
        self._ocsp_flights: _Flights[tuple[str, bytes, bytes, int], None] = _Flights()

    @classmethod
    def from_config(cls, cfg: CertificateRevocationSettings, *, skew_seconds: float,
                    events: RevocationEvents | None = None) -> RevocationChecker:
        """The checker config `trust.revocation` describes (URL policy, limits), with `trust.clock_skew_seconds`."""
        policy = UrlPolicy.build(allow_http=cfg.allow_http, allowed_hosts=cfg.allowed_hosts,
                                 allow_private=cfg.allow_private, allow_loopback=cfg.allow_loopback)
        settings = RevocationSettings(
            fetch_timeout_seconds=cfg.timeout_seconds, max_crl_bytes=cfg.max_crl_bytes,
            max_ocsp_bytes=cfg.max_ocsp_response_bytes, skew_seconds=skew_seconds,
            ocsp_default_ttl_seconds=cfg.ocsp_cache_seconds, crl_default_ttl_seconds=cfg.crl_cache_seconds,
            failed_refetch_interval_seconds=cfg.failed_refetch_interval_seconds, max_entries=cfg.max_cached,
            ocsp_hash=cfg.ocsp_hash, ocsp_nonce=cfg.ocsp_nonce,
        )
        return cls(policy=policy, settings=settings, events=events)

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the owned ClientSession (no-op when one was passed in)."""
        self._ensure_session()

    async def close(self) -> None:
        """Cancel fetches in flight and close the owned session."""
        self._crl_flights.cancel()
        self._ocsp_flights.cancel()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(self.settings.fetch_timeout_seconds)
        return self._session

    # -- public API ------------------------------------------------------------------------------------
    async def check(
        self, cert: x509.Certificate, issuer: x509.Certificate, methods: Iterable[Method] = METHODS
    ) -> RevocationStatus:
        """Ask each method in order until one says good or revoked; unknown when none could."""
        if cert.issuer != issuer.subject:
            return RevocationStatus("unknown", None, "the issuer certificate given is not the certificate's issuer")
        answers: list[MethodAnswer] = []
        for method in methods:
            answer = await (self.check_ocsp(cert, issuer) if method == "ocsp" else self.check_crl(cert, issuer))
            answers.append(answer)
            if answer.outcome in ("good", "revoked"):
                status: Status = "good" if answer.outcome == "good" else "revoked"
                return RevocationStatus(status, method, answer.description, tuple(answers))
        why = "; ".join(f"{a.method}: {a.description}" for a in answers) or "no revocation method asked"
        return RevocationStatus("unknown", None, why, tuple(answers))

    def soft_failed(self) -> None:
        """Count one certificate let through with an unknown status (soft_fail policy)."""
        self._events.on_soft_fail()

    async def check_crl(self, cert: x509.Certificate, issuer: x509.Certificate) -> MethodAnswer:
        """The certificate's status on its issuer's CRL (the first distribution point that gives a usable one)."""
        urls = crl_urls(cert)
        if not urls:
            return self._answer(MethodAnswer("crl", "unknown", "the certificate names no http(s) CRL distribution "
                                                               "point"))
        problems: list[str] = []
        for url in urls:
            try:
                crl = await self._current_crl(url, issuer)
            except _Unusable as exc:
                problems.append(f"CRL {quoted_url(url)}: {exc.description}")
                continue
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is None:
                return self._answer(MethodAnswer("crl", "good", f"serial {cert.serial_number:x} is not on the "
                                                                f"issuer's CRL"))
            return self._answer(_revoked_answer("crl", entry, cert.serial_number))
        return self._answer(MethodAnswer("crl", "error", "; ".join(problems)))

    async def check_ocsp(self, cert: x509.Certificate, issuer: x509.Certificate) -> MethodAnswer:
        """The certificate's status according to its issuer's OCSP responder (AIA)."""
        urls = ocsp_urls(cert)
        if not urls:
            return self._answer(MethodAnswer("ocsp", "unknown", "the certificate names no http(s) OCSP responder"))
        problems: list[str] = []
        for url in urls:
            try:
                answer = await self._ocsp_answer(url, cert, issuer)
            except _Unusable as exc:
                problems.append(f"OCSP responder {quoted_url(url)}: {exc.description}")
                continue
            return self._answer(answer)
        return self._answer(MethodAnswer("ocsp", "error", "; ".join(problems)))

    def cached(self) -> tuple[int, int]:
        """(CRLs, OCSP answers) currently cached (tests, diagnostics)."""
        return len(self._crls), len(self._ocsp)

    # -- CRL -------------------------------------------------------------------------------------------
    async def _current_crl(self, url: str, issuer: x509.Certificate) -> x509.CertificateRevocationList:
        entry = self._crls.setdefault(url, _CrlEntry)
        now = self._clock()
        if entry.crl is not None and now < entry.fresh_until:
            self._events.on_cache_hit("crl")
        elif entry.failed is not None and now - entry.failed_at < self.settings.failed_refetch_interval_seconds:
            if not (entry.crl is not None and now <= entry.usable_until):
                raise _Unusable(entry.failed.description)
        else:
            await self._crl_flights.run(url, lambda: self._refresh_crl(url, entry))
            if entry.crl is None or self._clock() > entry.usable_until:
                raise _Unusable(entry.failed.description if entry.failed else "no current CRL")
        crl = entry.crl
        assert crl is not None
        digest = _spki_digest(issuer)
        if digest not in entry.verified_for:
            _vet_crl(crl, issuer)
            entry.verified_for.add(digest)
        return crl

    async def _refresh_crl(self, url: str, entry: _CrlEntry) -> None:
        try:
            body = await self._fetch("crl", url, None, self.settings.max_crl_bytes)
            crl = _parse_crl(body)
            now = self._clock()
            skew = self.settings.skew_seconds
            last = _ts(crl.last_update_utc)
            if last > now + skew:
                raise _Unusable(f"the CRL's thisUpdate {_when(last)} is in the future")
            next_update = crl.next_update_utc
            if next_update is None:
                fresh = usable = now + self.settings.crl_default_ttl_seconds
            else:
                fresh, usable = _ts(next_update), _ts(next_update) + skew
                if now > usable:
                    # SECURITY: a CRL past its nextUpdate may miss revocations (RFC 5280 §5.1.2.5): never used.
                    raise _Unusable(f"the CRL is stale (nextUpdate {_when(fresh)} has passed)")
        except _Unusable as exc:
            entry.failed, entry.failed_at = exc, self._clock()
            log.warning("crl_unusable", crl_url=quoted_url(url), why=exc.description)
            return
        entry.crl, entry.fresh_until, entry.usable_until = crl, fresh, usable
        entry.verified_for = set()
        entry.failed = None
        log.info("crl_fetched", crl_url=quoted_url(url), entries=len(crl), next_update=_when(fresh))

    # -- OCSP ------------------------------------------------------------------------------------------
    async def _ocsp_answer(self, url: str, cert: x509.Certificate, issuer: x509.Certificate) -> MethodAnswer:
        algorithm = _HASHES[self.settings.ocsp_hash]()
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm)
        probe = request.build()
        key = (url, probe.issuer_name_hash, probe.issuer_key_hash, cert.serial_number)
        entry = self._ocsp.setdefault(key, _OcspEntry)
        now = self._clock()
        if entry.answer is not None and now < entry.fresh_until:
            self._events.on_cache_hit("ocsp")
            return entry.answer
        if entry.failed is not None and now - entry.failed_at < self.settings.failed_refetch_interval_seconds:
            raise _Unusable(entry.failed.description)
        await self._ocsp_flights.run(key, lambda: self._refresh_ocsp(url, cert, issuer, request, probe, entry))
        if entry.answer is None:
            raise _Unusable(entry.failed.description if entry.failed else "no OCSP answer")
        return entry.answer

    async def _refresh_ocsp(self, url: str, cert: x509.Certificate, issuer: x509.Certificate,
                            request: ocsp.OCSPRequestBuilder, probe: ocsp.OCSPRequest, entry: _OcspEntry) -> None:
        nonce = None
        if self.settings.ocsp_nonce:
            nonce = os.urandom(32)
            request = request.add_extension(x509.OCSPNonce(nonce), critical=False)
        try:
            body = await self._fetch("ocsp", url, request.build().public_bytes(serialization.Encoding.DER),
                                     self.settings.max_ocsp_bytes)
            answer, this_update, next_update = await self._vet_ocsp(body, cert, issuer, probe, nonce)
        except _Unusable as exc:
            entry.answer, entry.failed, entry.failed_at = None, exc, self._clock()
            log.warning("ocsp_unusable", ocsp_url=quoted_url(url), serial=f"{cert.serial_number:x}",
                        why=exc.description)
            return
        now = self._clock()
        entry.answer, entry.failed = answer, None
        entry.fresh_until = next_update if next_update is not None else now + self.settings.ocsp_default_ttl_seconds
        log.info("ocsp_answered", ocsp_url=quoted_url(url), serial=f"{cert.serial_number:x}", status=answer.outcome,
                 this_update=_when(this_update))

    async def _vet_ocsp(self, body: bytes, cert: x509.Certificate, issuer: x509.Certificate, probe: ocsp.OCSPRequest,
                        nonce: bytes | None) -> tuple[MethodAnswer, float, float | None]:
        try:
            response = ocsp.load_der_ocsp_response(body)
        except ValueError:
            raise _Unusable("the answer is not a DER OCSP response") from None
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise _Unusable(f"the responder answered {response.response_status.name.lower()}")
        try:
            single = _matching_response(response, probe, cert.serial_number)
            await self._vet_ocsp_signer(response, issuer)
            if nonce is not None:
                _vet_nonce(response, nonce)
            this_update = _ts(single.this_update_utc)
            next_update = None if single.next_update_utc is None else _ts(single.next_update_utc)
            status = single.certificate_status
            revoked_at = single.revocation_time_utc if status == ocsp.OCSPCertStatus.REVOKED else None
            reason = single.revocation_reason if status == ocsp.OCSPCertStatus.REVOKED else None
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise _Unusable(f"the OCSP response cannot be read ({exc})") from None
        now, skew = self._clock(), self.settings.skew_seconds
        if this_update > now + skew:
            raise _Unusable(f"the answer's thisUpdate {_when(this_update)} is in the future")
        if next_update is not None and now > next_update + skew:
            raise _Unusable(f"the answer is stale (nextUpdate {_when(next_update)} has passed)")
        serial = f"{cert.serial_number:x}"
        if status == ocsp.OCSPCertStatus.GOOD:
            answer = MethodAnswer("ocsp", "good", f"the OCSP responder says serial {serial} is good")
        elif status == ocsp.OCSPCertStatus.REVOKED:
            answer = MethodAnswer("ocsp", "revoked", _revoked_text("the OCSP responder", serial, revoked_at, reason),
                                  revoked_at, None if reason is None else reason.name)
        else:
            answer = MethodAnswer("ocsp", "unknown", f"the OCSP responder does not know serial {serial}")
        return answer, this_update, next_update

    async def _vet_ocsp_signer(self, response: ocsp.OCSPResponse, issuer: x509.Certificate) -> None:
        """RFC 6960 §4.2.2.2: signed by the issuer itself, or by a responder certificate the issuer issued for
        OCSPSigning; anything else is refused (a valid signature by a stranger's key proves nothing)."""
        if response.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
            raise _Unusable("RSASSA-PSS signed OCSP responses are not supported")
        data, signature, algorithm = response.tbs_response_bytes, response.signature, response.signature_hash_algorithm
        if _responder_is(response, issuer):
            signer = issuer
        else:
            delegated = next((c for c in response.certificates if _responder_is(response, c)), None)
            if delegated is None:
                raise _Unusable("the answer is signed neither by the issuer nor by a responder certificate it carries")
            await self._vet_delegated_responder(delegated, issuer)
            signer = delegated
        if not _signature_valid(signer.public_key(), signature, data, algorithm):
            raise _Unusable("the answer's signature does not verify")

    async def _vet_delegated_responder(self, responder: x509.Certificate, issuer: x509.Certificate) -> None:
        try:
            responder.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise _Unusable("the delegated OCSP responder certificate is not issued by the certificate's "
                            "issuer") from None
        try:
            usages = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
        # SECURITY: without id-kp-OCSPSigning any certificate of the CA could forge answers (RFC 6960 §4.2.2.2).
        if usages is None or ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
            raise _Unusable("the delegated OCSP responder certificate lacks the OCSPSigning extended key usage")
        now = self._clock()
        if not _ts(responder.not_valid_before_utc) <= now <= _ts(responder.not_valid_after_utc):
            raise _Unusable("the delegated OCSP responder certificate is out of date")
        try:
            responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
        except x509.ExtensionNotFound:
            # RFC 6960 §4.2.2.2.1: no id-pkix-ocsp-nocheck, so the responder's own status must be checked: by the
            # issuer's CRL (never by OCSP, which would ask the responder about itself).
            answer = await self.check_crl(responder, issuer)
            if answer.outcome != "good":
                raise _Unusable(f"the delegated OCSP responder certificate has no id-pkix-ocsp-nocheck and its own "
                                f"status is {answer.outcome} ({answer.description})") from None

    # -- shared ----------------------------------------------------------------------------------------
    async def _fetch(self, method: Method, url: str, body: bytes | None, max_bytes: int) -> bytes:
        limits = FetchLimits(self.settings.fetch_timeout_seconds, max_bytes)
        try:
            data = await guarded_fetch(
                self._ensure_session(), self._guards[method], url, limits,
                accept=_CRL_ACCEPT if method == "crl" else _OCSP_RESPONSE,
                body=body, content_type=None if body is None else _OCSP_REQUEST, ssl_context=self._ssl,
            )
        except FetchFailed as exc:
            self._events.on_fetch(method, exc.result)
            raise _Unusable(exc.description) from None
        except Exception as exc:  # anything unforeseen still fails closed
            log.exception("revocation_fetch_crashed", method=method, url=quoted_url(url))
            self._events.on_fetch(method, "error")
            raise _Unusable(f"unexpected {type(exc).__name__}") from None
        self._events.on_fetch(method, "ok")
        return data

    def _answer(self, answer: MethodAnswer) -> MethodAnswer:
        self._events.on_check(answer.method, answer.outcome)
        return answer


def _parse_crl(body: bytes) -> x509.CertificateRevocationList:
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(body.strip())
        return x509.load_der_x509_crl(body)
    except ValueError:
        raise _Unusable("the answer is not a DER or PEM CRL") from None


def _vet_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> None:
    """The CRL is the issuer's complete CRL, signed by the issuer's key."""
    if crl.issuer != issuer.subject:
        raise _Unusable("the CRL is not issued by the certificate's issuer")
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.crl_sign:
        raise _Unusable("the issuer certificate may not sign CRLs (keyUsage without cRLSign)")
    try:
        crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    except x509.ExtensionNotFound:
        pass
    else:
        raise _Unusable("a delta CRL is not a complete CRL")
    # SECURITY: only the issuer's signature makes a CRL's "not revoked" believable.
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise _Unusable("the CRL's signature does not verify with the issuer's key")


def _matching_response(response: ocsp.OCSPResponse, probe: ocsp.OCSPRequest, serial: int) -> ocsp.OCSPSingleResponse:
    """The single response whose CertID is the one asked about (RFC 6960 §4.2.2.3)."""
    for single in response.responses:
        if (single.serial_number == serial and single.issuer_key_hash == probe.issuer_key_hash
                and single.issuer_name_hash == probe.issuer_name_hash
                and single.hash_algorithm.name == probe.hash_algorithm.name):
            return single
    raise _Unusable("the answer is not about the certificate asked about (CertID mismatch)")


def _responder_is(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """True when the response's ResponderID names `cert` (by name, or by the SHA-1 of its public key)."""
    if response.responder_key_hash is not None:
        key_id = x509.SubjectKeyIdentifier.from_public_key(cert.public_key())  # SHA-1 of the key's BIT STRING
        return key_id.digest == response.responder_key_hash
    return response.responder_name == cert.subject


def _vet_nonce(response: ocsp.OCSPResponse, nonce: bytes) -> None:
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return  # RFC 8954 §2.1: responders may ignore the nonce (then the time checks bound a replay)
    if echoed != nonce:
        raise _Unusable("the answer's nonce is not the one sent (a replayed answer?)")


def _revoked_text(source: str, serial: str, revoked_at: datetime | None, reason: x509.ReasonFlags | None) -> str:
    when = f" on {revoked_at.isoformat(timespec='seconds')}" if revoked_at is not None else ""
    why = f" ({reason.name})" if reason is not None else ""
    return f"{source} says serial {serial} was revoked{when}{why}"


def _revoked_answer(method: Method, entry: x509.RevokedCertificate, serial: int) -> MethodAnswer:
    try:
        reason: x509.ReasonFlags | None = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        reason = None
    revoked_at = entry.revocation_date_utc
    return MethodAnswer(method, "revoked", _revoked_text("the issuer's CRL", f"{serial:x}", revoked_at, reason),
                        revoked_at, None if reason is None else reason.name)


Mode = Literal["hard_fail", "soft_fail", "off"]
"""hard_fail: an unknown status refuses; soft_fail: it passes (counted and logged); off: nothing is asked."""


def refuses(status: RevocationStatus, mode: Mode) -> bool:
    """True when `status` must refuse the certificate under `mode` (revoked always does, unless off)."""
    if mode == "off":
        return False
    return status.status == "revoked" or (status.status == "unknown" and mode == "hard_fail")
