"""`client_certificate.psd2`: require a QWAC (or an OB certificate with accept_obwac), PSD2 roles covering the
requested scopes or the SSA's software roles, the organizationIdentifier naming the SSA's organisation — each
option's allow and refusal through a real gateway (tests/checks/world.py), with certificates made here whose
QCStatements DER is assembled by hand (tests/pki/asn1.py), never by the parser under test."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.pki.psd2 import psd2_certificate
from tests.checks.world import ORG_ID, REGISTER, SUBJECT, World, keys
from tests.conftest import SHIPPED_POLICIES
from tests.pki.asn1 import WEB, certificate, psd2, psd2_subject, qc_type, qseal, qwac, seq
from tests.waiting import eventually

_POST_CHECK = "      - client_certificate: {match_software_jwks: true, match_tls_client_auth_dn: true}\n"


def policy_dir(tmp_path: Path, psd2: dict[str, Any]) -> Path:
    """The shipped bank policies, with `psd2` on POST's client_certificate (the certificates made here are not
    in the TPP's key set: match_software_jwks is off; the DN is still matched)."""
    out = tmp_path / "policies"
    out.mkdir(parents=True)
    for src in SHIPPED_POLICIES.glob("*.yaml"):
        (out / src.name).write_text(src.read_text())
    dcr = (out / "dcr.yaml").read_text()
    assert _POST_CHECK in dcr
    params = {"match_software_jwks": False, "match_tls_client_auth_dn": True, "psd2": psd2}
    (out / "dcr.yaml").write_text(dcr.replace(_POST_CHECK, f"      - client_certificate: {json.dumps(params)}\n", 1))
    return out


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


QWAC_AI_PI = der(certificate(psd2_subject(), qwac(["PSP_AI", "PSP_PI"])))
QWAC_ALL = der(certificate(psd2_subject(), qwac(["PSP_AI", "PSP_PI", "PSP_IC"])))
QSEALC = der(certificate(psd2_subject(), qseal(["PSP_AI", "PSP_PI", "PSP_IC"])))
OB_CERT = der(certificate(psd2_subject(None)))
WEB_NOT_QUALIFIED = der(certificate(psd2_subject(), seq(qc_type(WEB), psd2(["PSP_AI"]))))
MALFORMED_QC = der(certificate(psd2_subject(), qwac() + b"\x00"))


async def world(dcr_world, tmp_path: Path, psd2: dict[str, Any], **kw: Any) -> World:
    return await dcr_world(policy_dir=policy_dir(tmp_path, psd2), **kw)


async def post(w: World, cert: bytes, **claims: Any):
    return await w.gw.client.post(REGISTER, data=w.request(**claims), headers={**w.headers(cert=False),
                                                                           **w.cert_header(cert)})


async def refused(resp, reason_count: float, w: World, reason: str, status: int, error: str, needle: str) -> None:
    body = await resp.json()
    assert resp.status == status, body
    assert body["error"] == error and re.search(needle, body["error_description"]), body
    assert w.denials(reason) == reason_count


# -- require: qwac ----------------------------------------------------------------------------------------------

async def test_require_qwac_accepts_a_qwac_and_refuses_a_qsealc_and_an_ob_certificate(dcr_world, tmp_path):
    w = await world(dcr_world, tmp_path, {"require": "qwac"})
    resp = await post(w, QSEALC)
    await refused(resp, 1, w, "client_cert_not_qwac", 400, "invalid_client_metadata", "QSealC")
    resp = await post(w, OB_CERT)
    await refused(resp, 2, w, "client_cert_not_qwac", 400, "invalid_client_metadata", "no QCStatements.*accept_obwac")
    resp = await post(w, WEB_NOT_QUALIFIED)
    await refused(resp, 3, w, "client_cert_not_qwac", 400, "invalid_client_metadata", "QcCompliance")
    resp = await post(w, QWAC_AI_PI)
    assert resp.status == 201, await resp.text()


async def test_accept_obwac_lets_a_certificate_without_qc_statements_through_but_never_a_qsealc(dcr_world, tmp_path):
    w = await world(dcr_world, tmp_path, {"require": "qwac", "accept_obwac": True})
    resp = await post(w, OB_CERT)
    assert resp.status == 201, await resp.text()
    resp = await post(w, keys().cert)  # the world's OB transport certificate: subject without organizationIdentifier
    assert resp.status == 201, await resp.text()
    resp = await post(w, QSEALC)
    assert resp.status == 400 and w.denials("client_cert_not_qwac") == 1
    assert w.registrations() == 2


