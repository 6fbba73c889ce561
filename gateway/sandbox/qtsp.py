"""The sandbox's test CA publishes revocation, as a QTSP does: a CRL (`GET /qtsp/crl.der`, RFC 5280 §5) and an
OCSP responder (`POST /qtsp/ocsp`, RFC 6960), both on the sandbox listener and signed by the test CA's own key.

`mint-cert` records every certificate it issues in the state directory's index (`transport-ca-index.json`) and
names these two URLs in it (CRL distribution point, AIA OCSP); `dcr-gateway sandbox revoke-cert <serial|PEM>`
marks one revoked there. The responder answers `good` for a certificate of the index, `revoked` (with time and
reason) for a revoked one, `unknown` for a serial the CA never issued, and `unauthorized` for another CA's.
Answers are short-lived (`VALIDITY`), so a revocation reaches a gateway within minutes, as it would in life.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from .certificates import CertificateError, SandboxCa, read_certificates
from .keyring import ensure_state_dir
from .service import SANDBOX

INDEX_FILE: Final = "transport-ca-index.json"
CRL_PATH: Final = "/qtsp/crl.der"
OCSP_PATH: Final = "/qtsp/ocsp"
VALIDITY: Final = timedelta(minutes=5)
"""nextUpdate of the CRL and of OCSP answers: how long a relying party may cache them."""
REASONS: Final = {flag.name: flag for flag in x509.ReasonFlags if flag not in (
    x509.ReasonFlags.unspecified, x509.ReasonFlags.remove_from_crl)}
"""Revocation reasons `revoke-cert --reason` accepts (RFC 5280 §5.3.1 CRLReason names)."""
_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def with_revocation_pointers(ca: SandboxCa, cert: x509.Certificate, base_url: str) -> x509.Certificate:
    """`cert` re-signed by the CA with its CRL distribution point and AIA OCSP responder under `base_url` (the
    sandbox listener's URL): every extension of `cert` kept, same subject, key, serial and validity."""
    base = base_url.rstrip("/")
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(cert.public_key()).serial_number(cert.serial_number)
               .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc))
    for extension in cert.extensions:
        if not isinstance(extension.value, x509.CRLDistributionPoints | x509.AuthorityInformationAccess):
            builder = builder.add_extension(extension.value, extension.critical)
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(base + CRL_PATH)], None, None, None)
    responder = x509.UniformResourceIdentifier(base + OCSP_PATH)
    access = x509.AccessDescription(AuthorityInformationAccessOID.OCSP, responder)
    builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


# -- the index of issued certificates ----------------------------------------------------------------


def _read_index(state_dir: Path) -> dict[str, dict[str, Any]]:
    path = state_dir / INDEX_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CertificateError(f"{path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise CertificateError(f"{path} is not a JSON object")
    return data


def _write_index(state_dir: Path, index: dict[str, dict[str, Any]]) -> None:
    path = state_dir / INDEX_FILE
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)  # atomic: the responder never reads half a file


def _serial(value: int) -> str:
    return f"{value:x}"


def record_issued(state_dir: Path, cert: x509.Certificate) -> None:
    """Add a certificate the test CA issued to the index (good until revoked)."""
    index = _read_index(ensure_state_dir(state_dir))
    index[_serial(cert.serial_number)] = {"subject": cert.subject.rfc4514_string(),
                                          "not_after": cert.not_valid_after_utc.isoformat(),
                                          "revoked_at": None, "reason": None}
    _write_index(state_dir, index)


def parse_serial_or_pem(value: str) -> int:
    """A serial number (hex, `0x` and `:` separators allowed) or the path of a PEM whose first certificate's."""
    path = Path(value)
    if path.is_file():
        return read_certificates(path.read_bytes())[0].serial_number
    text = value.lower().removeprefix("0x").replace(":", "")
    try:
        serial = int(text, 16)
    except ValueError:
        raise CertificateError(f"{value!r} is neither a PEM file nor a hexadecimal serial number") from None
    if serial <= 0:
        raise CertificateError("a serial number is positive (RFC 5280 §4.1.2.2)")
    return serial


def revoke(state_dir: Path, serial: int, *, reason: str = "key_compromise", now: datetime | None = None
           ) -> dict[str, Any]:
    """Mark a certificate of the index revoked (once: the first revocation's time and reason stay)."""
    if reason not in REASONS:
        raise CertificateError(f"reason must be one of {', '.join(REASONS)}")
    index = _read_index(state_dir)
    entry = index.get(_serial(serial))
    if entry is None:
        raise CertificateError(f"serial {_serial(serial)} was not issued by the sandbox's test CA (mint-cert)")
    if entry.get("revoked_at") is None:
        entry["revoked_at"] = (now or datetime.now(UTC)).replace(microsecond=0).isoformat()
        entry["reason"] = reason
        _write_index(state_dir, index)
    return {"serial": _serial(serial), **entry}


