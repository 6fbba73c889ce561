"""`sandbox mint-cert` and `sandbox tpp-key --transport-cert`: test transport certificates from the sandbox's test
CA, listed in the TPP's hosted key set as `use: tls` keys, accepted by the gateway's `client_certificate` check.

The CLI runs in this process (its parser and command functions, as `dcr-gateway` calls them); certificates are
checked with `cryptography`'s own verifier, key sets with jwcrypto directly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import stat
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store
from jwcrypto import jwk

from gateway.cli import build_parser
from gateway.policy.testing import forwarded_certificate
from gateway.sandbox.certificates import CA_CERT_FILE, CA_KEY_FILE
from gateway.sandbox.crypto import CryptoError, KeySet
from tests.sandbox.conftest import CLIENT_CERT_HEADER, SANDBOX_ISSUER, Bank, sign_jws
from tests.sandbox.test_cli import run_cli, write_config


def run(*argv: str) -> tuple[int, str, str]:
    """`dcr-gateway …` in this process: (exit code, stdout, stderr)."""
    args = build_parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


def mint(config: Path, out: Path, *extra: str) -> dict[str, Any]:
    """`sandbox mint-cert`, which must succeed; its JSON report."""
    code, stdout, stderr = run("sandbox", "mint-cert", "--config", str(config), "--out", str(out), *extra)
    assert code == 0, stderr
    report: dict[str, Any] = json.loads(stdout)
    return report


def leaf_of(report: dict[str, Any]) -> x509.Certificate:
    """The leaf of the certificate file mint-cert wrote."""
    return x509.load_pem_x509_certificates(Path(report["certificate"]).read_bytes())[0]


def der(cert: x509.Certificate) -> bytes:
    """The certificate's DER."""
    return cert.public_bytes(Encoding.DER)


def x5t_s256(data: bytes) -> str:
    """RFC 7517 §4.9, computed here independently of the code under test."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose sandbox state directory is tmp_path/state."""
    path = tmp_path / "config.yaml"
    path.write_text(f"sandbox: {{state_dir: '{tmp_path / 'state'}'}}\n")
    return path


