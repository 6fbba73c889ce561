"""`dcr-gateway policy test`: run the YAML test cases beside the policies through the real engine.

Tokens in test cases are signed with keys generated for the run, which stand in for each issuer's JWKS:
nothing is fetched and nothing leaves the process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multidict import CIMultiDict
from pydantic import ValidationError

from ..checks.base import RequestView
from ..checks.services import build_services
from ..config import Settings, TokenIssuer
from ..jose import JoseError, SigningKey, UrlPolicy, VerificationKey, generate_signing_key, sign_jwt
from ..schema import iter_errors
from ..yamlsource import YamlSourceError, parse_yaml
from .engine import Decision, PolicySet
from .loader import PolicyError, PolicySource, compile_policies, read_source
from .model import TestCase, TestFile


class StaticKeys:
    """A KeyProvider serving keys generated for the run, one per configured issuer JWKS URI."""

    def __init__(self, issuers: Iterable[TokenIssuer]) -> None:
        self.signing: dict[str, tuple[SigningKey, str]] = {}
        self._public: dict[str, dict[str, VerificationKey]] = {}
        for issuer in issuers:
            if issuer.jwks_uri is None or issuer.jwks_uri in self.signing:
                continue
            alg = "ES256" if "ES256" in issuer.algorithms else issuer.algorithms[0]
            key = generate_signing_key("EC" if alg.startswith("ES") else "RSA", kid=f"test-{uuid.uuid4().hex[:8]}")
            self.signing[issuer.jwks_uri] = (key, alg)
            self._public[issuer.jwks_uri] = {key.kid: key.verification_key()}

    async def get_key(self, uri: str, kid: str, *, policy: UrlPolicy | None = None) -> VerificationKey:
        """The generated key, if `kid` names it."""
        key = self._public.get(uri, {}).get(kid)
        if key is None:
            raise JoseError("unknown_kid", "no key with this kid in the key set")
        return key

    async def prefetch(self, uris: Iterable[str], *, policy: UrlPolicy | None = None) -> dict[str, JoseError | None]:
        """Always warm."""
        return {u: None for u in uris}


@dataclass(slots=True)
class CaseResult:
    """The outcome of one case."""

    file: str
    name: str
    ok: bool
    detail: str


def _token(case: TestCase, settings: Settings, keys: StaticKeys, now: float) -> str | None:
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
    key, alg = keys.signing[issuer.jwks_uri]
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


async def _run_case(case: TestCase, settings: Settings, source: PolicySource) -> tuple[bool, str]:
    # Each case gets fresh services: no revocation or cached token leaks from one case into the next.
    keys = StaticKeys(settings.trust.token_issuers.values())
    services = build_services(settings, None, keys=keys)
    policy_set = compile_policies(source, services, unmatched_status=settings.policies.unmatched_status)
    now = time.time()
    req = case.request
    headers: CIMultiDict[str] = CIMultiDict(req.headers)
    raw = _token(case, settings, keys, now)
    if raw is not None:
        headers["Authorization"] = f"Bearer {raw}"
    body = req.body.encode() if req.body is not None else b""
    path = req.path.split("?", 1)[0]
    if raw is not None and req.revoked:
        probe = RequestView(req.method, path, headers, peer=req.peer, body=body, now=now)
        await _decide(policy_set, probe)
        token = probe.facts.get("token")
        if token is None:
            return False, "revoked: true, but the token does not verify"
        await services.revocations.revoke_token(token, now)
    view = RequestView(req.method, path, headers, peer=req.peer, body=body, now=now)
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
    diffs = [f"{k}: expected {v!r}, got {got[k]!r}" for k, v in want.items() if got[k] != v]
    await services.close()
    return (not diffs), "; ".join(diffs) or _summary(got)


def _summary(got: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in got.items() if v not in (None, ""))


async def run_cases(settings: Settings, directory: Path) -> list[CaseResult]:
    """Run every case of every `*_test.yaml` file; policy or case-file errors are failures too."""
    source = read_source(directory)
    compile_policies(source, build_services(settings, None, keys=StaticKeys(settings.trust.token_issuers.values())))
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
                ok, detail = await _run_case(case, settings, source)
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
