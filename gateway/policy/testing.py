"""`dcr-gateway policy test`: run the YAML test cases beside the policies through the real engine.

Tokens, software statements, registration requests and client certificates in test cases are signed with keys
generated for the run, which stand in for each issuer's, directory's and the test TPP's key set: nothing is
fetched and nothing leaves the process.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from multidict import CIMultiDict
from pydantic import ValidationError

from ..checks.base import RequestView
from ..checks.registration import REGISTRATION_CLAIMS
from ..checks.services import Services
from ..checks.token import TOKEN
from ..config import Directory, Settings, TokenIssuer
from ..config.schema import iter_errors
from ..config.settings import StateSettings
from ..config.yamlsource import YamlSourceError, parse_yaml
from ..jose import (
    JwkSet,
    SigningKey,
    StaticKeys,
    cert_thumbprint_s256,
    generate_signing_key,
    sign_compact,
    sign_jwt,
    transport_jwk,
)
from ..jose.encoding import b64url_encode, json_dumps_compact
from ..runtime import build_offline_runtime
from .engine import Decision, PolicySet
from .loader import PolicyError, PolicySource, compile_policies, read_source
from .model import ClientCertSpec, RegistrationSpec, TestCase, TestFile

Signers = dict[str, tuple[SigningKey, str]]
"""JWKS URI → (the key generated for it, the alg it signs with)."""


def generated_keys(issuers: Iterable[TokenIssuer] = (), directories: Iterable[Directory] = ()) -> tuple[StaticKeys,
                                                                                                            Signers]:
    """Key sets generated for the run, served by the one `StaticKeys` (gateway/jose): one per configured issuer
    and directory JWKS URI; `serve` adds the test TPP's software JWKS. Nothing is fetched or resolved."""
    keys = StaticKeys()
    signing: Signers = {}
    for uri, algorithms in [*((i.jwks_uri, i.algorithms) for i in issuers), *((d.jwks_uri, d.algorithms)
                                                                               for d in directories)]:
        if uri is None or uri in signing:
            continue
        alg = "ES256" if "ES256" in algorithms else algorithms[0]
        key = generate_signing_key("EC" if alg.startswith("ES") else "RSA", kid=f"test-{uuid.uuid4().hex[:8]}")
        signing[uri] = (key, alg)
        keys.serve(uri, JwkSet([key.verification_key()]))
    return keys, signing


# -- the test TPP: signing key, transport certificates, software JWKS -------------------------------------


def issue_certificate(key: SigningKey, subject: str, *, not_before: datetime, not_after: datetime) -> bytes:
    """A self-signed DER certificate for `key` with an RFC 4514 `subject` (tests and `policy test` only)."""
    private = load_pem_private_key(key.to_pem(), password=None)
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("only RSA and EC keys can issue test certificates")
    name = x509.Name.from_rfc4514_string(subject)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(private, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def tls_jwk(key: SigningKey, der: bytes) -> dict[str, Any]:
    """The `use: tls` JWK of a transport certificate, as OB Directory software JWKS publish them (named by
    `key`'s kid; the certificate must hold that key)."""
    return transport_jwk([der], kid=key.kid)


def forwarded_certificate(der: bytes, fmt: str) -> str:
    """The header value an ingress would send for `der`: nginx (URL-encoded PEM), xfcc or rfc9440."""
    if fmt == "rfc9440":
        return f":{base64.b64encode(der).decode('ascii')}:"
    b64 = base64.b64encode(der).decode("ascii")
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64)) + \
        "\n-----END CERTIFICATE-----\n"
    escaped = quote(pem, safe="")
    if fmt == "xfcc":
        return f'Hash={cert_thumbprint_s256(der)};Cert="{escaped}"'
    return escaped


