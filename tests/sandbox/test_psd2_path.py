"""The PSD2 production path on a laptop, end to end: the sandbox plays the QTSP, a real gateway enforces.

The sandbox's test CA is made before the gateway starts (through the sandbox's own code) and configured as the
gateway's transport anchor `sandbox_ca`; `policies/ob_standard` is copied with its `dcr_register_create`
`client_certificate` asking for the chain, a QWAC whose PSD2 roles cover the SSA's `software_roles`, and the
revocation status (`hard_fail`), which the gateway asks the sandbox's OCSP responder on loopback
(`trust.revocation.allow_loopback`). Certificates come from `sandbox mint-cert` and are revoked with
`sandbox revoke-cert` (the CLI's commands in this process); every registration goes through the gateway,
authenticated by the certificate alone. Each case is run again with one policy option flipped, to show the
assertion is decided by that option.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.sandbox.certificates import CA_CERT_FILE, SandboxCa
from tests.conftest import SHIPPED_POLICIES
from tests.sandbox.conftest import (
    REDIRECT,
    SANDBOX_ISSUER,
    Bank,
    BankFactory,
    _seeded_state_dir,
    tpp_key,
)
from tests.sandbox.test_cli import write_config
from tests.sandbox.test_token_mtls import Cert
from tests.sandbox.test_transport_certificates import leaf_of, mint, run
from tests.waiting import eventually

CREATE_CHECK = "- client_certificate: {required: true, match_software_jwks: true, match_tls_client_auth_dn: true}"
"""The `client_certificate` of the shipped ob_standard `dcr_register_create` (POST), replaced here."""
PSD2_PATH: dict[str, Any] = {
    "anchors": ["sandbox_ca"],
    "psd2": {"require": "qwac", "roles_cover": "software_roles"},
    "revocation": {"mode": "hard_fail"},
}
"""What the production path adds to it: the chain to the QTSP, a QWAC covering the SSA's roles, not revoked."""
SOFTWARE_ROLES = ["AISP", "PISP"]
"""The SSA's roles: PSP_AI and PSP_PI cover them."""


def _policies(tmp_path: Path, params: dict[str, Any]) -> Path:
    """A copy of policies/ob_standard whose dcr_register_create `client_certificate` has `params` added."""
    directory = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICIES / "ob_standard", directory)
    dcr = directory / "dcr.yaml"
    text = dcr.read_text()
    assert text.count(CREATE_CHECK) == 1, "the shipped dcr_register_create check changed"
    check = {"required": True, "match_software_jwks": True, "match_tls_client_auth_dn": True, **params}
    dcr.write_text(text.replace(CREATE_CHECK, f"- client_certificate: {json.dumps(check)}"))
    return directory