@pytest.mark.parametrize("key_type, key_class", [("ec", ec.EllipticCurvePublicKey), ("rsa", rsa.RSAPublicKey)])
def test_minted_certificate_chains_to_the_ca_with_the_ob_subject(config: Path, tmp_path: Path, key_type,
                                                                 key_class) -> None:
    """The leaf verifies against the test CA as a TLS client certificate; subject C, O, OU = org_id, CN =
    software_id; clientAuth only; SHA-256; the private files are 0600."""
    report = mint(config, tmp_path / "tpp", "--software-id", "CertSoftware1", "--org-id", "0015800001041RHAAY",
                  "--org-name", "Cert TPP Ltd", "--key-type", key_type, "--days", "30")
    leaf, issuer = x509.load_pem_x509_certificates((tmp_path / "tpp" / "transport-cert.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "state" / CA_CERT_FILE).read_bytes())
    assert der(issuer) == der(ca)
    assert report["ca_certificate"] == str(tmp_path / "state" / CA_CERT_FILE)

    # cryptography's RFC 5280 path validation for a client certificate (a subjectAltName is not required: OB
    # transport certificates name the software in the subject).
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC,
                                                              None)
    verifier = (PolicyBuilder().store(Store([ca])).time(datetime.now(UTC))
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
                .build_client_verifier())
    chain = verifier.verify(leaf, []).chain
    assert [der(c) for c in chain] == [der(leaf), der(ca)]

    assert leaf.subject.rfc4514_string() == "CN=CertSoftware1,OU=0015800001041RHAAY,O=Cert TPP Ltd,C=GB"
    assert report["subject_dn"] == leaf.subject.rfc4514_string()
    assert [a.oid for a in leaf.subject] == [NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME,
                                             NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.signature_hash_algorithm is not None and leaf.signature_hash_algorithm.name == "sha256"
    assert isinstance(leaf.public_key(), key_class)
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days in (30, 29)
    assert report["x5t#S256"] == x5t_s256(der(leaf))

    key_file = tmp_path / "tpp" / "transport-key.pem"
    assert report["private_key"] == str(key_file)
    private = load_pem_private_key(key_file.read_bytes(), password=None)
    assert private.public_key() == leaf.public_key()
    for private_file in (key_file, tmp_path / "state" / CA_KEY_FILE):
        assert stat.S_IMODE(private_file.stat().st_mode) == 0o600
    assert "PRIVATE" not in report.values() and "BEGIN" not in json.dumps(report)


def test_the_ca_is_made_once_and_kept(config: Path, tmp_path: Path) -> None:
    """A second mint-cert issues from the same CA (same key and certificate); defaults are random Base62 ids
    (as mint-ssa's) and the sandbox's org name."""
    first = mint(config, tmp_path / "a")
    ca_pem = (tmp_path / "state" / CA_CERT_FILE).read_bytes()
    second = mint(config, tmp_path / "b")
    assert (tmp_path / "state" / CA_CERT_FILE).read_bytes() == ca_pem
    ca = x509.load_pem_x509_certificate(ca_pem)
    for report in (first, second):
        leaf = x509.load_pem_x509_certificates(Path(report["certificate"]).read_bytes())[0]
        leaf.verify_directly_issued_by(ca)
        assert len(report["software_id"]) == 22 and len(report["org_id"]) == 18
        assert report["subject_dn"] == f"CN={report['software_id']},OU={report['org_id']},O=Sandbox TPP Ltd,C=GB"
    assert first["software_id"] != second["software_id"]
    code, _, err = run("sandbox", "mint-cert", "--config", str(config), "--out", str(tmp_path / "a"))
    assert code == 1 and err.startswith("error: ") and "already exists" in err


def test_tpp_key_lists_the_transport_certificate_as_a_tls_key(config: Path, tmp_path: Path) -> None:
    """tpp-key --transport-cert: beside the signing key, a use: tls key with the DER chain in x5c (standard
    base64), x5t#S256 of the leaf, and the leaf's public key; an existing signing key is kept."""
    out = tmp_path / "tpp"
    code, kid, _ = run("sandbox", "tpp-key", "--out", str(out), "--alg", "ES256")
    assert code == 0
    report = mint(config, out)
    code, again, err = run("sandbox", "tpp-key", "--out", str(out), "--transport-cert", report["certificate"])
    assert code == 0, err
    assert again == kid  # the signing key is kept
    doc = json.loads((out / "jwks.json").read_text())
    signing, tls = doc["keys"]
    assert (signing["kid"], signing["use"]) == (kid.strip(), "sig")
    leaf, ca = x509.load_pem_x509_certificates(Path(report["certificate"]).read_bytes())
    assert tls["use"] == "tls"
    assert tls["x5c"] == [base64.b64encode(der(leaf)).decode(), base64.b64encode(der(ca)).decode()]
    assert [base64.b64decode(c, validate=True) for c in tls["x5c"]] == [der(leaf), der(ca)]
    assert tls["x5t#S256"] == x5t_s256(der(leaf)) == report["x5t#S256"]
    public = jwk.JWK(**{k: v for k, v in tls.items() if k in ("kty", "crv", "x", "y", "n", "e")}).get_op_key("verify")
    assert public.public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & tls.keys()


@pytest.mark.parametrize("what", ["not_pem", "wrong_order", "missing"])
def test_transport_cert_errors_are_one_line(config: Path, tmp_path: Path, what) -> None:
    """A file that is not a certificate chain, leaf first, is refused before anything is written."""
    report = mint(config, tmp_path / "c")
    leaf_then_ca = Path(report["certificate"]).read_bytes()
    path = tmp_path / "cert.pem"
    if what == "not_pem":
        path.write_text("not a certificate\n")
    elif what == "wrong_order":
        certs = x509.load_pem_x509_certificates(leaf_then_ca)
        path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in reversed(certs)))
    code, out, err = run("sandbox", "tpp-key", "--out", str(tmp_path / "tpp"), "--transport-cert", str(path))
    assert code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "tpp").exists()


