"""Work done once on the POST path: the registration JWS is parsed once per request and shared by the checks
that read it, and no shared or cached result ever lets a request skip its own verification."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

import gateway.checks.registration as registration
from gateway.checks.base import RequestView
from gateway.checks.registration import RegistrationError, request_jws
from gateway.jose.encoding import b64url_decode, b64url_encode
from tests.checks.world import REGISTER, keys


@pytest.fixture
def request_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every registration request JWS `parse_compact` is asked to parse (the SSA's parse is not counted)."""
    seen: list[str] = []
    real = registration.parse_compact

    def counting(token: str, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(token)
        return real(token, **kwargs)

    monkeypatch.setattr(registration, "parse_compact", counting)
    return seen


JWS = "eyJhbGciOiJQUzI1NiIsImtpZCI6ImsifQ.eyJhIjoxfQ.c2ln"


def _view(body: bytes, now: float | None = None) -> RequestView:
    view = RequestView("POST", REGISTER, CIMultiDict({"Content-Type": "application/jose"}), body=body)
    if now is not None:
        view.now = now
    return view


def test_parsed_once_per_request(request_parses: list[str]) -> None:
    view = _view(JWS.encode())
    first = request_jws(view)
    assert request_jws(view) is first
    assert request_parses == [JWS]
    assert first.kid == "k" and first.claims == {"a": 1}
    assert not view.facts  # an unverified parse is never a fact


def test_a_replaced_body_is_parsed_anew(request_parses: list[str]) -> None:
    view = _view(JWS.encode())
    request_jws(view)
    view.body = b"not a jws"
    with pytest.raises(RegistrationError):
        request_jws(view)
    view.body = JWS.encode()  # equal bytes, but another object: parsed again, never trusted by equality
    request_jws(view)
    assert len(request_parses) == 3
    assert request_jws(_view(JWS.encode())) is not request_jws(view)  # nothing shared between requests


async def test_a_genuine_post_parses_its_body_once(dcr_world, request_parses: list[str]) -> None:
    w = await dcr_world()
    body = w.request()
    resp = await w.post(body)
    assert resp.status == 201, await resp.text()
    assert request_parses == [body]


def _tamper_payload(jws: str, **changes: object) -> str:
    """The same header and signature over a payload with `changes` applied."""
    import json

    header, payload, signature = jws.split(".")
    claims = json.loads(b64url_decode(payload))
    claims.update(changes)
    return ".".join((header, b64url_encode(json.dumps(claims).encode()), signature))


async def test_a_tampered_body_is_refused_after_a_genuine_one(dcr_world) -> None:
    """Whatever the first request left in caches, a body altered after signing is refused on its signature."""
    w = await dcr_world()
    genuine = w.request()
    assert (await w.post(genuine)).status == 201
    forged = _tamper_payload(w.request(), scope="openid accounts", redirect_uris=["https://evil.example/cb"])
    resp = await w.post(forged)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_client_metadata"
    assert w.denials("request_bad_signature") == 1
    # The genuine body again is a replay, not a free pass.
    resp = await w.post(genuine)
    assert resp.status == 400
    assert w.denials("jti_replayed") == 1
    assert w.registrations() == 1


# -- software_statement: a TPP's SSA is verified once, judged on every request ------------------------------


async def test_an_ssa_sent_again_is_not_verified_again(dcr_world, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two registrations with the same SSA: the SSA's signature is computed once, each request's own every time."""
    import gateway.jose.jws as jws_module

    computed: list[bytes] = []
    real = jws_module.verify_raw

    def counting(alg: str, key: object, signing_input: bytes, signature: bytes) -> None:
        computed.append(signing_input)
        real(alg, key, signing_input, signature)

    monkeypatch.setattr(jws_module, "verify_raw", counting)
    w = await dcr_world()
    ssa = w.ssa()
    ssa_input = ssa.rpartition(".")[0].encode()
    for _ in range(2):
        resp = await w.post(w.request(ssa=ssa))
        assert resp.status == 201, await resp.text()
    assert computed.count(ssa_input) == 1
    assert len(computed) - computed.count(ssa_input) >= 2  # both request JWSs (and the tokens) verified
    # The remembered SSA is still judged: the same SSA with a forged signature is refused.
    head, payload, _ = ssa.split(".")
    forged = w.ssa(key=keys().attacker_rsa).rpartition(".")[2]
    resp = await w.post(w.request(ssa=f"{head}.{payload}.{forged}"))
    assert resp.status == 400
    assert w.denials("ssa_bad_signature") == 1
    assert w.registrations() == 2


async def test_a_judged_ssa_is_still_judged_on_its_age(dcr_world) -> None:
    """What the claims alone decide is judged once per SSA; the age (max_age_seconds) on every request."""
    import time

    w = await dcr_world()
    shipped = _check(w, "software_statement")
    check = type(shipped)(shipped.Params.model_validate({"max_age_seconds": 60}), shipped.services)
    ssa = w.ssa()
    iat = time.time()

    def at(now: float, ssa: str = ssa) -> RequestView:
        return _view(w.request(ssa=ssa).encode(), now)

    assert await check.evaluate(at(iat + 10)) is None
    assert await check.evaluate(at(iat + 20)) is None  # judged from the memo
    late = await check.evaluate(at(iat + 1000))
    assert late is not None and late.reason == "ssa_too_old"
    # The memo holds a verdict on exact claims only: another SSA of the same TPP is judged on its own.
    revoked = await check.evaluate(at(iat + 10, w.ssa(org_status="Revoked")))
    assert revoked is not None and revoked.reason == "ssa_org_not_active"
    assert await check.evaluate(at(iat + 30)) is None


# -- client_certificate: the parse of a forwarded certificate is remembered, never a verdict ---------------


def _check(w, name: str):  # type: ignore[no-untyped-def]
    policy = next(p for p in w.gw.holder.current.policies if p.name == "dcr_register_create")
    return next(c for c in policy.checks if c.name == name)


def _cert_view(w, now: float, header: str | None = None) -> RequestView:  # type: ignore[no-untyped-def]
    from tests.checks.world import CERT_HEADER

    value = header if header is not None else w.cert_header()[CERT_HEADER]
    return RequestView("POST", REGISTER, CIMultiDict({CERT_HEADER: value}), peer="127.0.0.1", now=now)


async def test_a_remembered_certificate_is_still_judged_on_its_dates(dcr_world) -> None:
    import time

    w = await dcr_world()
    check = _check(w, "client_certificate")
    first = await check.evaluate(_cert_view(w, time.time()))
    assert first is not None and first.reason == "software_statement_unverified"  # past the dates, no SSA facts
    assert w.gw.services.certificates.remembered() == 1
    later = await check.evaluate(_cert_view(w, time.time() + 400 * 86400))
    assert later is not None and later.reason == "client_cert_expired"
    earlier = await check.evaluate(_cert_view(w, time.time() - 400 * 86400))
    assert earlier is not None and earlier.reason == "client_cert_not_yet_valid"
    assert w.gw.services.certificates.remembered() == 1


async def test_certificate_memo_is_bounded(dcr_world, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import gateway.certificates as certificates
    from tests.checks.world import CERT_HEADER

    monkeypatch.setattr(certificates, "PARSED_CERTIFICATES", 4)
    w = await dcr_world()
    check = _check(w, "client_certificate")
    reader = w.gw.services.certificates  # the one reader of the forwarded certificate (bearer_token's too)
    header = w.cert_header()[CERT_HEADER]
    for i in range(10):  # distinct header texts of one certificate
        await check.evaluate(_cert_view(w, time.time(), " " * i + header))
        assert reader.remembered() <= 4
    assert reader.remembers(" " * 9 + header)  # the newest are kept
    malformed = await check.evaluate(_cert_view(w, time.time(), "not a certificate"))
    assert malformed is not None and malformed.reason == "client_cert_malformed"
    assert not reader.remembers("not a certificate")  # failures are not remembered


async def test_what_a_certificate_says_is_read_once_and_its_dates_judged_each_time(
        dcr_world, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import gateway.checks.client_certificate as client_certificate

    reads: list[object] = []
    real = client_certificate.psd2_certificate

    def counting(cert):  # type: ignore[no-untyped-def]
        reads.append(cert)
        return real(cert)

    monkeypatch.setattr(client_certificate, "psd2_certificate", counting)
    w = await dcr_world()
    check = _check(w, "client_certificate")
    views = [_cert_view(w, time.time()) for _ in range(2)]
    for view in views:
        await check.evaluate(view)
    assert len(reads) == 1
    subjects = {v.facts.get(client_certificate.CLIENT_CERT_SUBJECT) for v in views}
    assert subjects == {"CN=AttackTableSoftware1,OU=0015800001041REAAY,O=OpenBanking,C=GB"}
    later = await check.evaluate(_cert_view(w, time.time() + 400 * 86400))
    assert later is not None and later.reason == "client_cert_expired"
    other = _cert_view(w, time.time(), w.cert_header(keys().other_cert)["ssl-client-cert"])
    await check.evaluate(other)
    assert len(reads) == 2  # another certificate is read for itself


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1",
                                  "fe80::1%eth0", "127.1", "0x7f.0.0.1", "2130706433", "127.000.000.001", "1.2.3.4",
                                  "localhost", "a.localhost", "example.com", "127.0.0.1.nip.io", "127.0.0.1a", "0"])
def test_local_host_shortcut_decides_as_ipaddress_does(host: str) -> None:
    """registration_metadata skips ipaddress for plain names; the verdict is the one ipaddress gives."""
    import ipaddress

    from gateway.checks.registration_metadata import _is_local

    try:
        ip = ipaddress.ip_address(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        expected = ip.is_loopback or ip.is_unspecified
    except ValueError:
        expected = host == "localhost" or host.endswith(".localhost")
    assert _is_local(host) is expected