@dataclass(frozen=True, slots=True)
class TestTpp:
    """A TPP generated for the run: its software JWKS (a PS256 signing key and a transport certificate)."""

    software_id: str
    org_id: str
    subject: str
    signing: SigningKey
    transport: SigningKey
    certs: Mapping[str, bytes]
    jwks_uri: str

    @classmethod
    def generate(cls, settings: Settings, now: float, software_id: str = "PolicyTestSoftware01") -> TestTpp:
        """Keys and certificates; the JWKS URI is chosen to pass config `trust.software_jwks`."""
        org_id = "0015800001041RAAAY"
        subject = f"CN={software_id},OU={org_id},O=OpenBanking,C=GB"
        signing = generate_signing_key("RSA", kid="tpp-signing-1")
        transport = generate_signing_key("EC", kid="tpp-transport-1")
        t = datetime.fromtimestamp(now, UTC)
        day = timedelta(days=1)
        certs = {
            "tpp": issue_certificate(transport, subject, not_before=t - day, not_after=t + 365 * day),
            "unregistered": issue_certificate(generate_signing_key("EC"), subject, not_before=t - day,
                                              not_after=t + 365 * day),
            "expired": issue_certificate(transport, subject, not_before=t - 400 * day, not_after=t - day),
            "not_yet_valid": issue_certificate(transport, subject, not_before=t + day, not_after=t + 400 * day),
        }
        hosts = sorted(settings.trust.software_jwks.allowed_hosts)
        host = (hosts[0].replace("*.", "keystore.", 1) if hosts else "keystore.policy-test.example")
        return cls(software_id, org_id, subject, signing, transport, certs,
                   f"https://{host}/policy-test/{software_id}.jwks")

    def keyset(self) -> JwkSet:
        """The software JWKS: the signing key, then the transport certificates listed as `use: tls` keys."""
        keys = [self.signing.public_jwk(alg="PS256")]
        keys += [tls_jwk(self.transport, self.certs[n]) for n in ("tpp", "expired", "not_yet_valid")]
        return JwkSet.from_dict({"keys": keys})