def test_a_tls_key_never_verifies_a_signature(config: Path, tmp_path: Path) -> None:
    """The sandbox's key set keeps use: tls keys apart: a JWS signed by the transport key under its kid fails."""
    report = mint(config, tmp_path / "c")
    code, _, _ = run("sandbox", "tpp-key", "--out", str(tmp_path / "tpp"), "--alg", "ES256",
                     "--transport-cert", report["certificate"])
    assert code == 0
    doc = json.loads((tmp_path / "tpp" / "jwks.json").read_text())
    keys = KeySet.from_document(doc)
    tls = doc["keys"][1]
    assert keys.has_certificate(report["x5t#S256"]) and tls["kid"] not in keys
    transport = jwk.JWK.from_pem(Path(report["private_key"]).read_bytes())
    token = sign_jws(transport, "ES256", tls["kid"], {"iss": "x"})
    with pytest.raises(CryptoError):
        asyncio.run(keys.verify(token))
    no_x5c = {k: v for k, v in tls.items() if k != "x5c"}
    assert tls["kid"] not in KeySet.from_document({"keys": [doc["keys"][0], no_x5c]})


async def test_hosted_key_set_refuses_a_tls_key_whose_certificate_is_not_its_key(bank: Bank, tmp_path: Path) -> None:
    """POST /sandbox/tpp-jwks: x5c must hold the key (RFC 7517 §4.7) and x5t#S256 must be its thumbprint."""
    config = write_config(bank, tmp_path / "config.yaml")
    one, two = mint(config, tmp_path / "one"), mint(config, tmp_path / "two")
    await asyncio.to_thread(run, "sandbox", "tpp-key", "--out", str(tmp_path / "tpp"), "--alg", "ES256",
                            "--transport-cert", one["certificate"])
    doc = json.loads((tmp_path / "tpp" / "jwks.json").read_text())
    swapped = {**doc["keys"][1], "x5c": [base64.b64encode(der(leaf_of(two))).decode()], "x5t#S256": two["x5t#S256"]}
    wrong_x5t = {**doc["keys"][1], "x5t#S256": two["x5t#S256"]}
    for bad in (swapped, wrong_x5t):
        async with bank.http.post(bank.sandbox_url + "/sandbox/tpp-jwks", json={"keys": [doc["keys"][0], bad]}) as r:
            assert r.status == 400, await r.text()


@pytest.mark.process
async def test_mint_cert_adds_the_certificate_to_the_hosted_key_set_in_one_step(bank: Bank, tmp_path: Path) -> None:
    """mint-cert --add-to-jwks DIR --register (the CLI as a process): the new certificate is a use: tls key of
    DIR's key set beside DIR's existing signing key, hosted on the running sandbox; without DIR, --register is
    refused before anything is issued."""
    config = write_config(bank, tmp_path / "config.yaml")
    out = tmp_path / "tpp"
    code, kid, err = await run_cli("sandbox", "tpp-key", "--out", str(out), "--alg", "ES256")
    assert code == 0, err
    code, stdout, err = await run_cli("sandbox", "mint-cert", "--config", str(config), "--out", str(out),
                                      "--add-to-jwks", str(out), "--register")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["kid"] == kid.strip() == (out / "kid").read_text().strip()  # the signing key is kept
    assert report["jwks"] == str(out / "jwks.json") and "next" not in report
    assert report["jwks_uri"] == (out / "jwks_uri").read_text().strip()
    async with bank.http.get(report["jwks_uri"]) as r:
        hosted = await r.json()
    assert hosted == json.loads((out / "jwks.json").read_text())
    signing, tls = hosted["keys"]
    assert (signing["kid"], signing["use"], tls["use"]) == (report["kid"], "sig", "tls")
    leaf = leaf_of(report)
    assert tls["x5t#S256"] == x5t_s256(der(leaf)) == report["x5t#S256"]
    assert base64.b64decode(tls["x5c"][0], validate=True) == der(leaf)

    code, stdout, err = await run_cli("sandbox", "mint-cert", "--config", str(config), "--out", str(tmp_path / "x"),
                                      "--register")
    assert code == 1 and stdout == "" and err.startswith("error: ") and "--add-to-jwks" in err
    assert not (tmp_path / "x").exists()


