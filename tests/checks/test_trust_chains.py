"""Chain validation through real gateways: `client_certificate` `anchors` (the transport certificate, with the
chain the ingress forwards or the configured intermediates) and `registration_request` `x5c_anchors` (the
`x5c` of the TPP key that signed the request), against a local CA hierarchy made here (the validation itself:
tests/pki/test_chain.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.jose import transport_jwk
from gateway.policy.testing import forwarded_certificate
from tests.checks.world import REGISTER, World, b64, keys
from tests.conftest import ROOT
from tests.pki import asn1
from tests.pki.hierarchy import DAY, EMAIL, Issued, crl, encipher_only_usage, root, signing_usage
from tests.waiting import eventually

NOW = datetime.now(UTC)
XFCC = "x-forwarded-client-cert"
SHIPPED = (ROOT / "policies" / "dcr.yaml").read_text()
CERT_CHECK = "client_certificate: {match_software_jwks: true, match_tls_client_auth_dn: true}"
REQUEST_CHECK = "registration_request: {algorithms: [PS256, ES256], max_lifetime_seconds: 3600}"


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    """A transport and a signing hierarchy, dated around now (the gateway reads the real clock)."""
    r = root("Test OB Root")
    inter = r.issue("Test OB Issuing CA", ca=True, not_before=NOW - 30 * DAY, not_after=NOW + 365 * DAY)
    return {"root": r, "inter": inter,
            "leaf": inter.issue("tpp-transport", not_before=NOW - DAY, not_after=NOW + 90 * DAY)}


def _policies(tmp_path: Path, cert_params: str = "", request_params: str = "") -> Path:
    """The shipped bank-profile dcr.yaml, with chain parameters added to its checks."""
    text = SHIPPED
    if cert_params:
        text = text.replace(CERT_CHECK, CERT_CHECK[:-1] + f", {cert_params}}}")
    if request_params:
        text = text.replace(REQUEST_CHECK, REQUEST_CHECK[:-1] + f", {request_params}}}")
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "dcr.yaml").write_text(text)
    return directory


def _anchors(tmp_path: Path, pki: dict[str, Issued], *, intermediates: bool, purpose: str = "transport",
             name: str = "ob_issuing") -> dict[str, Any]:
    ca: dict[str, Any] = {"purpose": purpose, "roots": [str(tmp_path / pki["root"].write(tmp_path / "root.pem"))]}
    if intermediates:
        ca["intermediates"] = [str(tmp_path / pki["inter"].write(tmp_path / "inter.pem"))]
    return {name: ca}


async def _transport_world(dcr_world, tmp_path: Path, pki: dict[str, Issued], *, intermediates: bool = False,
                           leaves: tuple[Issued, ...] = ()) -> World:
    """A gateway whose client_certificate validates to `ob_issuing` with certificates forwarded in XFCC; the
    TPP's key set lists `leaves` (and the module's good leaf) as its transport keys."""
    w = await dcr_world(
        policy_dir=_policies(tmp_path, "anchors: [ob_issuing]"), audit_path=tmp_path / "audit.log",
        trust={"certificate_authorities": _anchors(tmp_path, pki, intermediates=intermediates),
               "client_certificate": {"header": XFCC, "format": "xfcc", "trusted_proxies": ["127.0.0.1/32"]}})
    w.tpp.jwks = {"keys": [*w.tpp.jwks["keys"], *(transport_jwk([leaf.der], kid=f"tls-{i}")
                                                   for i, leaf in enumerate((pki["leaf"], *leaves)))]}
    return w


def _xfcc(leaf: Issued, *chain: Issued) -> str:
    value = f'Hash=x;Cert="{forwarded_certificate(leaf.der, "nginx")}"'
    if chain:
        pems = "".join(forwarded_certificate(c.der, "nginx") for c in (leaf, *chain))
        value += f';Chain="{pems}"'
    return value


async def _post(w: World, leaf: Issued, *chain: Issued) -> Any:
    headers = {**w.headers(cert=False), XFCC: _xfcc(leaf, *chain)}
    return await w.gw.client.post(REGISTER, data=w.request(), headers=headers)


async def test_a_transport_certificate_chaining_through_the_forwarded_intermediate_registers(dcr_world, tmp_path,
                                                                                              pki):
    """XFCC Chain carries the intermediate: 201, and the decision event names the issuer, serial and anchor set."""
    w = await _transport_world(dcr_world, tmp_path, pki)
    resp = await _post(w, pki["leaf"], pki["inter"])
    assert resp.status == 201, await resp.text()
    log = tmp_path / "audit.log"

    def decisions() -> list[dict[str, Any]]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [json.loads(line) for line in lines if '"event":"decision"' in line]

    await eventually(lambda: bool(decisions()), "the decision event")
    event = decisions()[-1]
    assert event["cert_issuer"] == "CN=Test OB Issuing CA,C=GB"
    assert event["cert_serial"] == format(pki["leaf"].cert.serial_number, "x")
    assert event["cert_anchors"] == "ob_issuing"


async def test_without_the_intermediate_the_issuer_is_unknown_then_configured_intermediates_complete_it(
        dcr_world, tmp_path, pki):
    """The leaf alone, no configured intermediate: 400 client_cert_chain_unknown_issuer; with the intermediate
    configured in the anchor set, the same request registers."""
    (tmp_path / "a").mkdir()
    w = await _transport_world(dcr_world, tmp_path / "a", pki)
    resp = await _post(w, pki["leaf"])
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_client_metadata"
    assert "does not chain to a root of trust.certificate_authorities.ob_issuing" in body["error_description"]
    assert w.denials("client_cert_chain_unknown_issuer") == 1 and w.registrations() == 0
    (tmp_path / "b").mkdir()
    w2 = await _transport_world(dcr_world, tmp_path / "b", pki, intermediates=True)
    resp = await _post(w2, pki["leaf"])
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(("fault", "reason", "says"), [
    ("expired_intermediate", "client_cert_chain_expired", "CN=Old CA,C=GB expired at"),
    ("wrong_eku", "client_cert_chain_wrong_eku", "has no clientAuth"),
    ("unknown_ca", "client_cert_chain_unknown_issuer", "does not chain to a root"),
    ("ca_false_intermediate", "client_cert_chain_not_ca", "basicConstraints.cA must be asserted"),
])
async def test_a_bad_chain_is_refused_with_its_own_reason(dcr_world, tmp_path, pki, fault, reason, says):
    """Each fault of the chain is its own reason, with a description that says what was wrong."""
    r = pki["root"]
    if fault == "expired_intermediate":
        inter = r.issue("Old CA", ca=True, not_before=NOW - 400 * DAY, not_after=NOW - DAY)
        leaf = inter.issue("tpp", not_before=NOW - 2 * DAY, not_after=NOW + 90 * DAY)
    elif fault == "wrong_eku":
        inter = pki["inter"]
        leaf = inter.issue("tpp", eku=(EMAIL,), not_before=NOW - DAY, not_after=NOW + 90 * DAY)
    elif fault == "unknown_ca":
        inter = root("Unknown Root").issue("Unknown CA", ca=True, not_before=NOW - DAY, not_after=NOW + 90 * DAY)
        leaf = inter.issue("tpp", not_before=NOW - DAY, not_after=NOW + 90 * DAY)
    else:
        inter = r.issue("Not A CA", ca=True, ca_flag=False, not_before=NOW - DAY, not_after=NOW + 90 * DAY)
        leaf = inter.issue("tpp", not_before=NOW - DAY, not_after=NOW + 90 * DAY)
    w = await _transport_world(dcr_world, tmp_path, pki, leaves=(leaf,))
    resp = await _post(w, leaf, inter)
    assert resp.status == 400
    assert says in (await resp.json())["error_description"]
    assert w.denials(reason) == 1 and w.registrations() == 0


async def test_an_unknown_or_signing_anchor_set_is_a_policy_load_error(dcr_world, tmp_path, pki):
    """`anchors` naming a set that is not configured, or one for signing, fails at load (never at run time)."""
    from gateway.policy import PolicyError

    with pytest.raises(PolicyError, match="is for signing, not transport"):
        await dcr_world(policy_dir=_policies(tmp_path, "anchors: [ob_signing]"),
                        trust={"certificate_authorities": _anchors(tmp_path, pki, intermediates=False,
                                                                   purpose="signing", name="ob_signing")})


# -- x5c of the signing key ----------------------------------------------------------------------------------


def _signing_leaf(pki: dict[str, Issued], **kw: Any) -> Issued:
    """A QSealC-like certificate for the TPP's PS256 request-signing key."""
    private = load_pem_private_key(keys().tpp_rsa.to_pem(), password=None)
    options = {"eku": None, "usage": signing_usage(), "not_before": NOW - DAY, "not_after": NOW + 90 * DAY, **kw}
    return pki["inter"].issue("tpp-seal", public_key=private.public_key(), **options)  # type: ignore[arg-type]