def _apply(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = {**base, **overrides}
    return {k: v for k, v in out.items() if v is not None}  # `claim: null` removes a default


def _sign(claims: Mapping[str, Any], header: dict[str, Any], key: SigningKey, attacker: bool) -> str:
    """A compact JWS; `alg: none` gives an unsigned one, `attacker` signs with another key under the same kid."""
    payload = json_dumps_compact(dict(claims))
    if header.get("alg") == "none":
        return f"{b64url_encode(json_dumps_compact(header))}.{b64url_encode(payload)}."
    alg = str(header.get("alg", ""))
    # An attacker's key fits the alg asked for, so a key-type mismatch can be tested too.
    signer = generate_signing_key("EC" if alg.startswith("ES") else "RSA") if attacker else key
    return sign_compact(header, payload, signer)


def _registration_body(spec: RegistrationSpec, settings: Settings, signing: Signers, tpp: TestTpp,
                       now: float) -> str:
    trust = settings.trust
    if not trust.directories:
        raise ValueError("registration: config trust.directories is empty, no directory can sign the SSA")
    name = spec.ssa.directory or next(iter(trust.directories))
    if name not in trust.directories:
        raise ValueError(f"registration.ssa.directory {name!r} is not in config trust.directories")
    directory = trust.directories[name]
    dkey, dalg = signing[directory.jwks_uri]
    ssa = spec.ssa.raw
    if ssa is None:
        ssa_claims = _apply({
            "iss": directory.issuer, "iat": int(now), "jti": str(uuid.uuid4()),
            "software_id": tpp.software_id, "software_client_id": tpp.software_id,
            "software_client_name": "Policy test app", "software_jwks_endpoint": tpp.jwks_uri,
            "software_redirect_uris": ["https://tpp.example.com/callback", "https://tpp.example.com/cb2"],
            "software_roles": ["AISP", "PISP", "CBPII"], "org_status": "Active", "org_id": tpp.org_id,
            "org_name": "Policy Test TPP Ltd",
        }, spec.ssa.claims)
        header = _apply({"alg": dalg, "kid": dkey.kid, "typ": "JWT"}, spec.ssa.header)
        ssa = _sign(ssa_claims, header, dkey, spec.ssa.signed_by == "attacker")
    software_id = spec.ssa.claims.get("software_id", tpp.software_id)
    claims = _apply({
        "iss": software_id, "aud": (trust.registration_audiences or ("policy-test",))[0],
        "iat": int(now), "exp": int(now) + 300, "jti": str(uuid.uuid4()),
        "software_id": software_id, "software_statement": ssa,
        "redirect_uris": ["https://tpp.example.com/callback"],
        "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "PS256",
        "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
        "response_types": ["code id_token"], "application_type": "web",
        "id_token_signed_response_alg": "PS256", "request_object_signing_alg": "PS256",
        "scope": "openid accounts payments fundsconfirmations",
    }, spec.claims)
    header = _apply({"alg": "PS256", "kid": tpp.signing.kid, "typ": "JWT"}, spec.header)
    jws = _sign(claims, header, tpp.signing, spec.signed_by == "attacker")
    return json_dumps_compact(jws).decode("ascii") if spec.encoding == "json_string" else jws


def _client_cert(spec: ClientCertSpec, settings: Settings, tpp: TestTpp) -> tuple[str, str]:
    cfg = settings.trust.client_certificate
    if spec.raw is not None:
        return cfg.header, spec.raw
    return cfg.header, forwarded_certificate(tpp.certs[spec.cert], cfg.format)


@dataclass(slots=True)
class _Run:
    """Keys generated once for a whole `policy test` run (state is fresh per case)."""

    keys: StaticKeys
    signing: Signers
    tpp: TestTpp

    @classmethod
    def create(cls, settings: Settings, now: float) -> _Run:
        keys, signing = generated_keys(settings.trust.token_issuers.values(), settings.trust.directories.values())
        tpp = TestTpp.generate(settings, now)
        keys.serve(tpp.jwks_uri, tpp.keyset())
        return cls(keys, signing, tpp)

@dataclass(slots=True)
class CaseResult:
    """The outcome of one case."""

    file: str
    name: str
    ok: bool
    detail: str


def _token(case: TestCase, settings: Settings, run: _Run, now: float) -> str | None:
    spec = case.request.token
    if spec is None:
        return None
    if "raw" in spec:
        return str(spec["raw"])
    issuers = settings.trust.token_issuers
    name = spec.get("issuer") or next(iter(issuers), None)
    if name not in issuers or issuers[name].jwks_uri is None:
        raise ValueError(f"token.issuer {name!r} is not a JWT issuer in config trust.token_issuers")
    issuer = issuers[name]
    assert issuer.jwks_uri is not None
    key, alg = run.signing[issuer.jwks_uri]
    claims: dict[str, Any] = {
        "iss": issuer.issuer,
        "iat": int(now),
        "exp": int(now) + 300,
        "jti": str(uuid.uuid4()),
        issuer.client_id_claim: "test-client",
        "scope": "",
    }
    if issuer.audiences:
        claims["aud"] = issuer.audiences[0]
    if spec.get("cnf_client_cert"):
        claims["cnf"] = {"x5t#S256": cert_thumbprint_s256(run.tpp.certs["tpp"])}  # RFC 8705 §3.1
    claims.update(spec.get("claims") or {})
    for k in [k for k, v in claims.items() if v is None]:
        del claims[k]  # `claim: null` in a case removes a default claim
    header = dict(spec.get("header") or {})
    typ = header.pop("typ", issuer.token_types[0] if issuer.token_types else None)
    kid = header.pop("kid", key.kid)
    attacker = spec.get("signed_by") == "attacker"
    signer = generate_signing_key("EC" if key.kty == "EC" else "RSA", kid=kid) if attacker else key
    return sign_jwt(claims, signer, header.pop("alg", alg), kid=kid, typ=typ, extra_headers=header or None)


async def _decide(policy_set: PolicySet, view: RequestView) -> Decision:
    match = policy_set.match(view.method, view.path)
    if match is None or match.value is None:
        return Decision("deny", "", "enforce", (policy_set.unmatched(view.method, match),))
    view.params = match.params
    return await match.value.evaluate(view)


async def _run_case(case: TestCase, settings: Settings, source: PolicySource, run: _Run) -> tuple[bool, str]:
    # Each case gets fresh services: no revocation, replay entry or cached token leaks into the next case.
    runtime = build_offline_runtime(settings, run.keys)
    try:
        return await _evaluate_case(case, settings, source, run, runtime.services)
    finally:
        await runtime.close()


async def _evaluate_case(case: TestCase, settings: Settings, source: PolicySource, run: _Run,
                         services: Services) -> tuple[bool, str]:
    policy_set = compile_policies(source, services, unmatched_status=settings.policies.unmatched_status)
    now = time.time()
    req = case.request
    headers: CIMultiDict[str] = CIMultiDict(req.headers)
    raw = _token(case, settings, run, now)
    if raw is not None:
        headers["Authorization"] = f"Bearer {raw}"
    body = req.body.encode() if req.body is not None else b""
    if req.registration is not None:
        body = _registration_body(req.registration, settings, run.signing, run.tpp, now).encode("ascii")
        if "Content-Type" not in headers:
            json_body = req.registration.encoding == "json_string"
            headers["Content-Type"] = "application/json" if json_body else "application/jose"
    if req.client_cert is not None:
        name, value = _client_cert(req.client_cert, settings, run.tpp)
        headers[name] = value
    path = req.path.split("?", 1)[0]
    peer = req.peer if req.peer is not None else ingress_address(settings)
    if raw is not None and req.revoked:
        probe = RequestView(req.method, path, headers, peer=peer, body=body, now=now)
        await _decide(policy_set, probe)
        token = probe.facts.get(TOKEN)
        if token is None:
            return False, "revoked: true, but the token does not verify"
        await services.revocations.revoke_token(token, now)
    if req.registration is not None and req.registration.replayed:
        probe = RequestView(req.method, path, headers, peer=peer, body=body, now=now)
        await _decide(policy_set, probe)
        if REGISTRATION_CLAIMS not in probe.facts:
            return False, "replayed: true, but the registration request does not verify"
    view = RequestView(req.method, path, headers, peer=peer, body=body, now=now)
    decision = await _decide(policy_set, view)
    denial = decision.denial
    got = {
        "decision": decision.outcome,
        "status": denial.status if denial else None,
        "error": denial.error if denial else None,
        "reason": denial.reason if denial else None,
        "check": denial.check if denial else None,
        "policy": decision.policy,
    }
    want = case.expect.model_dump(exclude_none=True)
    if want["decision"] == "refused" and got["decision"] in REFUSALS:
        want["decision"] = got["decision"]  # enforced or in audit mode, as the config resolves the check's mode
    diffs = [f"{k}: expected {v!r}, got {got[k]!r}" for k, v in want.items() if got[k] != v]
    return (not diffs), "; ".join(diffs) or _summary(got)


REFUSALS: Final = frozenset({"deny", "audit_deny"})
"""The outcomes an `expect: {decision: refused}` accepts."""


def ingress_address(settings: Settings) -> str:
    """Where a test request comes from when its case names no `peer`: the configured ingress (the first address
    of `trust.client_certificate.trusted_proxies`), else 127.0.0.1."""
    proxies = settings.trust.client_certificate.trusted_proxies
    if not proxies:
        return "127.0.0.1"
    network = ipaddress.ip_network(proxies[0], strict=False)
    return str(next(iter(network.hosts()), network.network_address))  # a /32 or /128: its one address


def _summary(got: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in got.items() if v not in (None, ""))


async def run_cases(settings: Settings, directory: Path) -> list[CaseResult]:
    """Run every case of every `*_test.yaml` file; policy or case-file errors are failures too."""
    source = read_source(directory)
    # Offline: whatever store the config names (Redis in production), cases run on a fresh in-memory one each,
    # so a case never reaches the network and no replay entry or revocation leaks into the next case.
    settings = settings.model_copy(update={"state": StateSettings()})
    run = _Run.create(settings, time.time())
    compile_policies(source, build_offline_runtime(settings, run.keys).services)
    results: list[CaseResult] = []
    for path, text in source.tests:
        try:
            doc = parse_yaml(text, path)
            spec = TestFile.model_validate(doc.data if doc.data is not None else {})
        except YamlSourceError as exc:
            results.append(CaseResult(str(path), "(file)", False, str(exc)))
            continue
        except ValidationError as exc:
            for dotted, line, msg in iter_errors(exc, doc):
                results.append(CaseResult(f"{path}:{line or 1}", "(file)", False, f"{dotted}: {msg}"))
            continue
        for i, case in enumerate(spec.cases):
            where = f"{path}:{doc.line_of(['cases', i]) or 1}"
            try:
                ok, detail = await _run_case(case, settings, source, run)
            except ValueError as exc:
                ok, detail = False, str(exc)
            results.append(CaseResult(where, case.name, ok, detail))
    return results


def run_policy_tests(settings: Settings, directory: Path, *, verbose: bool = False) -> int:
    """CLI entry: print failures (every case with -v) and a summary line; exit code 1 on any failure."""
    try:
        results = asyncio.run(run_cases(settings, directory))
    except PolicyError as exc:
        for line in exc.messages:
            print(line)
        print("0 passed, 1 failed (the policy set does not load)")
        return 1
    if not results:
        print(f"{directory}: no test cases (*_test.yaml)")
        print("0 passed, 0 failed")
        return 1
    for r in results:
        if not r.ok or verbose:
            print(f"{'PASS' if r.ok else 'FAIL'} {r.file}: {r.name}: {r.detail}")
    passed = sum(r.ok for r in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1
