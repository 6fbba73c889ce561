"""gateway/pki/chain.py: trust anchors loaded once from config, and chain validation by purpose against a local
CA hierarchy made here (root → intermediate → leaf, with the faults a TPP or a CA can make)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import Store

from gateway.config import ConfigError
from gateway.config.settings import Settings
from gateway.pki.chain import AnchorSet, ChainRefused, ChainValidator, TrustAnchors, ValidatedChain
from tests.pki.hierarchy import DAY, EMAIL, NOW, Issued, encipher_only_usage, root, signing_usage

T = NOW.timestamp()


def _set(name: str, roots: list[Issued], intermediates: list[Issued] = (), purpose: str = "transport") -> AnchorSet:  # type: ignore[assignment]
    certs = tuple(r.cert for r in roots)
    return AnchorSet(name, purpose, certs, tuple(i.cert for i in intermediates), Store(list(certs)))  # type: ignore[arg-type]


def _validator(*sets: AnchorSet, skew: float = 30.0) -> ChainValidator:
    return ChainValidator(TrustAnchors(sets), clock_skew_seconds=skew)


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    """One hierarchy for the module: a root, an intermediate and a good transport leaf."""
    r = root()
    inter = r.issue("Test Issuing CA", ca=True)
    return {"root": r, "inter": inter, "leaf": inter.issue("tpp-software-1")}


def _refused(validator: ChainValidator, leaf: Issued, presented: list[Issued], sets: list[AnchorSet],
             purpose: str = "transport", now: float = T) -> ChainRefused:
    with pytest.raises(ChainRefused) as info:
        validator.validate(leaf.der, leaf.cert, [p.cert for p in presented], sets, purpose, now)  # type: ignore[arg-type]
    return info.value


def test_a_path_through_the_presented_intermediate_ends_in_the_root(pki):
    """root → intermediate → leaf, the intermediate forwarded with the leaf: the path leaf … root, the issuer
    (for revocation) the intermediate."""
    ob = _set("ob", [pki["root"]])
    chain = _validator(ob).validate(pki["leaf"].der, pki["leaf"].cert, [pki["inter"].cert], [ob], "transport", T)
    assert isinstance(chain, ValidatedChain)
    assert chain.certificates == (pki["leaf"].cert, pki["inter"].cert, pki["root"].cert)
    assert chain.leaf == pki["leaf"].cert and chain.issuer == pki["inter"].cert and chain.root == pki["root"].cert
    assert chain.anchors == "ob" and chain.purpose == "transport"
    assert chain.valid_until == pki["leaf"].cert.not_valid_after_utc + timedelta(seconds=30)


def test_a_configured_intermediate_completes_a_path_the_client_did_not_present(pki):
    """The set's intermediates are used when the client (nginx: the leaf alone) sends none."""
    ob = _set("ob", [pki["root"]], [pki["inter"]])
    chain = _validator(ob).validate(pki["leaf"].der, pki["leaf"].cert, [], [ob], "transport", T)
    assert chain.issuer == pki["inter"].cert


def test_without_the_intermediate_the_issuer_is_unknown(pki):
    """No path without the intermediate: unknown_issuer, naming the leaf's issuer and the set."""
    ob = _set("ob", [pki["root"]])
    exc = _refused(_validator(ob), pki["leaf"], [], [ob])
    assert exc.code == "unknown_issuer"
    assert "CN=Test Issuing CA" in exc.description and "trust.certificate_authorities.ob" in exc.description


def test_a_leaf_signed_by_an_unknown_ca_is_refused(pki):
    """A look-alike hierarchy (same names, other keys) does not chain to the configured root."""
    other = root("Test Root CA")
    inter = other.issue("Test Issuing CA", ca=True)
    ob = _set("ob", [pki["root"]], [pki["inter"]])
    exc = _refused(_validator(ob), inter.issue("tpp-software-1"), [inter], [ob])
    assert exc.code == "unknown_issuer"


def test_an_expired_intermediate_is_named(pki):
    """An intermediate past its notAfter: expired, the description names it and when."""
    inter = pki["root"].issue("Old Issuing CA", ca=True, not_after=NOW - DAY)
    ob = _set("ob", [pki["root"]])
    exc = _refused(_validator(ob), inter.issue("tpp"), [inter], [ob])
    assert exc.code == "expired"
    assert "CN=Old Issuing CA,C=GB expired at 2026-05-31" in exc.description