async def _signing_world(dcr_world, tmp_path: Path, pki: dict[str, Issued], x5c: list[Issued] | None,
                         params: str = "x5c_anchors: [ob_signing]") -> World:
    """A gateway whose registration_request validates x5c to `ob_signing`; the TPP's signing key carries `x5c`."""
    w = await dcr_world(policy_dir=_policies(tmp_path, request_params=params),
                        trust={"certificate_authorities": _anchors(tmp_path, pki, intermediates=False,
                                                                   purpose="signing", name="ob_signing")})
    jwks = [dict(k) for k in w.tpp.jwks["keys"]]
    for key in jwks:
        if key.get("kid") == keys().tpp_rsa.kid and x5c is not None:
            key["x5c"] = [b64(c.der) for c in x5c]
    w.tpp.jwks = {"keys": jwks}
    return w


async def test_a_request_signed_with_a_key_whose_x5c_chains_to_the_signing_anchor_registers(dcr_world, tmp_path,
                                                                                             pki):
    """x5c = [seal, intermediate] to the configured signing root: 201."""
    w = await _signing_world(dcr_world, tmp_path, pki, [_signing_leaf(pki), pki["inter"]])
    resp = await w.post(w.request())
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(("case", "reason", "says"), [
    ("no_intermediate", "signing_key_x5c_unknown_issuer", "does not chain to a root"),
    ("expired_leaf", "signing_key_x5c_expired", "CN=tpp-seal,C=GB expired at"),
    ("transport_usage", "signing_key_x5c_wrong_key_usage", "neither digitalSignature nor nonRepudiation"),
    ("no_x5c_required", "signing_key_x5c_missing", "carries no x5c"),
])
async def test_a_signing_key_with_a_bad_x5c_is_refused(dcr_world, tmp_path, pki, case, reason, says):
    """Each fault of the signing key's x5c is its own 400 invalid_client_metadata reason."""
    params = "x5c_anchors: [ob_signing]"
    if case == "no_intermediate":
        x5c: list[Issued] | None = [_signing_leaf(pki)]
    elif case == "expired_leaf":
        x5c = [_signing_leaf(pki, not_before=NOW - 90 * DAY, not_after=NOW - DAY), pki["inter"]]
    elif case == "transport_usage":
        x5c = [_signing_leaf(pki, usage=encipher_only_usage()), pki["inter"]]
    else:
        x5c, params = None, "x5c_anchors: [ob_signing], x5c_required: true"
    w = await _signing_world(dcr_world, tmp_path, pki, x5c, params)
    resp = await w.post(w.request())
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_client_metadata" and says in body["error_description"]
    assert w.denials(reason) == 1 and w.registrations() == 0