async def test_require_qwac_at_a_token_style_status_is_401(dcr_world, tmp_path):
    """`status`/`error` set the answer of client_cert_not_qwac, as of the other certificate refusals."""
    out = policy_dir(tmp_path, {"require": "qwac"})
    dcr = (out / "dcr.yaml").read_text().replace('"psd2": {"require": "qwac"}',
                                                 '"psd2": {"require": "qwac"}, "status": 401')
    (out / "dcr.yaml").write_text(dcr)
    w = await dcr_world(policy_dir=out)
    resp = await post(w, QSEALC)
    assert resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_malformed_qc_statements_are_refused_only_when_an_option_reads_them(dcr_world, tmp_path):
    w = await world(dcr_world, tmp_path, {"require": "qwac"})
    resp = await post(w, MALFORMED_QC)
    await refused(resp, 1, w, "client_cert_qc_malformed", 400, "invalid_client_metadata", "trailing bytes")
    w = await world(dcr_world, tmp_path / "off", {})
    resp = await post(w, MALFORMED_QC)
    assert resp.status == 201, await resp.text()


# -- roles_cover ---------------------------------------------------------------------------------------------

async def test_roles_cover_scopes(dcr_world, tmp_path):
    """accounts needs PSP_AI, payments PSP_PI, fundsconfirmations PSP_IC; openid none."""
    w = await world(dcr_world, tmp_path, {"roles_cover": "scopes"})
    resp = await post(w, QWAC_AI_PI, scope="openid accounts payments fundsconfirmations")
    await refused(resp, 1, w, "client_cert_psd2_roles_missing", 400, "invalid_client_metadata",
                  r"scope fundsconfirmations \(needs PSP_IC\); it has PSP_AI, PSP_PI")
    resp = await post(w, QSEALC, scope="openid accounts")  # roles_cover alone does not ask for a QWAC
    assert resp.status == 201, await resp.text()
    resp = await post(w, QWAC_AI_PI, scope="openid accounts payments")
    assert resp.status == 201, await resp.text()
    resp = await post(w, QWAC_ALL)
    assert resp.status == 201, await resp.text()
    resp = await post(w, QWAC_AI_PI, scope=["openid accounts", "fundsconfirmations"])  # the list form
    await refused(resp, 2, w, "client_cert_psd2_roles_missing", 400, "invalid_client_metadata",
                  r"scope fundsconfirmations \(needs PSP_IC\)")


async def test_roles_cover_scopes_without_a_scope_claim_reads_the_software_roles(dcr_world, tmp_path):
    """OB DCR 3.1 has no scope claim (a policy that does not require it): the SSA's roles are what is asked."""
    out = policy_dir(tmp_path, {"roles_cover": "scopes"})
    dcr = (out / "dcr.yaml").read_text()
    optional = "required_claims: [redirect_uris, token_endpoint_auth_method, grant_types, software_statement]"
    (out / "dcr.yaml").write_text(dcr.replace("&fapi_metadata {", "&fapi_metadata {" + optional + ", ", 1))
    w = await dcr_world(policy_dir=out)
    resp = await post(w, QWAC_AI_PI, scope=None)
    await refused(resp, 1, w, "client_cert_psd2_roles_missing", 400, "invalid_client_metadata",
                  r"software role CBPII \(needs PSP_IC\)")
    ssa = w.ssa(software_roles=["AISP", "PISP"])
    resp = await post(w, QWAC_AI_PI, scope=None, software_statement=ssa)
    assert resp.status == 201, await resp.text()


async def test_roles_cover_software_roles(dcr_world, tmp_path):
    w = await world(dcr_world, tmp_path, {"roles_cover": "software_roles"})
    resp = await post(w, QWAC_AI_PI, scope="openid accounts")  # the scope is not what is compared
    await refused(resp, 1, w, "client_cert_psd2_roles_missing", 400, "invalid_client_metadata",
                  r"software role CBPII \(needs PSP_IC\)")
    resp = await post(w, OB_CERT, scope="openid accounts")
    await refused(resp, 2, w, "client_cert_psd2_roles_missing", 400, "invalid_client_metadata",
                  r"none \(no PSD2 QCStatement\)")
    ssa = w.ssa(software_roles=["AISP", "PISP"])
    resp = await post(w, QWAC_AI_PI, scope="openid accounts payments", software_statement=ssa)
    assert resp.status == 201, await resp.text()


async def test_accept_obwac_skips_roles_for_certificates_without_qc_statements(dcr_world, tmp_path):
    w = await world(dcr_world, tmp_path, {"roles_cover": "software_roles", "accept_obwac": True})
    resp = await post(w, OB_CERT)
    assert resp.status == 201, await resp.text()
    resp = await post(w, QWAC_AI_PI)  # an eIDAS certificate is still held to its roles
    assert resp.status == 400 and w.denials("client_cert_psd2_roles_missing") == 1