def test_the_clock_skew_forgives_a_certificate_just_out_of_date(pki):
    """Valid at one moment within now ± skew: an intermediate expired 10 s ago passes with 30 s of skew, not with 0."""
    inter = pki["root"].issue("Just Expired CA", ca=True, not_after=NOW - timedelta(seconds=10))
    leaf = inter.issue("tpp")
    ob = _set("ob", [pki["root"]])
    assert _validator(ob, skew=30).validate(leaf.der, leaf.cert, [inter.cert], [ob], "transport", T).issuer
    assert _refused(_validator(ob, skew=0), leaf, [inter], [ob]).code == "expired"
    young = pki["root"].issue("Young CA", ca=True, not_before=NOW + timedelta(seconds=10))
    leaf = young.issue("tpp", not_before=NOW + timedelta(seconds=10))
    assert _validator(ob, skew=30).validate(leaf.der, leaf.cert, [young.cert], [ob], "transport", T).issuer
    assert _refused(_validator(ob, skew=0), leaf, [young], [ob]).code == "expired"


def test_an_intermediate_that_is_not_a_ca_cannot_issue(pki):
    """basicConstraints cA: false on the issuing certificate: not_ca."""
    inter = pki["root"].issue("Not A CA", ca=True, ca_flag=False)
    ob = _set("ob", [pki["root"]])
    exc = _refused(_validator(ob), inter.issue("tpp"), [inter], [ob])
    assert exc.code == "not_ca" and "basicConstraints.cA" in exc.description


def test_an_intermediate_without_key_cert_sign_cannot_issue(pki):
    """keyUsage without keyCertSign on the issuing certificate: not_ca."""
    inter = pki["root"].issue("No CertSign CA", ca=True, key_cert_sign=False)
    ob = _set("ob", [pki["root"]])
    assert _refused(_validator(ob), inter.issue("tpp"), [inter], [ob]).code == "not_ca"


def test_a_ca_certificate_is_not_a_client(pki):
    """A leaf with cA: true: leaf_is_ca."""
    ob = _set("ob", [pki["root"]], [pki["inter"]])
    assert _refused(_validator(ob), pki["inter"].issue("tpp", ca_flag=True), [], [ob]).code == "leaf_is_ca"


@pytest.mark.parametrize("eku", [(EMAIL,), None], ids=["emailProtection", "no EKU"])
def test_a_transport_certificate_needs_client_auth(pki, eku):
    """Transport: extendedKeyUsage must be present with clientAuth."""
    ob = _set("ob", [pki["root"]], [pki["inter"]])
    exc = _refused(_validator(ob), pki["inter"].issue("tpp", eku=eku), [], [ob])
    assert exc.code == "wrong_eku" and "clientAuth" in exc.description


def test_a_transport_certificate_key_usage_must_allow_signatures(pki):
    """Transport: a keyUsage without digitalSignature cannot authenticate a TLS client."""
    ob = _set("ob", [pki["root"]], [pki["inter"]])
    exc = _refused(_validator(ob), pki["inter"].issue("tpp", usage=encipher_only_usage()), [], [ob])
    assert exc.code == "wrong_key_usage" and "digitalSignature" in exc.description


def test_signing_needs_a_signing_key_usage_and_no_eku(pki):
    """Signing (QSealC): digitalSignature/nonRepudiation required; EKU absent or any other passes; clientAuth
    is not asked for."""
    seal = _set("seal", [pki["root"]], [pki["inter"]], purpose="signing")
    v = _validator(seal)
    for eku in (None, (EMAIL,)):
        leaf = pki["inter"].issue("seal", eku=eku, usage=signing_usage())
        assert v.validate(leaf.der, leaf.cert, [], [seal], "signing", T).anchors == "seal"
    assert _refused(v, pki["inter"].issue("seal", eku=None, usage=encipher_only_usage()), [], [seal],
                    "signing").code == "wrong_key_usage"