async def test_a_key_without_x5c_passes_unless_required(dcr_world, tmp_path, pki):
    """x5c_anchors alone judges the keys that carry x5c; a plain JWK is still accepted."""
    w = await _signing_world(dcr_world, tmp_path, pki, None)
    assert (await w.post(w.request())).status == 201


@pytest.mark.parametrize(("statements", "params", "status", "says"), [
    (asn1.qseal(), "", 201, None),
    (asn1.qwac(), "", 400, "is a QWAC (QcType web)"),
    (asn1.seq(asn1.qc_type(asn1.ESEAL)), "", 400, "not a qualified certificate"),
    (None, "", 400, "carries no QCStatements"),
    (None, ", x5c_accept_obseal: true", 201, None),
    (asn1.qwac(), ", x5c_accept_obseal: true", 400, "is a QWAC"),
], ids=["qsealc", "qwac", "not-qualified", "obseal", "obseal-accepted", "qwac-with-obseal"])
async def test_x5c_require_qsealc_wants_a_qualified_seal(dcr_world, tmp_path, pki, statements, params, status,
                                                         says):
    """x5c_require: qsealc: the validated leaf must be a QSealC (QcCompliance + QcType eseal); an OB signing
    certificate (no QCStatements) only with x5c_accept_obseal; a QWAC never."""
    leaf = _signing_leaf(pki, qc_statements=statements)
    w = await _signing_world(dcr_world, tmp_path, pki, [leaf, pki["inter"]],
                             "x5c_anchors: [ob_signing], x5c_require: qsealc" + params)
    resp = await w.post(w.request())
    assert resp.status == status, await resp.text()
    if says is not None:
        body = await resp.json()
        assert body["error"] == "invalid_client_metadata" and says in body["error_description"]
        assert w.denials("signing_key_x5c_not_qsealc") == 1 and w.registrations() == 0