async def test_the_scope_roles_mapping_is_configurable(dcr_world, tmp_path):
    w = await world(dcr_world, tmp_path, {"roles_cover": "scopes", "scope_roles": {"accounts": "PSP_IC"}})
    resp = await post(w, QWAC_AI_PI, scope="openid accounts payments")
    await refused(resp, 1, w, "client_cert_psd2_roles_missing", 400, "invalid_client_metadata",
                  r"scope accounts \(needs PSP_IC\)")


# -- organization_matches ------------------------------------------------------------------------------------

AUTHORITY = {"authority_id": "FCAGBR", "registration_id": "123456", "status": "Active",
             "authorisations": [{"member_state": "GB", "roles": ["AISP", "PISP"]}]}


@pytest.mark.parametrize("authority_id", ["FCAGBR", "GB-FCA", "GBFCA", "fca"])
async def test_organization_matches_the_competent_authority_claims(dcr_world, tmp_path, authority_id):
    w = await world(dcr_world, tmp_path, {"organization_matches": True})
    ssa = w.ssa(organisation_competent_authority_claims={**AUTHORITY, "authority_id": authority_id})
    resp = await post(w, QWAC_ALL, software_statement=ssa)
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(("authority", "org", "needle"), [
    ({**AUTHORITY, "registration_id": "654321"}, "PSDGB-FCA-123456", "registration_id"),
    ({**AUTHORITY, "authority_id": "PRAGBR"}, "PSDGB-FCA-123456", "names authority GB-FCA"),
    ({**AUTHORITY, "authority_id": "FCADEU"}, "PSDGB-FCA-123456", "names authority GB-FCA"),
    (AUTHORITY, "PSDIE-CBI-123456", "names authority IE-CBI"),
    (AUTHORITY, "VATGB-123456", "not in the PSD form"),
    (AUTHORITY, None, "no organizationIdentifier"),
    ({**AUTHORITY, "registration_id": 123456}, "PSDGB-FCA-123456", "lack a text"),
])
async def test_organization_mismatches_are_refused(dcr_world, tmp_path, authority, org, needle):
    w = await world(dcr_world, tmp_path, {"organization_matches": True})
    ssa = w.ssa(organisation_competent_authority_claims=authority)
    cert = der(certificate(psd2_subject(org), qwac()))
    resp = await post(w, cert, software_statement=ssa)
    await refused(resp, 1, w, "client_cert_organization_mismatch", 400, "invalid_software_statement", needle)


async def test_without_competent_authority_claims_the_org_id_is_compared(dcr_world, tmp_path):
    w = await world(dcr_world, tmp_path, {"organization_matches": True})
    resp = await post(w, der(certificate(psd2_subject(f"PSDGB-OB-{ORG_ID}"), qwac())))
    assert resp.status == 201, await resp.text()
    resp = await post(w, QWAC_ALL)  # PSDGB-FCA-123456: not the SSA's org_id
    await refused(resp, 1, w, "client_cert_organization_mismatch", 400, "invalid_software_statement", "org_id")


# -- facts -------------------------------------------------------------------------------------------------------

async def test_the_decision_event_and_the_backend_see_the_roles_and_the_organization(dcr_world, tmp_path):
    audit = tmp_path / "audit.log"
    w = await world(dcr_world, tmp_path, {"require": "qwac"}, audit_path=audit,
                    policies={"fact_headers": {"client_cert_psd2": "X-DCR-PSD2-Roles"}})
    resp = await post(w, QWAC_AI_PI)
    assert resp.status == 201, await resp.text()
    assert w.backend.hits[0][2]["X-DCR-PSD2-Roles"] == "PSP_AI,PSP_PI"

    def decisions() -> list[dict[str, Any]]:
        return [e for e in map(json.loads, audit.read_text().splitlines()) if e.get("event") == "decision"]

    await eventually(lambda: audit.exists() and len(decisions()) == 1, "the decision event")
    event = decisions()[0]
    assert event["cert_psd2_roles"] == ["PSP_AI", "PSP_PI"]
    assert event["cert_organization_identifier"] == "PSDGB-FCA-123456"


def test_the_certificates_made_here_read_as_intended():
    """The fixtures are what the tests say they are (read once with the parser, to catch a broken fixture)."""
    info = psd2_certificate(x509.load_der_x509_certificate(QWAC_AI_PI))
    assert info.statements is not None and info.statements.qwac and info.roles == ("PSP_AI", "PSP_PI")
    assert psd2_certificate(x509.load_der_x509_certificate(OB_CERT)).statements is None
    assert x509.load_der_x509_certificate(QWAC_AI_PI).subject.rfc4514_string().startswith(
        SUBJECT.split(",")[0] + ",2.5.4.97=PSDGB-FCA-123456")