def test_the_same_certificate_refused_for_one_purpose_passes_for_the_other(pki):
    """A seal without clientAuth is no transport certificate (the purpose is part of the question)."""
    leaf = pki["inter"].issue("seal", eku=None, usage=signing_usage())
    both = [_set("t", [pki["root"]], [pki["inter"]]), _set("s", [pki["root"]], [pki["inter"]], purpose="signing")]
    v = _validator(*both)
    assert v.validate(leaf.der, leaf.cert, [], [both[1]], "signing", T)
    assert _refused(v, leaf, [], [both[0]]).code == "wrong_eku"


def test_the_first_set_that_validates_is_named_and_a_known_issuer_explains_a_refusal(pki):
    """Several sets: tried in order; the result names the one that validated. When none does, a set that knew
    the issuer gives the reason rather than an unknown_issuer from another."""
    eidas = _set("eidas", [root("Some QTSP")])
    ob = _set("ob", [pki["root"]], [pki["inter"]])
    v = _validator(eidas, ob)
    assert v.validate(pki["leaf"].der, pki["leaf"].cert, [], [eidas, ob], "transport", T).anchors == "ob"
    assert _refused(v, pki["inter"].issue("x", eku=(EMAIL,)), [], [eidas, ob]).code == "wrong_eku"


def test_a_validation_is_remembered_until_the_earliest_not_after(pki):
    """Remembered per leaf (no path building on the next request), and forgotten once a certificate of the path
    expires: then the same leaf is refused."""
    inter = pki["root"].issue("Short CA", ca=True, not_after=NOW + DAY)
    leaf = inter.issue("tpp")
    ob = _set("ob", [pki["root"]])
    v = _validator(ob, skew=0)
    first = v.validate(leaf.der, leaf.cert, [inter.cert], [ob], "transport", T)
    assert v.remembered() == 1 and v.cached(leaf.der, [ob], "transport", T) is first
    # Remembered: the intermediate need not be presented again.
    assert v.validate(leaf.der, leaf.cert, [], [ob], "transport", T + 3600) is first
    later = T + 2 * 86400
    assert v.cached(leaf.der, [ob], "transport", later) is None
    assert _refused(v, leaf, [inter], [ob], now=later).code == "expired"


def test_what_is_remembered_is_bounded(pki):
    """Beyond max_remembered the oldest validation is forgotten."""
    ob = _set("ob", [pki["root"]], [pki["inter"]])
    v = ChainValidator(TrustAnchors([ob]), clock_skew_seconds=0, max_remembered=2)
    leaves = [pki["inter"].issue(f"tpp-{i}") for i in range(3)]
    for leaf in leaves:
        v.validate(leaf.der, leaf.cert, [], [ob], "transport", T)
    assert v.remembered() == 2
    assert v.cached(leaves[0].der, [ob], "transport", T) is None
    assert v.cached(leaves[2].der, [ob], "transport", T) is not None


def test_validate_der_parses_an_x5c(pki):
    """x5c: DER leaf first; an unparsable certificate is `invalid`."""
    seal = _set("seal", [pki["root"]], purpose="signing")
    leaf = pki["inter"].issue("seal", eku=None, usage=signing_usage())
    v = _validator(seal)
    assert v.validate_der([leaf.der, pki["inter"].der], [seal], "signing", T).issuer == pki["inter"].cert
    other = pki["inter"].issue("seal-2", eku=None, usage=signing_usage())
    with pytest.raises(ChainRefused) as info:
        v.validate_der([other.der, b"\x30\x03junk"], [seal], "signing", T)
    assert info.value.code == "invalid"


# -- anchors from config -------------------------------------------------------------------------------


def _settings(tmp_path: Path, authorities: dict) -> Settings:
    return Settings.model_validate({"base_dir": str(tmp_path), "trust": {"certificate_authorities": authorities}})


def test_anchors_load_from_files_relative_to_the_config(tmp_path, pki):
    """PEM files relative to the config file's directory, a bundle file holding several certificates."""
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "roots.pem").write_bytes(pki["root"].pem + root("Second Root").pem)
    pki["inter"].write(tmp_path / "pki" / "inter.pem")
    s = _settings(tmp_path, {"ob": {"purpose": "transport", "roots": ["pki/roots.pem"],
                                    "intermediates": ["pki/inter.pem"]}})
    anchors = TrustAnchors.load(s.trust.certificate_authorities)
    ob = anchors.get("ob")
    assert ob is not None and len(ob.roots) == 2 and ob.intermediates == (pki["inter"].cert,)
    assert anchors.names("transport") == ("ob",) and anchors.names("signing") == ()


