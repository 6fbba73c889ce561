"""The bench's software directory and TPP: keys, key sets, the SSA, the transport certificate and the signed
registration requests of the `post` scenario.

The bench upstream serves the directory's key set (`DIRECTORY_JWKS_PATH`) and the TPP's software key set
(`SOFTWARE_JWKS_PATH`, named by the SSA's `software_jwks_endpoint`), so a gateway verifies every POST fully:
SSA signature, request signature, claims, `jti` replay, metadata and the forwarded certificate.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from gateway.jose import SigningKey, generate_signing_key, load_signing_key_pem, sign_compact, sign_jwt
from gateway.jose.encoding import json_dumps_compact
from gateway.policy.testing import forwarded_certificate, issue_certificate, tls_jwk

from .tokens import ISSUER

DIRECTORY_ISSUER = "Bench Directory Ltd"
DIRECTORY_JWKS_PATH = "/directory/jwks"
SOFTWARE_JWKS_PATH = "/tpp/software.jwks"
SOFTWARE_ID = "BenchSoftware01"
ORG_ID = "0015800001041RBENCH"
REDIRECT_URI = "https://tpp.bench.invalid/callback"
CERT_HEADER = "ssl-client-cert"
"""The gateway's default certificate header (ingress-nginx: URL-encoded PEM)."""
LIFETIME = 3500
"""exp - iat of a registration request: under the shipped policy's `max_lifetime_seconds` (3600), so the
bodies of one run stay valid for about an hour."""
_CHUNK = 500


@cache
def directory_key() -> SigningKey:
    """The run's directory key (RSA 2048, PS256): it signs the SSA."""
    return generate_signing_key("RSA", kid="bench-directory-1")


@cache
def tpp_signing_key() -> SigningKey:
    """The TPP's signing key (RSA 2048, PS256): it signs every registration request."""
    return generate_signing_key("RSA", kid="bench-tpp-signing-1")


@cache
def transport_certificate() -> tuple[SigningKey, bytes]:
    """The TPP's transport key (EC P-256) and its self-signed DER certificate, valid for 30 days."""
    key = generate_signing_key("EC", kid="bench-tpp-transport-1")
    now = datetime.now(UTC)
    der = issue_certificate(key, f"CN={SOFTWARE_ID},OU={ORG_ID},O=OpenBanking,C=GB",
                            not_before=now - timedelta(days=1), not_after=now + timedelta(days=30))
    return key, der


def directory_jwks_json() -> str:
    """The directory's public key set."""
    return json.dumps({"keys": [directory_key().public_jwk(alg="PS256")]})


def software_jwks_json() -> str:
    """The TPP's software key set: its signing key and its transport certificate as a `use: tls` key."""
    key, der = transport_certificate()
    return json.dumps({"keys": [tpp_signing_key().public_jwk(alg="PS256"), tls_jwk(key, der)]})


def client_certificate_header() -> tuple[str, str]:
    """The header a TLS-terminating ingress would forward for the TPP's transport certificate."""
    return CERT_HEADER, forwarded_certificate(transport_certificate()[1], "nginx")


def software_statement(upstream_url: str) -> str:
    """The SSA (signed by the directory) naming the key set the bench upstream serves."""
    claims = {
        "iss": DIRECTORY_ISSUER, "iat": int(time.time()), "jti": str(uuid.uuid4()),
        "software_id": SOFTWARE_ID, "software_client_id": SOFTWARE_ID, "software_client_name": "Bench app",
        "software_jwks_endpoint": upstream_url + SOFTWARE_JWKS_PATH, "software_redirect_uris": [REDIRECT_URI],
        "software_roles": ["AISP", "PISP", "CBPII"], "org_status": "Active", "org_id": ORG_ID,
        "org_name": "Bench TPP Ltd",
    }
    return sign_jwt(claims, directory_key(), "PS256")


def registration_claims(ssa: str, now: int) -> dict[str, Any]:
    """The claims of one registration request: fresh `jti`, `iat` now, the same SSA and metadata each time."""
    return {
        "iss": SOFTWARE_ID, "aud": ISSUER, "iat": now, "exp": now + LIFETIME, "jti": str(uuid.uuid4()),
        "software_id": SOFTWARE_ID, "software_statement": ssa, "redirect_uris": [REDIRECT_URI],
        "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "PS256",
        "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
        "response_types": ["code id_token"], "application_type": "web",
        "id_token_signed_response_alg": "PS256", "request_object_signing_alg": "PS256",
        "scope": "openid accounts payments fundsconfirmations",
    }


_worker_key: SigningKey | None = None


def _init_worker(pem: bytes, kid: str) -> None:
    global _worker_key
    _worker_key = load_signing_key_pem(pem, kid=kid)


def _sign_chunk(ssa: str, count: int) -> list[str]:
    """`count` registration requests signed in a pool worker (the key comes from `_init_worker`)."""
    key = _worker_key
    assert key is not None
    header = {"alg": "PS256", "kid": key.kid, "typ": "JWT"}
    return [sign_compact(header, json_dumps_compact(registration_claims(ssa, int(time.time()))), key)
            for _ in range(count)]


@dataclass(frozen=True, slots=True)
class RegistrationBodies:
    """A `BodySource` of registration request JWSs (PS256, by the TPP's key): one SSA, a fresh `jti` each."""

    name: str = "registration"
    processes: int = 0
    """Signing processes; 0: one per CPU."""

    def generate(self, count: int, upstream_url: str, progress: Callable[[str], None]) -> Iterator[str]:
        """Sign `count` requests in a process pool (about 1 ms of CPU each), chunk by chunk."""
        ssa = software_statement(upstream_url)
        key = tpp_signing_key()
        workers = self.processes or os.cpu_count() or 1
        chunks = [min(_CHUNK, count - i) for i in range(0, count, _CHUNK)]
        progress(f"signing {count} registration requests on {workers} process(es)")
        # spawn: the workers start clean, without the bench's child-process bookkeeping or signal handlers.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                 initargs=(key.to_pem(), key.kid or "")) as pool:
            for bodies in pool.map(_sign_chunk, [ssa] * len(chunks), chunks):
                yield from bodies
