"""Certificate chains: the configured trust anchors and path validation to them, by purpose.

`trust.certificate_authorities` names sets of roots and intermediates, each for one purpose: `transport` (the
TPP's mTLS certificate: an eIDAS QWAC, an OB transport certificate) or `signing` (a key of the TPP's software
key set that carries `x5c`: an eIDAS QSealC, an OB signing certificate). `TrustAnchors.load` reads and parses
their PEM files once, at start; `ChainValidator.validate` builds a path from a leaf (with the intermediates the
client presented and those configured) to a root of one of the named sets, with
`cryptography.x509.verification` — never a hand-written path validation — and returns the path as a
`ValidatedChain` (leaf first, anchor last), which names the leaf's issuer for revocation checks.

What a path must satisfy (RFC 5280 §6 as the library implements it, with its web-PKI profile where it fits):
signatures, names, basic constraints (every issuer `cA: true` with `keyCertSign`, path lengths), no unknown
critical extension, at most `MAX_DEPTH` intermediates, RSA of 2048 bits or more or EC P-256/384/521, SHA-2
signatures; every certificate valid at one moment within now ± `trust.clock_skew_seconds`; and the leaf's key
usage for the purpose (`PURPOSE_RULES`). A leaf need not carry a subjectAltName (OB and eIDAS client
certificates have none).

A successful validation is remembered per (leaf DER, purpose, anchor sets) until the earliest `notAfter` of
its path (bounded, oldest forgotten first): a TPP presents the same certificate on every request, and its
path does not change while it is valid. Failures are not remembered.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ..config import ConfigError
from ..config.settings import CertificateAuthority, Purpose

__all__ = [
    "CHAIN_CODES",
    "MAX_DEPTH",
    "PURPOSE_RULES",
    "AnchorSet",
    "ChainCode",
    "ChainRefused",
    "ChainValidator",
    "Purpose",
    "TrustAnchors",
    "ValidatedChain",
]

ChainCode = Literal["unknown_issuer", "expired", "not_ca", "leaf_is_ca", "wrong_eku", "wrong_key_usage",
                    "invalid"]
"""Why a chain is refused: no path to a configured root (`unknown_issuer`); a certificate of the path out of
date (`expired`); an issuing certificate that is not a CA (`not_ca`); a leaf that is a CA (`leaf_is_ca`); the
leaf's extended key usage (`wrong_eku`) or key usage (`wrong_key_usage`) not for the purpose; anything else the
validation refuses (`invalid`: weak algorithm or key, an unknown critical extension, a path too long…)."""
CHAIN_CODES: Final[tuple[ChainCode, ...]] = ("unknown_issuer", "expired", "not_ca", "leaf_is_ca", "wrong_eku",
                                             "wrong_key_usage", "invalid")

MAX_DEPTH: Final = 4
"""Most intermediates between a leaf and its root (OB: one issuing CA; eIDAS QTSPs: one or two)."""
VALIDATED_CHAINS: Final = 1024
"""Successful validations a `ChainValidator` remembers; beyond this the oldest is forgotten."""
MAX_PRESENTED: Final = 8
"""Most certificates a client may present besides its leaf (a forwarded chain, an `x5c`)."""

PURPOSE_RULES: Final[Mapping[Purpose, str]] = {
    "transport": "extendedKeyUsage present with clientAuth (RFC 5280 §4.2.1.12; OB transport and eIDAS QWAC "
                 "client certificates carry it); keyUsage, when present, with digitalSignature",
    "signing": "keyUsage present with digitalSignature or nonRepudiation (ETSI EN 319 412-2 §4.3.2, OB signing "
               "certificates); no extendedKeyUsage required or constrained (a QSealC need not carry one)",
}
"""What the leaf of each purpose must carry, beside what every path must satisfy."""


class ChainRefused(Exception):
    """A chain that does not validate: `code` says why (a `ChainCode`), `description` says exactly what, safe
    to show (subjects and dates only)."""

    def __init__(self, code: ChainCode, description: str) -> None:
        super().__init__(description)
        self.code: ChainCode = code
        self.description = description


@dataclass(frozen=True, slots=True)
class ValidatedChain:
    """A path validated to a configured root: `certificates` from the leaf to the root (the trust anchor).

    Revocation needs `leaf` and `issuer` (the certificate that signed the leaf: an intermediate, or the root
    itself for a leaf the root issued directly)."""

    certificates: tuple[x509.Certificate, ...]
    """The path, leaf first, the root (a configured anchor) last; at least two certificates."""
    anchors: str
    """The name of the `trust.certificate_authorities` set whose root the path ends in."""
    purpose: Purpose
    valid_from: datetime
    """The latest notBefore of the path, less the clock skew: the result holds from then…"""
    valid_until: datetime
    """…until the earliest notAfter of the path, plus the clock skew."""

    @property
    def leaf(self) -> x509.Certificate:
        """The validated certificate."""
        return self.certificates[0]

    @property
    def issuer(self) -> x509.Certificate:
        """The certificate that issued the leaf (the one whose key signed it)."""
        return self.certificates[1]

    @property
    def root(self) -> x509.Certificate:
        """The trust anchor the path ends in."""
        return self.certificates[-1]


# -- anchors: configured once ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnchorSet:
    """One named set of `trust.certificate_authorities`, parsed: its roots (a `Store`) and intermediates."""

    name: str
    purpose: Purpose
    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    store: Store


def _read_pems(path: Path, where: str) -> tuple[x509.Certificate, ...]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read {path}: {exc.strerror}"]) from None
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise ConfigError([f"{where}: {path} is not a file of PEM certificates"]) from None
    for cert in certs:
        if not _is_ca(cert):
            raise ConfigError([f"{where}: {path}: {cert.subject.rfc4514_string()} is not a CA certificate "
                               "(basicConstraints cA: true)"])
    return certs


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


class TrustAnchors:
    """Every configured anchor set by name, parsed once (`load`); the checks name the sets they accept."""

    __slots__ = ("_sets",)

    def __init__(self, sets: Iterable[AnchorSet] = ()) -> None:
        self._sets: dict[str, AnchorSet] = {s.name: s for s in sets}

    @classmethod
    def load(cls, authorities: Mapping[str, CertificateAuthority],
             resolve: Callable[[str], Path] = Path) -> TrustAnchors:
        """Read and parse every PEM file of `trust.certificate_authorities` (paths through `resolve`); ConfigError
        naming the key and the file when one cannot be read, holds no certificate or holds a non-CA."""
        sets = []
        for name, ca in authorities.items():
            key = f"trust.certificate_authorities.{name}"
            roots = tuple(c for i, p in enumerate(ca.roots) for c in _read_pems(resolve(p), f"{key}.roots[{i}]"))
            inter = tuple(c for i, p in enumerate(ca.intermediates)
                          for c in _read_pems(resolve(p), f"{key}.intermediates[{i}]"))
            if not roots:
                raise ConfigError([f"{key}.roots: no certificate in {', '.join(ca.roots)}"])
            sets.append(AnchorSet(name, ca.purpose, roots, inter, Store(list(roots))))
        return cls(sets)

    def get(self, name: str) -> AnchorSet | None:
        """The set of that name, or None."""
        return self._sets.get(name)

    def names(self, purpose: Purpose | None = None) -> tuple[str, ...]:
        """The configured set names (of that purpose)."""
        return tuple(n for n, s in self._sets.items() if purpose is None or s.purpose == purpose)

    def select(self, names: Sequence[str], purpose: Purpose) -> tuple[AnchorSet, ...]:
        """The named sets, in order; ValueError naming what is wrong when one is not configured or is for another
        purpose (a policy load-time error)."""
        chosen = []
        for name in names:
            found = self._sets.get(name)
            if found is None:
                known = ", ".join(self.names(purpose)) or "none"
                raise ValueError(f"no trust.certificate_authorities named {name!r} (configured for {purpose}: "
                                 f"{known})")
            if found.purpose != purpose:
                raise ValueError(f"trust.certificate_authorities.{name} is for {found.purpose}, not {purpose}")
            chosen.append(found)
        return tuple(chosen)


# -- the purpose: the leaf's extensions, through the library's extension policies -------------------------


class _PurposeError(ValueError):
    """Raised by a leaf extension validator; the library reports it in its message, prefixed by `code:`."""


def _transport_eku(policy: Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    if eku is None:
        raise _PurposeError("wrong_eku: the certificate has no extendedKeyUsage (clientAuth is required)")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise _PurposeError("wrong_eku: the certificate's extendedKeyUsage has no clientAuth")


def _transport_key_usage(policy: Policy, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is None:
        return
    if ku.key_cert_sign:
        raise _PurposeError("leaf_is_ca: the certificate's keyUsage asserts keyCertSign")
    if not ku.digital_signature:
        raise _PurposeError("wrong_key_usage: the certificate's keyUsage has no digitalSignature")


def _signing_key_usage(policy: Policy, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is None:
        raise _PurposeError("wrong_key_usage: the certificate has no keyUsage (digitalSignature or nonRepudiation "
                            "is required)")
    if ku.key_cert_sign:
        raise _PurposeError("leaf_is_ca: the certificate's keyUsage asserts keyCertSign")
    if not (ku.digital_signature or ku.content_commitment):
        raise _PurposeError("wrong_key_usage: the certificate's keyUsage has neither digitalSignature nor "
                            "nonRepudiation")


def _policies(purpose: Purpose) -> tuple[ExtensionPolicy, ExtensionPolicy]:
    """(CA policy, leaf policy): the library's web-PKI defaults, a subjectAltName optional on the leaf, and the
    purpose's key usages (`PURPOSE_RULES`)."""
    ca = ExtensionPolicy.webpki_defaults_ca()
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC,
                                                            None)
    if purpose == "transport":
        ee = (ee.may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _transport_eku)
              .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _transport_key_usage))
    else:
        # ETSI EN 319 412-3 (QSealC) and the OB signing profile fix key usage, not an EKU: an issuing CA's or the
        # leaf's EKU (if any) constrains nothing here.
        ca = ca.may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
        ee = (ee.may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
              .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _signing_key_usage))
    return ca, ee