def _revoked(index: dict[str, dict[str, Any]]) -> dict[int, tuple[datetime, x509.ReasonFlags]]:
    out: dict[int, tuple[datetime, x509.ReasonFlags]] = {}
    for serial, entry in index.items():
        if entry.get("revoked_at"):
            out[int(serial, 16)] = (datetime.fromisoformat(entry["revoked_at"]), REASONS[entry["reason"]])
    return out


# -- CRL and OCSP --------------------------------------------------------------------------------------


def crl_der(ca: SandboxCa, state_dir: Path, now: datetime) -> bytes:
    """The test CA's complete CRL: every revoked certificate of the index, valid `VALIDITY` from `now`."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(now).next_update(now + VALIDITY)
               .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    for serial, (when, reason) in sorted(_revoked(_read_index(state_dir)).items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            .add_extension(x509.CRLReason(reason), critical=False).build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def ocsp_response_der(ca: SandboxCa, state_dir: Path, request_der: bytes, now: datetime) -> bytes:
    """The DER OCSP response to a DER request, signed by the test CA (responder id: its key hash)."""
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        algorithm = _HASHES[request.hash_algorithm.name]()
    except (ValueError, KeyError):
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    name_hash, key_hash = _issuer_hashes(ca, algorithm)
    if (request.issuer_name_hash, request.issuer_key_hash) != (name_hash, key_hash):
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)  # RFC 6960 §2.3: not a CA we answer for
    index = _read_index(state_dir)
    revoked = _revoked(index)
    serial = request.serial_number
    revocation_time, reason = revoked.get(serial, (None, None))
    if revocation_time is not None:
        status = ocsp.OCSPCertStatus.REVOKED
    elif _serial(serial) in index:
        status = ocsp.OCSPCertStatus.GOOD
    else:
        status = ocsp.OCSPCertStatus.UNKNOWN
    builder = (ocsp.OCSPResponseBuilder()
               .add_response_by_hash(issuer_name_hash=name_hash, issuer_key_hash=key_hash, serial_number=serial,
                                     algorithm=algorithm, cert_status=status, this_update=now,
                                     next_update=now + VALIDITY, revocation_time=revocation_time,
                                     revocation_reason=reason)
               .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.cert))
    try:
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value
    except x509.ExtensionNotFound:
        pass
    else:
        builder = builder.add_extension(nonce, critical=False)  # RFC 8954: echoed
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _issuer_hashes(ca: SandboxCa, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """RFC 6960 §4.1.1 CertID: the hash of the issuer's DN and of its public key's BIT STRING."""
    name = ca.cert.subject.public_bytes()
    key = ca.key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return _digest(algorithm, name), _digest(algorithm, key)


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


# -- the routes ----------------------------------------------------------------------------------------


def _state_dir(request: web.Request) -> Path:
    return request.app[SANDBOX].config.state_dir


async def serve_crl(request: web.Request) -> web.Response:
    """GET /qtsp/crl.der: the test CA's current CRL (DER)."""
    state_dir = _state_dir(request)

    def build() -> bytes:
        return crl_der(SandboxCa.load(state_dir), state_dir, datetime.now(UTC).replace(microsecond=0))

    body = await asyncio.to_thread(build)
    return web.Response(body=body, content_type="application/pkix-crl",
                        headers={"Cache-Control": f"max-age={int(VALIDITY.total_seconds())}"})


async def answer_ocsp(request: web.Request) -> web.Response:
    """POST /qtsp/ocsp: the test CA's OCSP responder (RFC 6960 appendix A.1: application/ocsp-request)."""
    if request.content_type != "application/ocsp-request":
        raise web.HTTPUnsupportedMediaType(text="expected application/ocsp-request")
    state_dir = _state_dir(request)
    request_der = await request.read()

    def build() -> bytes:
        return ocsp_response_der(SandboxCa.load(state_dir), state_dir, request_der,
                                 datetime.now(UTC).replace(microsecond=0))

    body = await asyncio.to_thread(build)
    return web.Response(body=body, content_type="application/ocsp-response")


def add_routes(app: web.Application) -> None:
    """The QTSP's two routes on the sandbox listener."""
    app.router.add_get(CRL_PATH, serve_crl)
    app.router.add_post(OCSP_PATH, answer_ocsp)