async def _registration(bank: Bank, config: Path, tmp_path: Path, name: str, **sign: str) -> tuple[str, dict]:
    """mint-cert, tpp-key --transport-cert --register, mint-ssa and sign-request, all from the CLI; returns the
    request JWS and mint-cert's report."""
    out = tmp_path / name
    report = mint(config, out)
    code, _, err = await asyncio.to_thread(run, "sandbox", "tpp-key", "--config", str(config), "--out", str(out),
                                           "--transport-cert", report["certificate"], "--register")
    assert code == 0, err
    jwks_uri = (out / "jwks_uri").read_text().strip()
    async with bank.http.get(jwks_uri) as r:
        hosted = await r.json()
    assert hosted == json.loads((out / "jwks.json").read_text())
    assert [k["use"] for k in hosted["keys"]] == ["sig", "tls"]
    assert hosted["keys"][1]["x5t#S256"] == report["x5t#S256"]
    code, ssa, err = run("sandbox", "mint-ssa", "--config", str(config), "--software-id", report["software_id"],
                         "--org-id", report["org_id"], "--jwks-endpoint", jwks_uri,
                         "--redirect-uri", "https://tpp.example.com/callback")
    assert code == 0, err
    (out / "ssa.jwt").write_text(ssa)
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in sign.items()]
    code, request, err = run("sandbox", "sign-request", "--config", str(config), "--key",
                             str(out / "private-key.pem"), "--ssa", f"@{out / 'ssa.jwt'}", "--aud", SANDBOX_ISSUER,
                             "--scope", "accounts payments", *extra)
    assert code == 0, err
    return request.strip(), report


def _cert_header(report: dict[str, Any]) -> dict[str, str]:
    """The header an nginx ingress sends for the minted leaf ($ssl_client_escaped_cert)."""
    return {CLIENT_CERT_HEADER: forwarded_certificate(der(leaf_of(report)), "nginx")}


async def test_gateway_accepts_a_registration_over_the_minted_certificate(bank_factory, tmp_path: Path) -> None:
    """End to end through the shipped policies with `client_certificate` enforced: a registration whose
    transport certificate came from mint-cert and whose key set came from tpp-key --transport-cert is 201;
    another minted certificate, not in that key set, is 400 client_cert_not_in_software_jwks."""
    bank: Bank = await bank_factory(shipped_policies=True, enforce_client_certificate=True)
    config = write_config(bank, tmp_path / "config.yaml")
    app_id, app_secret = await bank.create_app("certs")
    app_token = await bank.token(app_id, app_secret)

    request, report = await _registration(bank, config, tmp_path, "tpp")
    stranger = mint(config, tmp_path / "stranger")
    status, body, _ = await bank.register(app_token, request, headers={"client_id": app_id, **_cert_header(stranger)})
    assert status == 400, body
    assert body["error"] == "invalid_software_statement"
    assert "use: tls" in body["error_description"]
    status, body, _ = await bank.register(app_token, request, headers={"client_id": app_id})
    assert status == 400 and body["error_description"].startswith("a TLS client certificate is required")

    status, created, _ = await bank.register(app_token, request, headers={"client_id": app_id,
                                                                          **_cert_header(report)})
    assert status == 201, created
    assert created["software_id"] == report["software_id"]