# -- validation ---------------------------------------------------------------------------------------------

_MESSAGES: Final[tuple[tuple[str, ChainCode], ...]] = (
    ("not valid at validation time", "expired"),
    ("basicConstraints.cA must be asserted in a CA", "not_ca"),
    ("keyUsage.keyCertSign must be asserted in a CA", "not_ca"),
    ("basicConstraints.cA must not be asserted in an EE", "leaf_is_ca"),
    ("EE keyUsage must not assert keyCertSign", "leaf_is_ca"),
    ("required EKU not found", "wrong_eku"),
    ("all candidates exhausted with no interior errors", "unknown_issuer"),
    ("signature does not match", "unknown_issuer"),  # an issuer of the same name but another key: a look-alike
)
"""The library's refusals, by the text it reports them with (its messages are not an API: anything not matched
is `invalid`, with the library's own words)."""


def _classify(message: str) -> tuple[ChainCode, str]:
    """(code, the library's detail) for a VerificationError's message."""
    detail = message.removeprefix("validation failed: ").removeprefix("candidates exhausted: ")
    detail = detail.split(" (encountered processing", 1)[0]
    if "Python extension validator failed: " in detail:
        ours = detail.split("Python extension validator failed: ", 1)[1].removeprefix(
            f"{_PurposeError.__name__}: ")
        code, _, text = ours.partition(": ")
        if code in CHAIN_CODES:
            return code, text
    for needle, code in _MESSAGES:
        if needle in detail:
            return code, detail
    return "invalid", detail