@pytest.mark.parametrize(("content", "message"), [
    (None, "roots[0]: cannot read"),
    (b"not a certificate", "roots[0]: {path} is not a file of PEM certificates"),
    ("leaf", "roots[0]: {path}: CN=tpp-software-1,C=GB is not a CA certificate"),
])
def test_an_unusable_anchor_file_is_a_config_error_naming_key_and_file(tmp_path, pki, content, message):
    """Missing, not PEM, or not a CA: ConfigError with the key path and the file."""
    path = tmp_path / "root.pem"
    if content == "leaf":
        path.write_bytes(pki["leaf"].pem)
    elif content is not None:
        path.write_bytes(content)
    s = _settings(tmp_path, {"ob": {"purpose": "transport", "roots": ["root.pem"]}})
    with pytest.raises(ConfigError) as info:
        TrustAnchors.load(s.trust.certificate_authorities)
    text = str(info.value.args[0])
    assert "trust.certificate_authorities.ob." + message.format(path=path) in text


def test_a_set_is_chosen_only_by_its_name_and_for_its_purpose(tmp_path, pki):
    """select: an unknown name or a set of the other purpose is an error naming both."""
    seal = _set("seal", [pki["root"]], purpose="signing")
    anchors = TrustAnchors([seal, _set("ob", [pki["root"]])])
    assert anchors.select(["seal"], "signing") == (seal,)
    with pytest.raises(ValueError, match="is for signing, not transport"):
        anchors.select(["seal"], "transport")
    with pytest.raises(ValueError, match=r"no trust.certificate_authorities named 'nope' .*transport: ob"):
        anchors.select(["nope"], "transport")


def test_the_sandbox_test_ca_is_a_transport_anchor(tmp_path):
    """config.yaml's commented `sandbox_ca` set (`.sandbox/transport-ca.pem`, relative to the config file) loads,
    and the certificates `sandbox mint-cert` issues validate to it for transport (EC and RSA)."""
    import time

    from gateway.sandbox.certificates import SandboxCa, generate_private_key, ob_subject

    ca = SandboxCa.load(tmp_path / ".sandbox")
    s = _settings(tmp_path, {"sandbox_ca": {"purpose": "transport", "roots": [".sandbox/transport-ca.pem"]}})
    anchors = TrustAnchors.load(s.trust.certificate_authorities)
    sets = anchors.select(["sandbox_ca"], "transport")
    v = ChainValidator(anchors, clock_skew_seconds=30)
    for key_type in ("ec", "rsa"):
        cert = ca.issue(generate_private_key(key_type).public_key(),
                        ob_subject(org_name="Sandbox TPP Ltd", org_id="org1", software_id="sw1"), days=30)
        der = cert.public_bytes(Encoding.DER)
        chain = v.validate(der, cert, [], sets, "transport", time.time())
        assert chain.issuer == ca.cert and chain.root == ca.cert


@pytest.mark.process
@pytest.mark.parametrize("command", [("config", "check"), ("serve",)])
def test_an_unusable_anchor_file_stops_config_check_and_serve(tmp_path, command):
    """The CLI (a subprocess) exits 2 with the key and the file named, no traceback, before serving anything."""
    import subprocess
    import sys

    (tmp_path / "bad.pem").write_text("not a certificate\n")
    config = tmp_path / "config.yaml"
    config.write_text("trust:\n  certificate_authorities:\n    ob: {purpose: transport, roots: [bad.pem]}\n")
    proc = subprocess.run([sys.executable, "-m", "gateway", *command, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (f"trust.certificate_authorities.ob.roots[0]: {tmp_path / 'bad.pem'} is not a file of PEM certificates"
            in proc.stderr)


def test_issuer_of_names_the_issuer_a_validation_found(pki):
    """The revocation checker's IssuerLookup: None for a certificate never validated, the path's issuer after."""
    ob = _set("ob", [pki["root"]], [pki["inter"]])
    v = _validator(ob)
    leaf = pki["inter"].issue("tpp-lookup")
    assert v.issuer_of(leaf.cert) is None
    v.validate(leaf.der, leaf.cert, [], [ob], "transport", T)
    assert v.issuer_of(leaf.cert) == pki["inter"].cert