def test_x5c_require_needs_anchors() -> None:
    """QCStatements count only in a validated chain: x5c_require without x5c_anchors is a load error."""
    from gateway.checks.registration_request import RegistrationRequestParams

    with pytest.raises(ValueError, match="x5c_require needs x5c_anchors"):
        RegistrationRequestParams.model_validate({"x5c_require": "qsealc"})
    with pytest.raises(ValueError, match="x5c_accept_obseal applies only"):
        RegistrationRequestParams.model_validate({"x5c_anchors": ["s"], "x5c_accept_obseal": True})


# -- chain → revocation: the issuer the chain found signs the CRL ----------------------------------------------


async def test_revocation_is_checked_against_the_issuer_the_chain_validation_found(dcr_world, start_server,
                                                                                    tmp_path, pki):
    """client_certificate {anchors, revocation hard_fail}: the CRL is believed because the validated chain's
    issuer (the forwarded intermediate) signed it; a revoked leaf is refused, a good one registers. Without
    `anchors` no issuer is known: hard_fail refuses with an unknown status."""
    from aiohttp import web

    crls: dict[str, bytes] = {}

    async def serve_crl(_: web.Request) -> web.Response:
        return web.Response(body=crls["now"], content_type="application/pkix-crl")

    app = web.Application()
    app.router.add_get("/crl.der", serve_crl)
    crl_url = str((await start_server(app)).make_url("/crl.der"))
    good = pki["inter"].issue("tpp-good", crl_url=crl_url, not_before=NOW - DAY, not_after=NOW + 90 * DAY)
    bad = pki["inter"].issue("tpp-revoked", crl_url=crl_url, not_before=NOW - DAY, not_after=NOW + 90 * DAY)
    crls["now"] = crl(pki["inter"], [bad], NOW)
    revocation = "revocation: {mode: hard_fail, methods: [crl]}"

    async def world(params: str, where: Path) -> World:
        w = await dcr_world(
            policy_dir=_policies(where, params),
            trust={"certificate_authorities": _anchors(where, pki, intermediates=False),
                   "client_certificate": {"header": XFCC, "format": "xfcc", "trusted_proxies": ["127.0.0.1/32"]},
                   "revocation": {"allow_loopback": True}})
        w.tpp.jwks = {"keys": [*w.tpp.jwks["keys"], transport_jwk([good.der], kid="tls-good"),
                               transport_jwk([bad.der], kid="tls-bad")]}
        return w

    for sub in ("chained", "unchained"):
        (tmp_path / sub).mkdir()
    w = await world(f"anchors: [ob_issuing], {revocation}", tmp_path / "chained")
    assert (await _post(w, good, pki["inter"])).status == 201
    resp = await _post(w, bad, pki["inter"])
    assert resp.status == 400 and w.denials("client_cert_revoked") == 1
    w2 = await world(revocation, tmp_path / "unchained")
    resp = await _post(w2, good, pki["inter"])
    assert resp.status == 400 and w2.denials("client_cert_revocation_unknown") == 1