def _dn(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _out_of_date(leaf: x509.Certificate, candidates: Sequence[x509.Certificate], now: datetime,
                 skew: timedelta) -> str | None:
    """For the message only: the first certificate, walking up by issuer name from the leaf through
    `candidates`, that is not valid at now ± skew."""
    cert: x509.Certificate | None = leaf
    for _ in range(MAX_DEPTH + 2):
        if cert is None:
            return None
        if now + skew < cert.not_valid_before_utc:
            return f"{_dn(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}"
        if now - skew > cert.not_valid_after_utc:
            return f"{_dn(cert)} expired at {cert.not_valid_after_utc.isoformat()}"
        if cert.issuer == cert.subject:
            return None
        cert = next((c for c in candidates if c.subject == cert.issuer and c is not cert), None)
    return None


_Key = tuple[bytes, Purpose, tuple[str, ...]]


def _key(leaf_der: bytes, sets: Sequence[AnchorSet], purpose: Purpose) -> _Key:
    return hashlib.sha256(leaf_der).digest(), purpose, tuple(s.name for s in sets)


class ChainValidator:
    """Validates leaves to the configured anchors (`TrustAnchors`), by purpose, remembering successes (one per
    process, shared by every check; `Services.chains`)."""

    __slots__ = ("_anchors", "_issuers", "_policies", "_skew", "_validated", "max_remembered")

    def __init__(self, anchors: TrustAnchors, *, clock_skew_seconds: float,
                 max_remembered: int = VALIDATED_CHAINS) -> None:
        self._anchors = anchors
        self._skew = timedelta(seconds=clock_skew_seconds)
        self._policies = {p: _policies(p) for p in ("transport", "signing")}
        self._validated: OrderedDict[_Key, ValidatedChain] = OrderedDict()
        self._issuers: OrderedDict[bytes, x509.Certificate] = OrderedDict()
        self.max_remembered = max_remembered

    @property
    def anchors(self) -> TrustAnchors:
        """The configured anchor sets."""
        return self._anchors

    def remembered(self) -> int:
        """How many validated chains are remembered (tests, diagnostics)."""
        return len(self._validated)

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The issuer the last validation of `cert` found (its signature verified on the path), None when `cert`
        was never validated (or is forgotten): `gateway.pki.revocation.IssuerLookup`."""
        return self._issuers.get(hashlib.sha256(cert.public_bytes(Encoding.DER)).digest())

    def cached(self, leaf_der: bytes, sets: Sequence[AnchorSet], purpose: Purpose,
               now: float) -> ValidatedChain | None:
        """The remembered validation of this leaf to these sets for this purpose, if it holds at `now`: what a
        caller asks first, before parsing anything the client presented."""
        known = self._validated.get(_key(leaf_der, sets, purpose))
        if known is not None and known.valid_from <= datetime.fromtimestamp(now, UTC) <= known.valid_until:
            return known
        return None

    def validate_der(self, chain: Sequence[bytes], sets: Sequence[AnchorSet], purpose: Purpose,
                     now: float) -> ValidatedChain:
        """`validate` for DER certificates, leaf first (an `x5c`): parsed only when not remembered."""
        known = self.cached(chain[0], sets, purpose, now)
        if known is not None:
            return known
        try:
            certs = [x509.load_der_x509_certificate(der) for der in chain]
        except ValueError as exc:
            raise ChainRefused("invalid", f"a certificate of the chain cannot be parsed: {exc}") from None
        return self.validate(chain[0], certs[0], certs[1:], sets, purpose, now)

    def validate(self, leaf_der: bytes, leaf: x509.Certificate, presented: Sequence[x509.Certificate],
                 sets: Sequence[AnchorSet], purpose: Purpose, now: float) -> ValidatedChain:
        """The path from `leaf` (with the `presented` intermediates and each set's own) to a root of the first of
        `sets` it validates to, at now ± skew; ChainRefused (the first set's reason, unless a later one knew the
        issuer) when none."""
        if not sets:
            raise ValueError("validate needs at least one anchor set")
        known = self.cached(leaf_der, sets, purpose, now)
        if known is not None:
            return known
        moment = datetime.fromtimestamp(now, UTC)
        key = _key(leaf_der, sets, purpose)
        if len(presented) > MAX_PRESENTED:
            raise ChainRefused("invalid", f"more than {MAX_PRESENTED} intermediate certificates presented")
        refusals = []
        for anchor_set in sets:
            try:
                chain = self._validate_one(leaf, presented, anchor_set, purpose, moment)
            except ChainRefused as exc:
                refusals.append(exc)
                continue
            self._remember(key, chain)
            return chain
        raise next((r for r in refusals if r.code != "unknown_issuer"), refusals[0])

    def _validate_one(self, leaf: x509.Certificate, presented: Sequence[x509.Certificate], anchor_set: AnchorSet,
                      purpose: Purpose, moment: datetime) -> ValidatedChain:
        intermediates = [*presented, *anchor_set.intermediates]
        ca_policy, ee_policy = self._policies[purpose]
        moments = (moment, moment - self._skew, moment + self._skew) if self._skew else (moment,)
        first: VerificationError | None = None
        for at in moments:
            verifier = (PolicyBuilder().store(anchor_set.store).time(at).max_chain_depth(MAX_DEPTH)
                        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy).build_client_verifier())
            try:
                path = tuple(verifier.verify(leaf, intermediates).chain)
            except VerificationError as exc:
                first = first or exc
                if _classify(str(exc))[0] != "expired":
                    break  # only the validity dates depend on the moment
                continue
            if len(path) < 2:  # pragma: no cover - a leaf is never its own anchor (roots are CAs, leaves not)
                raise ChainRefused("invalid", "the certificate is itself a trust anchor")
            return ValidatedChain(
                certificates=path, anchors=anchor_set.name, purpose=purpose,
                valid_from=max(c.not_valid_before_utc for c in path) - self._skew,
                valid_until=min(c.not_valid_after_utc for c in path) + self._skew,
            )
        assert first is not None
        code, detail = _classify(str(first))
        raise ChainRefused(code, self._describe(code, detail, leaf, [*intermediates, *anchor_set.roots],
                                                anchor_set, purpose, moment))

    def _describe(self, code: ChainCode, detail: str, leaf: x509.Certificate,
                  candidates: Sequence[x509.Certificate], anchor_set: AnchorSet, purpose: Purpose,
                  moment: datetime) -> str:
        where = f"trust.certificate_authorities.{anchor_set.name}"
        if code == "unknown_issuer":
            why = "" if "no interior errors" in detail else f" ({detail})"
            return (f"the certificate (issuer {leaf.issuer.rfc4514_string()}) does not chain to a root of {where} "
                    f"({purpose}){why}")
        if code == "expired":
            stale = _out_of_date(leaf, candidates, moment, self._skew)
            return f"a certificate of the chain to {where} is out of date" + (f": {stale}" if stale else "")
        if code == "not_ca":
            return f"an issuing certificate of the chain to {where} is not a CA: {detail}"
        return f"the chain to {where} ({purpose}) is refused: {detail}"

    def _remember(self, key: _Key, chain: ValidatedChain) -> None:
        self._validated[key] = chain
        self._validated.move_to_end(key)
        self._issuers[key[0]] = chain.issuer
        self._issuers.move_to_end(key[0])
        while len(self._validated) > self.max_remembered:
            self._validated.popitem(last=False)  # the oldest
        while len(self._issuers) > self.max_remembered:
            self._issuers.popitem(last=False)
