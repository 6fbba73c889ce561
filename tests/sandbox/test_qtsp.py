"""The sandbox's test CA as a QTSP: the certificates `mint-cert` issues name its CRL (`/qtsp/crl.der`) and OCSP
responder (`/qtsp/ocsp`) on the sandbox listener; `revoke-cert` revokes one; the gateway's own revocation checker
(gateway.pki.revocation, on a loopback URL policy) reads both answers from the running sandbox."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from gateway.jose.url_guard import UrlPolicy
from gateway.pki.psd2 import psd2_certificate
from gateway.pki.revocation import RevocationChecker, crl_urls, ocsp_urls
from gateway.sandbox.certificates import SandboxCa, generate_private_key, ob_subject
from tests.sandbox.conftest import Bank
from tests.sandbox.test_cli import run_cli, write_config
from tests.sandbox.test_transport_certificates import leaf_of, mint, run

LOOPBACK = UrlPolicy(allow_http=True, allow_loopback=True)


def ca_of(report: dict[str, Any]) -> x509.Certificate:
    """The test CA's certificate, as mint-cert reports it."""
    return x509.load_pem_x509_certificate(Path(report["ca_certificate"]).read_bytes())


@pytest.fixture
async def checker() -> AsyncIterator[RevocationChecker]:
    """A checker with a cold cache (each test asks afresh)."""
    checker = RevocationChecker(policy=LOOPBACK)
    yield checker
    await checker.close()


async def statuses(leaf: x509.Certificate, ca: x509.Certificate) -> tuple[str, str]:
    """(OCSP, CRL) answers about `leaf`, each from a checker of its own with a cold cache."""
    out = []
    for method in ("ocsp", "crl"):
        checker = RevocationChecker(policy=LOOPBACK)
        try:
            out.append((await checker.check(leaf, ca, [method])).status)  # type: ignore[list-item]
        finally:
            await checker.close()
    return out[0], out[1]


async def test_a_minted_certificate_is_good_then_revoked(bank: Bank, tmp_path: Path) -> None:
    """mint-cert's certificate names the sandbox's CRL and OCSP URLs; both say good; after revoke-cert (by PEM
    file) both say revoked, with the reason given."""
    config = write_config(bank, tmp_path / "config.yaml")
    report = mint(config, tmp_path / "tpp")
    leaf, ca = leaf_of(report), ca_of(report)
    assert crl_urls(leaf) == [bank.sandbox_url + "/qtsp/crl.der"]
    assert ocsp_urls(leaf) == [bank.sandbox_url + "/qtsp/ocsp"]
    leaf.verify_directly_issued_by(ca)  # re-signed with the pointers, still the CA's
    assert await statuses(leaf, ca) == ("good", "good")

    code, out, err = run("sandbox", "revoke-cert", "--config", str(config), report["certificate"],
                         "--reason", "cessation_of_operation")
    assert code == 0, err
    entry = json.loads(out)
    assert entry["serial"] == f"{leaf.serial_number:x}" and entry["reason"] == "cessation_of_operation"
    assert await statuses(leaf, ca) == ("revoked", "revoked")
    checker = RevocationChecker(policy=LOOPBACK)
    try:
        answer = (await checker.check(leaf, ca, ["ocsp"])).answers[0]
    finally:
        await checker.close()
    assert answer.reason == "cessation_of_operation"


async def test_a_qwac_keeps_its_qcstatements_beside_the_revocation_pointers(bank: Bank, tmp_path: Path) -> None:
    """mint-cert --type qwac: the re-signed certificate still carries its PSD2 QCStatements (read by
    gateway.pki.psd2) and names the CRL and OCSP responder, which say good."""
    config = write_config(bank, tmp_path / "config.yaml")
    report = mint(config, tmp_path / "qwac", "--type", "qwac", "--roles", "PSP_AI,PSP_PI")
    leaf = leaf_of(report)
    info = psd2_certificate(leaf)
    assert info.statements is not None and info.statements.qwac and info.roles == ("PSP_AI", "PSP_PI")
    assert crl_urls(leaf) and ocsp_urls(leaf)
    assert await statuses(leaf, ca_of(report)) == ("good", "good")


async def test_a_serial_the_ca_never_issued_is_unknown_to_the_responder(bank: Bank, tmp_path: Path,
                                                                         checker: RevocationChecker) -> None:
    """A certificate signed with the test CA's key but never recorded by mint-cert: OCSP says unknown (not good),
    and revoke-cert refuses it in one line."""
    config = write_config(bank, tmp_path / "config.yaml")
    report = mint(config, tmp_path / "tpp")
    state_dir = Path(bank.settings.sandbox.state_dir)
    ca = SandboxCa.load(state_dir)
    key = generate_private_key("ec")
    stray = ca.issue(key.public_key(), ob_subject(org_name="x", org_id="y", software_id="z"), days=1)
    from gateway.sandbox.qtsp import with_revocation_pointers

    stray = with_revocation_pointers(ca, stray, bank.sandbox_url)
    status = await checker.check(stray, ca_of(report), ["ocsp"])
    assert status.status == "unknown" and status.answers[0].outcome == "unknown"
    code, out, err = run("sandbox", "revoke-cert", "--config", str(config), f"{stray.serial_number:x}")
    assert code == 1 and out == "" and err.startswith("error: ") and "was not issued" in err and err.count("\n") == 1


async def test_the_responder_answers_for_its_own_ca_only(bank: Bank) -> None:
    """An OCSP request about another CA's certificate is answered `unauthorized`; a malformed one
    `malformedRequest`; both HTTP 200 as RFC 6960 has it."""
    other = SandboxCa.load(Path(bank.settings.sandbox.state_dir).parent / "other-ca")
    key = generate_private_key("ec")
    leaf = other.issue(key.public_key(), ob_subject(org_name="x", org_id="y", software_id="z"), days=1)
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, other.cert, hashes.SHA1()).build()
    for body, expected in ((request.public_bytes(serialization.Encoding.DER), ocsp.OCSPResponseStatus.UNAUTHORIZED),
                           (b"\x30\x03junk", ocsp.OCSPResponseStatus.MALFORMED_REQUEST)):
        async with bank.http.post(bank.sandbox_url + "/qtsp/ocsp", data=body,
                                  headers={"Content-Type": "application/ocsp-request"}) as r:
            assert r.status == 200 and r.content_type == "application/ocsp-response"
            assert ocsp.load_der_ocsp_response(await r.read()).response_status == expected


@pytest.mark.process
async def test_revoked_with_the_cli_as_a_process(bank: Bank, tmp_path: Path) -> None:
    """The CLI as a process: mint-cert, then revoke-cert by serial; the running sandbox's CRL and OCSP responder
    both say revoked."""
    config = write_config(bank, tmp_path / "config.yaml")
    code, stdout, err = await run_cli("sandbox", "mint-cert", "--config", str(config), "--out", str(tmp_path / "t"))
    assert code == 0, err
    report = json.loads(stdout)
    leaf, ca = leaf_of(report), ca_of(report)
    assert await statuses(leaf, ca) == ("good", "good")
    code, stdout, err = await run_cli("sandbox", "revoke-cert", "--config", str(config), f"{leaf.serial_number:X}")
    assert code == 0, err
    assert json.loads(stdout)["reason"] == "key_compromise"
    assert await statuses(leaf, ca) == ("revoked", "revoked")