def _transport(report: dict[str, Any]) -> Cert:
    """The certificate mint-cert wrote, with its private key (EC: mint-cert's default)."""
    key = load_pem_private_key(Path(report["private_key"]).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Cert(key, leaf_of(report))


class Psd2Bank:
    """The sandbox (the QTSP and the bank) behind a gateway on the PSD2 path; its CLI config and audit file."""

    def __init__(self, bank: Bank, config: Path, audit: Path, ca: x509.Certificate) -> None:
        self.bank, self.config, self.audit, self.ca = bank, config, audit, ca

    def mint(self, out: Path, cert_type: str = "qwac", roles: str = "PSP_AI,PSP_PI") -> dict[str, Any]:
        """`sandbox mint-cert --type … --roles …`: its JSON report."""
        return mint(self.config, out, "--type", cert_type, "--roles", roles, "--nca-id", "FCA")

    def revoke(self, report: dict[str, Any]) -> None:
        """`sandbox revoke-cert <the certificate's PEM>`."""
        code, _, err = run("sandbox", "revoke-cert", "--config", str(self.config), report["certificate"])
        assert code == 0, err

    async def register(self, report: dict[str, Any]) -> tuple[int, Any]:
        """POST a tls_client_auth registration through the gateway, by the minted certificate alone (no token):
        the SSA names the certificate's software and organisation and a key set listing it as `use: tls`."""
        cert = _transport(report)
        tpp = tpp_key("psd2-path")
        jwks_uri = self.bank.tpp.publish(f"psd2-{report['software_id']}", tpp)  # one key set per certificate
        self.bank.tpp.documents[f"psd2-{report['software_id']}"]["keys"].append(cert.tls_jwk("transport"))
        ssa = await self.bank.mint_ssa(software_id=report["software_id"], org_id=report["org_id"],
                                       software_roles=SOFTWARE_ROLES, software_jwks_endpoint=jwks_uri,
                                       software_redirect_uris=[REDIRECT])
        claims = self.bank.registration_claims(ssa, aud=SANDBOX_ISSUER, token_endpoint_auth_method="tls_client_auth",
                                               tls_client_auth_subject_dn=report["subject_dn"])
        status, body, _ = await self.bank.register(None, tpp.sign(claims), headers=cert.header())
        return status, body

    async def decision(self, report: dict[str, Any]) -> dict[str, Any]:
        """The decision event of the registration that presented this certificate."""
        serial = f"{leaf_of(report).serial_number:x}"

        def events() -> list[dict[str, Any]]:
            if not self.audit.exists():
                return []
            lines = self.audit.read_text().splitlines()
            return [e for e in map(json.loads, lines) if e.get("event") == "decision" and e.get("cert_serial") == serial]

        await eventually(lambda: len(events()) == 1, "the registration's decision event")
        return events()[0]


Psd2BankFactory = Callable[..., Awaitable[Psd2Bank]]


@pytest.fixture
async def psd2_bank(bank_factory: BankFactory, seeded_keys: Path, tmp_path: Path) -> Psd2BankFactory:
    """Start the PSD2 path with `PSD2_PATH` changed by `flip` (a parameter's value replaced; None removes it)."""

    async def start(*, allow_loopback: bool = True, **flip: Any) -> Psd2Bank:
        state = _seeded_state_dir(tmp_path / "state", seeded_keys)
        ca = SandboxCa.load(state).cert  # the QTSP's CA exists before the gateway, which reads it at start
        params = {name: value for name, value in {**PSD2_PATH, **flip}.items() if value is not None}
        audit = tmp_path / "audit.log"
        bank = await bank_factory(
            state, shipped_policies=True, enforce_client_certificate=True, profile="ob_standard",
            policy_dir=_policies(tmp_path, params), audit_path=audit,
            gateway_trust={"certificate_authorities": {"sandbox_ca": {"purpose": "transport",
                                                                      "roots": [str(state / CA_CERT_FILE)]}},
                           "revocation": {"allow_loopback": allow_loopback}})
        return Psd2Bank(bank, write_config(bank, tmp_path / "config.yaml"), audit, ca)

    return start


async def test_a_qwac_registers_by_certificate_alone_and_the_decision_names_it(psd2_bank: Psd2BankFactory,
                                                                               tmp_path: Path) -> None:
    """A QWAC from mint-cert registers (201) with no token; the decision event names its issuer (the test CA),
    serial, PSD2 roles, the anchor set it chained to, and the OCSP responder's `good`."""
    path = await psd2_bank()
    report = path.mint(tmp_path / "qwac")
    status, body = await path.register(report)
    assert status == 201, body
    event = await path.decision(report)
    assert event["decision"] == "allow" and event["policy"] == "dcr_register_create"
    assert event["cert_issuer"] == path.ca.subject.rfc4514_string()
    assert event["cert_serial"] == f"{leaf_of(report).serial_number:x}"
    assert event["cert_psd2_roles"] == ["PSP_AI", "PSP_PI"]
    assert event["cert_organization_identifier"] == "PSDGB-FCA-123456"
    assert event["cert_anchors"] == "sandbox_ca"
    assert event["cert_revocation"] == "good:ocsp"


# (case, certificate: (type, roles, revoked before its first use), the PSD2 path with one option flipped,
#  expected: (status, reason, the decision event's cert_revocation)). Each refusal comes with the same certificate
# under the policy without the option that refused it, which lets it through (or to the next check in line).
CASES = [
    pytest.param(("qwac", "PSP_AI,PSP_PI", True), {}, (400, "client_cert_revoked", "revoked:ocsp"),
                 id="revoked: refused, the sandbox's OCSP responder said so"),
    pytest.param(("qwac", "PSP_AI,PSP_PI", True), {"revocation": {"mode": "hard_fail", "methods": ["crl"]}},
                 (400, "client_cert_revoked", "revoked:crl"), id="revoked: the sandbox's CRL says so too"),
    pytest.param(("qwac", "PSP_AI,PSP_PI", True), {"revocation": None}, (201, None, None),
                 id="revoked: registers when revocation is off"),
    pytest.param(("qseal", "PSP_AI,PSP_PI", False), {}, (400, "client_cert_chain_wrong_eku", None),
                 id="QSealC: refused by the chain validation (no clientAuth)"),
    pytest.param(("qseal", "PSP_AI,PSP_PI", False), {"anchors": None, "revocation": None},
                 (400, "client_cert_not_qwac", None), id="QSealC without anchors: not a QWAC"),
    pytest.param(("qseal", "PSP_AI,PSP_PI", False),
                 {"anchors": None, "revocation": None, "psd2": {"roles_cover": "software_roles"}},
                 (201, None, None), id="QSealC: registers with neither anchors nor require"),
    pytest.param(("qwac", "PSP_AI", False), {}, (400, "client_cert_psd2_roles_missing", None),
                 id="QWAC without PSP_PI for a PISP: refused"),
    pytest.param(("qwac", "PSP_AI", False), {"psd2": {"require": "qwac"}}, (201, None, "good:ocsp"),
                 id="QWAC without PSP_PI: registers without roles_cover"),
]


@pytest.mark.parametrize("certificate, flip, expected", CASES)
async def test_what_the_psd2_path_refuses(psd2_bank: Psd2BankFactory, tmp_path: Path,
                                          certificate: tuple[str, str, bool], flip: dict[str, Any],
                                          expected: tuple[int, str | None, str | None]) -> None:
    """A revoked QWAC, a QSealC as transport certificate, a QWAC whose roles do not cover the SSA's: each refused
    with its reason (and the revocation outcome in the decision event), and let through without that option."""
    cert_type, roles, revoked = certificate
    status_expected, reason, revocation = expected
    path = await psd2_bank(**flip)
    report = path.mint(tmp_path / "cert", cert_type, roles)
    if revoked:
        path.revoke(report)  # before the certificate's first use: nothing is cached
    status, body = await path.register(report)
    assert status == status_expected, body
    event = await path.decision(report)
    if reason is None:
        assert event["decision"] == "allow", event
    else:
        assert body["error"] == "invalid_client_metadata", body
        assert (event["decision"], event["check"], event["reason"]) == ("deny", "client_certificate", reason)
    assert event.get("cert_revocation") == revocation, event
    assert event["cert_issuer"] == path.ca.subject.rfc4514_string()
    assert event["cert_serial"] == f"{leaf_of(report).serial_number:x}"
    # The roles are read once the chain is validated: a certificate refused by its chain has none in the event.
    chain_refused = reason is not None and reason.startswith("client_cert_chain_")
    assert event.get("cert_psd2_roles") == (None if chain_refused else roles.split(","))


async def test_an_unreachable_qtsp_is_unknown_and_hard_fail_refuses(psd2_bank: Psd2BankFactory,
                                                                    tmp_path: Path) -> None:
    """The OCSP and CRL URLs are on loopback: without `trust.revocation.allow_loopback` the SSRF guard refuses
    both, the status is unknown and hard_fail refuses a good QWAC (so the good above was the sandbox's answer)."""
    path = await psd2_bank(allow_loopback=False)
    report = path.mint(tmp_path / "qwac")
    status, body = await path.register(report)
    assert status == 400, body
    event = await path.decision(report)
    assert (event["reason"], event["cert_revocation"]) == ("client_cert_revocation_unknown", "unknown")