async def test_gateway_accepts_tls_client_auth_naming_the_minted_subject(bank_factory, tmp_path: Path) -> None:
    """tls_client_auth with mint-cert's subject DN passes the gateway's DN and key-set matching."""
    bank: Bank = await bank_factory(shipped_policies=True, enforce_client_certificate=True)
    config = write_config(bank, tmp_path / "config.yaml")
    app_id, app_secret = await bank.create_app("certs-dn")
    app_token = await bank.token(app_id, app_secret)
    out = tmp_path / "dn"
    report = mint(config, out, "--software-id", "DnSoftware1", "--org-id", "0015800001041RDAAY")
    code, _, err = await asyncio.to_thread(run, "sandbox", "tpp-key", "--config", str(config), "--out", str(out),
                                           "--transport-cert", report["certificate"], "--register")
    assert code == 0, err
    jwks_uri = (out / "jwks_uri").read_text().strip()
    _, ssa, _ = run("sandbox", "mint-ssa", "--config", str(config), "--software-id", "DnSoftware1",
                    "--org-id", "0015800001041RDAAY", "--jwks-endpoint", jwks_uri)
    (out / "ssa.jwt").write_text(ssa)
    def signed(dn: str) -> str:
        code, request, err = run("sandbox", "sign-request", "--config", str(config), "--key",
                                 str(out / "private-key.pem"), "--ssa", f"@{out / 'ssa.jwt'}", "--aud",
                                 SANDBOX_ISSUER, "--scope", "accounts", "--token-endpoint-auth-method",
                                 "tls_client_auth", "--tls-client-auth-subject-dn", dn)
        assert code == 0, err
        return request.strip()

    headers = {"client_id": app_id, **_cert_header(report)}
    other = "CN=DnSoftware2,OU=0015800001041RDAAY,O=Sandbox TPP Ltd,C=GB"
    status, body, _ = await bank.register(app_token, signed(other), headers=headers)
    assert status == 400 and "does not match" in body["error_description"], body
    status, created, _ = await bank.register(app_token, signed(report["subject_dn"]), headers=headers)
    assert status == 201, created
    assert created["tls_client_auth_subject_dn"] == report["subject_dn"]


def test_a_loose_or_mismatched_ca_is_tightened_or_refused(config: Path, tmp_path: Path) -> None:
    """A CA key readable by others is made 0600 on use; a CA certificate that does not hold the CA key is an
    error (nothing is issued), never silently replaced."""
    mint(config, tmp_path / "a")
    state = tmp_path / "state"
    (state / CA_KEY_FILE).chmod(0o644)
    mint(config, tmp_path / "b")
    assert stat.S_IMODE((state / CA_KEY_FILE).stat().st_mode) == 0o600
    other = mint(_other_config(tmp_path), tmp_path / "c")
    (state / CA_CERT_FILE).write_bytes(Path(other["ca_certificate"]).read_bytes())
    code, out, err = run("sandbox", "mint-cert", "--config", str(config), "--out", str(tmp_path / "d"))
    assert code == 1 and out == "" and "does not hold the key" in err
    assert not (tmp_path / "d" / "transport-key.pem").exists()


def _other_config(tmp_path: Path) -> Path:
    """A config with another state directory (so another test CA)."""
    path = tmp_path / "other.yaml"
    path.write_text(f"sandbox: {{state_dir: '{tmp_path / 'other-state'}'}}\n")
    return path


@pytest.mark.parametrize("argv, needle", [
    (["--days", "0"], "--days"),
    (["--days", "826"], "--days"),
    (["--org-name", ""], "org name"),
    (["--software-id", "x" * 65], "software_id"),
])
def test_mint_cert_errors_are_one_line(config: Path, tmp_path: Path, argv, needle) -> None:
    """Bad options exit 1 with one `error:` line; nothing is written, not even the CA."""
    code, out, err = run("sandbox", "mint-cert", "--config", str(config), "--out", str(tmp_path / "c"), *argv)
    assert code == 1 and out == "" and err.startswith("error: ") and needle in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists() and not (tmp_path / "state").exists()
