"""`dcr-gateway sandbox mint-cert --type qwac|qseal|obwac`: the sandbox plays the QTSP. The QCStatements it
writes are compared byte for byte with DER assembled independently (tests/pki/asn1.py), read back by the
gateway's parser (gateway/pki/psd2.py), and the key usages are those of each type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki.psd2 import psd2_certificate
from tests.pki.asn1 import QC_STATEMENTS, WEB, compliance, psd2, qc_type, qseal, qwac, seq
from tests.sandbox.test_cli import run_cli
from tests.sandbox.test_transport_certificates import leaf_of, run


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"sandbox: {{state_dir: '{tmp_path / 'state'}'}}\n")
    return path


def _ca(report: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificates(Path(report["certificate"]).read_bytes())[1]


def _qc(cert: x509.Certificate) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_oid(QC_STATEMENTS).value
    except x509.ExtensionNotFound:
        return None
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier] | None:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None


def _org_identifier(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)]


@pytest.mark.process
async def test_mint_cert_types_from_the_command_line(config: Path, tmp_path: Path) -> None:
    """Each --type, as `dcr-gateway` runs: what a QTSP would issue, chained to the sandbox CA."""
    reports = {}
    for cert_type in ("transport", "qwac", "qseal", "obwac"):
        extra = [] if cert_type == "transport" else ["--type", cert_type, "--roles", "PSP_AI,PSP_PI"]
        code, out, err = await run_cli("sandbox", "mint-cert", "--config", str(config), "--out",
                                       str(tmp_path / cert_type), *extra)
        assert code == 0, err
        reports[cert_type] = json.loads(out)
    certs = {t: leaf_of(r) for t, r in reports.items()}
    for cert_type, cert in certs.items():
        cert.verify_directly_issued_by(_ca(reports[cert_type]))
        assert reports[cert_type]["type"] == cert_type

    transport = certs["transport"]
    assert _qc(transport) is None and _org_identifier(transport) == []
    assert _eku(transport) == {ExtendedKeyUsageOID.CLIENT_AUTH}

    qwac_cert = certs["qwac"]
    assert _qc(qwac_cert) == qwac(["PSP_AI", "PSP_PI"])
    assert _eku(qwac_cert) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert _org_identifier(qwac_cert) == ["PSDGB-FCA-123456"]
    assert reports["qwac"]["organization_identifier"] == "PSDGB-FCA-123456"
    assert reports["qwac"]["psd2_roles"] == ["PSP_AI", "PSP_PI"] and reports["qwac"]["nca_id"] == "GB-FCA"
    policies = cert_policies(qwac_cert)
    assert policies == ["0.4.0.194112.1.4"]  # QCP-w

    seal = certs["qseal"]
    assert _qc(seal) == qseal(["PSP_AI", "PSP_PI"])
    assert _eku(seal) is None  # no TLS usage at all
    usage = seal.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and not usage.key_encipherment
    assert cert_policies(seal) == ["0.4.0.194112.1.1"]  # QCP-l

    obwac = certs["obwac"]
    assert _qc(obwac) is None and _org_identifier(obwac) == ["PSDGB-FCA-123456"]
    assert _eku(obwac) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert "psd2_roles" not in reports["obwac"]


def cert_policies(cert: x509.Certificate) -> list[str]:
    return [p.policy_identifier.dotted_string
            for p in cert.extensions.get_extension_for_class(x509.CertificatePolicies).value]


def test_nca_options_and_the_gateway_reads_what_the_sandbox_wrote(config: Path, tmp_path: Path) -> None:
    code, out, err = run("sandbox", "mint-cert", "--config", str(config), "--out", str(tmp_path / "c"),
                         "--type", "qwac", "--roles", "PSP_IC,PSP_AS", "--nca-id", "IE-CBI",
                         "--nca-name", "Central Bank of Ireland", "--registration-id", "C12345",
                         "--key-type", "rsa")
    assert code == 0, err
    cert = leaf_of(json.loads(out))
    assert _qc(cert) == seq(compliance(), qc_type(WEB), psd2(["PSP_IC", "PSP_AS"], "Central Bank of Ireland",
                                                             "IE-CBI"))
    info = psd2_certificate(cert)
    assert info.statements is not None and info.statements.qwac and info.roles == ("PSP_IC", "PSP_AS")
    assert str(info.organization) == "PSDIE-CBI-C12345"
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment  # RSA key exchange for TLS


@pytest.mark.parametrize("argv, needle", [
    (["--type", "qwac", "--roles", "PSP_XX"], "roles"),
    (["--type", "qwac", "--roles", "PSP_AI,PSP_AI"], "roles"),
    (["--type", "qseal", "--roles", ""], "roles"),
    (["--type", "qwac", "--nca-id", "fca"], "NCA id"),
    (["--type", "qwac", "--nca-id", "IE-CBI", "--nca-country", "GB"], "another country"),
    (["--type", "obwac", "--nca-country", "gbr"], "country"),
    (["--type", "qwac", "--registration-id", "12 34"], "registration id"),
    (["--type", "qwac", "--nca-name", "x" * 257], "NCA name"),
    (["--type", "qwac-ish"], "invalid choice"),
])
def test_mint_cert_psd2_errors_are_one_line(config: Path, tmp_path: Path, argv, needle, capsys) -> None:
    """Bad PSD2 options exit with one error line naming the option; nothing is written."""
    try:
        code, out, err = run("sandbox", "mint-cert", "--config", str(config), "--out", str(tmp_path / "c"), *argv)
    except SystemExit as exc:  # argparse's own refusal (an unknown --type)
        code, out, err = exc.code, "", capsys.readouterr().err
        assert code == 2 and needle in err
        return
    assert code == 1 and out == "" and err.startswith("error: ") and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "c").exists()
