"""The token endpoint over mutual TLS (RFC 8705): tls_client_auth, self_signed_tls_client_auth and
certificate-bound access tokens, with certificates made here and forwarded as an ingress would.

The certificate reaches the sandbox as nginx forwards it (`ssl-client-cert: $ssl_client_escaped_cert`, the
URL-escaped PEM) from 127.0.0.1, the trusted TLS-terminating proxy of `trust.client_certificate`. Token
requests go to the sandbox port: the gateway keeps the certificate header to itself.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from jwcrypto import jwk

from gateway.sandbox import client_auth, jwks_fetcher, metadata
from tests.sandbox.conftest import TOKEN, Bank, BankFactory, tpp_key, unverified

CERT_HEADER = "ssl-client-cert"
CC = "client_credentials"
ORG_ID = "0015800001041REAAY"
SOFTWARE_ID = "mtlsSoftware01"
SUBJECT = f"CN={SOFTWARE_ID},OU={ORG_ID},O=OpenBanking,C=GB"
"""The RFC 4514 string of the OB-style subject below (most specific first)."""


def _name(software_id: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OpenBanking"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ORG_ID),
        x509.NameAttribute(NameOID.COMMON_NAME, software_id),
    ])


@dataclass(frozen=True)
class Cert:
    """A certificate and its private key."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        """The DER encoding."""
        return self.cert.public_bytes(Encoding.DER)

    @property
    def x5t_s256(self) -> str:
        """base64url SHA-256 of the DER (RFC 8705 §3.1), computed here, not by the code under test."""
        return base64.urlsafe_b64encode(hashlib.sha256(self.der).digest()).rstrip(b"=").decode()

    def header(self) -> dict[str, str]:
        """The header nginx sets with `$ssl_client_escaped_cert`: the URL-escaped PEM."""
        return {CERT_HEADER: quote(self.cert.public_bytes(Encoding.PEM).decode(), safe="")}

    def tls_jwk(self, kid: str) -> dict[str, Any]:
        """This certificate as a `use: tls` key with `x5c`, as OB software key sets publish transport keys."""
        public = jwk.JWK.from_pyca(self.key.public_key()).export_public(as_dict=True)
        return {**public, "kid": kid, "use": "tls", "x5c": [base64.b64encode(self.der).decode()]}


def _issue(subject: x509.Name, issuer: x509.Name, public: Any, signer: Any, *, days: int = 30,
           start: datetime | None = None, ca: bool = False) -> x509.Certificate:
    start = start or datetime.now(UTC) - timedelta(minutes=5)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


_CA_KEY = ec.generate_private_key(ec.SECP256R1())
_CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sandbox Test Issuing CA")])


def client_cert(software_id: str = SOFTWARE_ID, **kwargs: Any) -> Cert:
    """A transport certificate with the OB-style subject, issued by the test CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    return Cert(key, _issue(_name(software_id), _CA_NAME, key.public_key(), _CA_KEY, **kwargs))


def self_signed_cert(software_id: str = SOFTWARE_ID) -> Cert:
    """A self-signed transport certificate (RFC 8705 §2.2)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return Cert(key, _issue(_name(software_id), _name(software_id), key.public_key(), key))


CERT = client_cert()
TRUST_LOOPBACK = {"client_certificate": {"header": CERT_HEADER, "format": "nginx", "trusted_proxies": ["127.0.0.1/32"]}}


@pytest.fixture
async def mtls_bank(bank_factory: BankFactory) -> Bank:
    """A sandbox whose trusted TLS-terminating proxy is 127.0.0.1 (where the test's requests come from)."""
    return await bank_factory(trust=TRUST_LOOPBACK)


async def token_at_sandbox(bank: Bank, form: dict[str, str], cert: Cert | None = None,
                           headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST the sandbox's token endpoint as the ingress would forward it (certificate header from 127.0.0.1)."""
    hdrs = {**(cert.header() if cert is not None else {}), **(headers or {})}
    async with bank.http.post(bank.sandbox_url + TOKEN, data=form, headers=hdrs) as r:
        return r.status, await r.json(), dict(r.headers)


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def cnf_of(body: dict[str, Any]) -> Any:
    """The `cnf` claim of an issued access token (None when unbound)."""
    return unverified(body["access_token"])[1].get("cnf")


async def tls_client(bank: Bank, **dn: str) -> dict[str, Any]:
    """A DCR client registered for tls_client_auth with the given DN claim (default: the v3.2 name)."""
    return await bank.new_client(method="tls_client_auth", ssa_claims={"software_id": SOFTWARE_ID},
                                 **(dn or {"tls_client_auth_subject_dn": SUBJECT}))


async def self_signed_client(bank: Bank, cert: Cert | None) -> dict[str, Any]:
    """A DCR client registered for self_signed_tls_client_auth; `cert` joins its SSA's key set as a tls key (a
    key set of its own: the sandbox caches a fetched one for `tpp_jwks_cache_seconds`)."""
    tpp = tpp_key(f"mtls-{len(bank.tpp.documents)}")
    client = await bank.new_client(tpp, method="self_signed_tls_client_auth",
                                   ssa_claims={"software_id": SOFTWARE_ID})
    if cert is not None:
        bank.tpp.documents[tpp.kid]["keys"].append(cert.tls_jwk("transport-1"))
    return client


# -- tls_client_auth (RFC 8705 §2.1) ---------------------------------------------------------------------


async def test_tls_client_auth_issues_a_certificate_bound_token(mtls_bank: Bank) -> None:
    """The OB tool's request (client_id, no credential, the certificate) gets a token bound to the certificate."""
    client = await tls_client(mtls_bank)
    status, body, headers = await token_at_sandbox(
        mtls_bank, {"grant_type": CC, "client_id": client["client_id"], "scope": "accounts"}, CERT)
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    assert body["scope"] == "accounts"
    assert cnf_of(body) == {"x5t#S256": CERT.x5t_s256}


@pytest.mark.parametrize("dn", [
    {"tls_client_auth_dn": SUBJECT},
    {"tls_client_auth_subject_dn": f"cn={SOFTWARE_ID}, ou={ORG_ID}, o=openbanking, c=gb"},
    {"tls_client_auth_subject_dn": f"2.5.4.3={SOFTWARE_ID},OU={ORG_ID},O=OpenBanking,C=GB"},
    {"tls_client_auth_subject_dn": f"C=GB,O=OpenBanking,OU={ORG_ID},CN={SOFTWARE_ID}"},
    {"tls_client_auth_subject_dn": f"OID.2.5.4.3=#0c{len(SOFTWARE_ID):02x}{SOFTWARE_ID.encode().hex()},"
                                   f"OU={ORG_ID},O=Open\\42anking,C=GB"},
], ids=["ob-3.1-claim", "case-and-spaces", "oid-type", "least-specific-first", "hex-values"])
async def test_tls_client_auth_dn_spellings(mtls_bank: Bank, dn: dict[str, str]) -> None:
    """The OB 3.1 claim name, case and insignificant spaces, a dotted OID, the reverse RDN order and hex values
    all name the same subject (certificates.same_dn, as the gateway's client_certificate)."""
    client = await tls_client(mtls_bank, **dn)
    status, body, _ = await token_at_sandbox(mtls_bank, {"grant_type": CC, "client_id": client["client_id"]}, CERT)
    assert status == 200, body


@pytest.mark.parametrize("cert", [
    client_cert("otherSoftware"),
    client_cert(start=datetime.now(UTC) - timedelta(days=40)),
    client_cert(start=datetime.now(UTC) + timedelta(days=1)),
    None,
], ids=["other-subject", "expired", "not-yet-valid", "no-certificate"])
async def test_tls_client_auth_refusals_are_401(mtls_bank: Bank, cert: Cert | None) -> None:
    """Another subject, an out-of-date certificate or none at all is 401 invalid_client with a Basic challenge."""
    client = await tls_client(mtls_bank)
    status, body, headers = await token_at_sandbox(mtls_bank, {"grant_type": CC, "client_id": client["client_id"]},
                                                   cert)
    assert (status, body["error"]) == (401, "invalid_client"), body
    assert headers["WWW-Authenticate"] == 'Basic realm="dcr-sandbox"'


@pytest.mark.parametrize("value", [
    "not a certificate",
    quote(CERT.cert.public_bytes(Encoding.PEM).decode(), safe="") * 2,
    quote(quote(CERT.cert.public_bytes(Encoding.PEM).decode(), safe=""), safe=""),
    "%zz",
], ids=["garbage", "two-certificates", "escaped-twice", "bad-escape"])
async def test_malformed_certificate_header_is_401(mtls_bank: Bank, value: str) -> None:
    """A forwarded header that is not exactly one certificate fails client authentication."""
    client = await tls_client(mtls_bank)
    status, body, _ = await token_at_sandbox(mtls_bank, {"grant_type": CC, "client_id": client["client_id"]},
                                             headers={CERT_HEADER: value})
    assert (status, body["error"]) == (401, "invalid_client"), body
    assert "malformed" in body["error_description"]


async def test_certificate_header_sent_twice_is_401(mtls_bank: Bank) -> None:
    """Two certificate headers are ambiguous: refused."""
    client = await tls_client(mtls_bank)
    value = CERT.header()[CERT_HEADER]
    async with mtls_bank.http.post(mtls_bank.sandbox_url + TOKEN,
                                   data={"grant_type": CC, "client_id": client["client_id"]},
                                   headers=[(CERT_HEADER, value), (CERT_HEADER, value)]) as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_client"


@pytest.mark.parametrize("trust", [
    {"client_certificate": {"header": CERT_HEADER, "trusted_proxies": ["10.9.9.9/32"]}},
    {"client_certificate": {"header": CERT_HEADER}},
], ids=["another-proxy", "no-trusted-proxy"])
async def test_certificate_from_an_untrusted_peer_is_401(bank_factory: BankFactory, trust: dict[str, Any]) -> None:
    """Only the configured TLS-terminating proxy may vouch for a certificate: from anyone else it is a forgery
    risk, refused even for a client that would not need it."""
    bank = await bank_factory(trust=trust)
    client = await tls_client(bank)
    form = {"grant_type": CC, "client_id": client["client_id"]}
    status, body, _ = await token_at_sandbox(bank, form, CERT)
    assert (status, body["error"]) == (401, "invalid_client"), body
    assert "trusted" in body["error_description"]
    app_id, secret = await bank.create_app()
    status, body, _ = await token_at_sandbox(bank, {"grant_type": CC}, CERT, headers=_basic(app_id, secret))
    assert (status, body["error"]) == (401, "invalid_client"), body


async def test_the_registered_method_decides(mtls_bank: Bank) -> None:
    """A tls_client_auth client's secret is not its credential; a secret client cannot use a certificate alone."""
    client = await tls_client(mtls_bank)
    status, body, _ = await token_at_sandbox(
        mtls_bank, {"grant_type": CC}, CERT, headers=_basic(client["client_id"], client["client_secret"]))
    assert (status, body["error"]) == (401, "invalid_client"), body
    assert "tls_client_auth" in body["error_description"]
    secret_client = await mtls_bank.new_client(method="client_secret_basic")
    status, body, _ = await token_at_sandbox(mtls_bank, {"grant_type": CC, "client_id": secret_client["client_id"]},
                                             CERT)
    assert (status, body["error"]) == (401, "invalid_client"), body
    status, body, _ = await token_at_sandbox(mtls_bank, {"grant_type": CC}, CERT)
    assert (status, body["error"]) == (401, "invalid_client"), body


# -- self_signed_tls_client_auth (RFC 8705 §2.2) ---------------------------------------------------------


async def test_self_signed_certificate_in_the_key_set(mtls_bank: Bank) -> None:
    """A self-signed certificate published as an x5c key of the client's key set authenticates it."""
    cert = self_signed_cert()
    client = await self_signed_client(mtls_bank, cert)
    status, body, _ = await token_at_sandbox(mtls_bank, {"grant_type": CC, "client_id": client["client_id"]}, cert)
    assert status == 200, body
    assert cnf_of(body) == {"x5t#S256": cert.x5t_s256}


async def test_self_signed_certificate_not_in_the_key_set_is_401(mtls_bank: Bank) -> None:
    """The same subject is not enough: the very certificate must be registered."""
    client = await self_signed_client(mtls_bank, self_signed_cert())
    status, body, _ = await token_at_sandbox(mtls_bank, {"grant_type": CC, "client_id": client["client_id"]},
                                             self_signed_cert())
    assert (status, body["error"]) == (401, "invalid_client"), body
    assert "key set" in body["error_description"]


async def _cached_then_added(bank: Bank) -> tuple[dict[str, str], str, Cert, Cert]:
    """A self_signed_tls_client_auth client whose key set the sandbox has just fetched and cached (a token with
    its first certificate), then a second certificate added to that key set; (token form, name of the key set on
    the TPP JWKS server, first certificate, added certificate)."""
    first, added = self_signed_cert(), self_signed_cert()
    client = await self_signed_client(bank, first)
    form = {"grant_type": CC, "client_id": client["client_id"]}
    name = str(unverified(client["software_statement"])[1]["software_jwks_endpoint"]).rsplit("/", 1)[-1]
    status, body, _ = await token_at_sandbox(bank, form, first)
    assert status == 200, body
    assert bank.tpp.hits[name] == 1
    bank.tpp.documents[name]["keys"].append(added.tls_jwk("transport-2"))
    return form, name, first, added


async def test_a_certificate_added_to_the_key_set_refetches_it(mtls_bank: Bank, monkeypatch) -> None:
    """A certificate not in the cached key set refetches it once (the TPP just added it), as an unknown kid does,
    instead of 401 until tpp_jwks_cache_seconds pass; a known one keeps using the cache. The refetch floor is 0
    here so that the second request comes after it without waiting."""
    monkeypatch.setattr(jwks_fetcher, "MIN_REFETCH_SECONDS", 0.0)
    form, name, first, added = await _cached_then_added(mtls_bank)
    status, body, _ = await token_at_sandbox(mtls_bank, form, added)
    assert status == 200, body
    assert cnf_of(body) == {"x5t#S256": added.x5t_s256}
    assert mtls_bank.tpp.hits[name] == 2
    for cert in (first, added):  # both known now: the cache answers
        status, body, _ = await token_at_sandbox(mtls_bank, form, cert)
        assert status == 200, body
    assert mtls_bank.tpp.hits[name] == 2


async def test_an_unknown_certificate_does_not_refetch_within_the_floor(mtls_bank: Bank) -> None:
    """Unknown certificates refetch no more often than unknown kids (jwks_fetcher.MIN_REFETCH_SECONDS): a
    request right after a fetch is answered from the cache, 401 when its certificate is not there."""
    form, name, _, added = await _cached_then_added(mtls_bank)
    for _ in range(3):
        status, body, _ = await token_at_sandbox(mtls_bank, form, added)
        assert (status, body["error"]) == (401, "invalid_client"), body
    assert mtls_bank.tpp.hits[name] == 1


# -- certificate-bound tokens for every method (RFC 8705 §3) ---------------------------------------------


async def test_secret_and_assertion_tokens_are_bound_over_mutual_tls(mtls_bank: Bank) -> None:
    """A client_secret_basic or private_key_jwt client calling over mutual TLS gets a bound token; without a
    certificate, an unbound one."""
    app_id, secret = await mtls_bank.create_app()
    status, body, _ = await token_at_sandbox(mtls_bank, {"grant_type": CC}, CERT, headers=_basic(app_id, secret))
    assert status == 200, body
    assert cnf_of(body) == {"x5t#S256": CERT.x5t_s256}
    status, body, _ = await token_at_sandbox(mtls_bank, {"grant_type": CC}, headers=_basic(app_id, secret))
    assert status == 200, body
    assert cnf_of(body) is None
    tpp = tpp_key("tpp")
    client = await mtls_bank.new_client(tpp, method="private_key_jwt")
    form = {"grant_type": CC, "client_assertion_type": client_auth.JWT_BEARER_ASSERTION,
            "client_assertion": mtls_bank.assertion(tpp, client["client_id"])}
    status, body, _ = await token_at_sandbox(mtls_bank, form, CERT)
    assert status == 200, body
    assert cnf_of(body) == {"x5t#S256": CERT.x5t_s256}


async def test_bound_token_is_accepted_by_the_sandbox_only_over_its_certificate(mtls_bank: Bank) -> None:
    """The sandbox, a resource server too, enforces RFC 8705 §3 itself: a certificate-bound token works over its
    certificate (forwarded straight to the sandbox port by the trusted proxy), and not without it."""
    client = await tls_client(mtls_bank)
    _, body, _ = await token_at_sandbox(mtls_bank, {"grant_type": CC, "client_id": client["client_id"]}, CERT)
    path = f"/open-banking/v3.1/register/{client['client_id']}"
    headers = {"Authorization": f"Bearer {body['access_token']}", **CERT.header()}
    async with mtls_bank.http.get(mtls_bank.sandbox_url + path, headers=headers) as r:
        assert r.status == 200, await r.text()
    other = {**headers, **client_cert().header()}  # the same subject, another key: another certificate
    async with mtls_bank.http.get(mtls_bank.sandbox_url + path, headers=other) as r:
        assert r.status == 401 and (await r.json())["error"] == "invalid_token"
    status, doc, hdrs = await mtls_bank.call("GET", path, body["access_token"])  # through the gateway, no cert
    assert status == 401 and doc["error"] == "invalid_token", doc
    assert "invalid_token" in hdrs["WWW-Authenticate"]


# -- discovery lists exactly what is implemented ---------------------------------------------------------


async def _by_basic(bank: Bank) -> tuple[int, dict[str, Any]]:
    client = await bank.new_client(method="client_secret_basic")
    status, body, _ = await token_at_sandbox(bank, {"grant_type": CC},
                                             headers=_basic(client["client_id"], client["client_secret"]))
    return status, body


async def _by_post(bank: Bank) -> tuple[int, dict[str, Any]]:
    client = await bank.new_client(method="client_secret_post")
    form = {"grant_type": CC, "client_id": client["client_id"], "client_secret": client["client_secret"]}
    status, body, _ = await token_at_sandbox(bank, form)
    return status, body


async def _by_assertion(bank: Bank) -> tuple[int, dict[str, Any]]:
    tpp = tpp_key("tpp")
    client = await bank.new_client(tpp, method="private_key_jwt")
    return await bank.assertion_token(tpp, client["client_id"])


async def _by_tls(bank: Bank) -> tuple[int, dict[str, Any]]:
    client = await tls_client(bank)
    status, body, _ = await token_at_sandbox(bank, {"grant_type": CC, "client_id": client["client_id"]}, CERT)
    return status, body


async def _by_self_signed(bank: Bank) -> tuple[int, dict[str, Any]]:
    cert = self_signed_cert()
    client = await self_signed_client(bank, cert)
    status, body, _ = await token_at_sandbox(bank, {"grant_type": CC, "client_id": client["client_id"]}, cert)
    return status, body


OBTAIN: dict[str, Callable[[Bank], Awaitable[tuple[int, dict[str, Any]]]]] = {
    "client_secret_basic": _by_basic,
    "client_secret_post": _by_post,
    "private_key_jwt": _by_assertion,
    "tls_client_auth": _by_tls,
    "self_signed_tls_client_auth": _by_self_signed,
}
"""How a registered client gets a token with each method."""


async def test_discovery_lists_exactly_the_implemented_methods(mtls_bank: Bank) -> None:
    """Discovery's token_endpoint_auth_methods_supported is the authenticator's own list, a client may register
    each of them, and each really gets a token: none advertised and missing, none working and unlisted."""
    async with mtls_bank.http.get(mtls_bank.gateway_url + "/.well-known/openid-configuration") as r:
        doc = await r.json()
    advertised = doc["token_endpoint_auth_methods_supported"]
    assert advertised == list(client_auth.AUTH_METHODS)
    assert metadata.AUTH_METHODS == client_auth.AUTH_METHODS  # what registration accepts
    assert set(advertised) == set(OBTAIN)
    assert doc["tls_client_certificate_bound_access_tokens"] is True
    for method in advertised:
        status, body = await OBTAIN[method](mtls_bank)
        assert status == 200, (method, body)


# -- empty parameters are absent (RFC 6749 §3.1) ----------------------------------------------------------


async def test_empty_parameters_count_as_absent(mtls_bank: Bank) -> None:
    """`scope=` is no scope (every allowed scope), an empty `client_secret` is no credential, `grant_type=`
    is a missing grant_type."""
    client = await tls_client(mtls_bank)
    status, body, _ = await token_at_sandbox(
        mtls_bank, {"grant_type": CC, "client_id": client["client_id"], "scope": ""}, CERT)
    assert status == 200, body
    assert body["scope"] == "accounts payments"
    status, body, _ = await token_at_sandbox(
        mtls_bank, {"grant_type": CC, "client_id": client["client_id"], "client_secret": ""}, CERT)
    assert status == 200, body
    status, body, _ = await token_at_sandbox(mtls_bank, {"grant_type": "", "client_id": client["client_id"]}, CERT)
    assert (status, body["error"]) == (400, "invalid_request"), body
    assert body["error_description"] == "grant_type is required"
    status, body, _ = await mtls_bank.token_request(
        "grant_type=client_credentials&scope=", auth=await mtls_bank.create_app(),
        headers={"Content-Type": "application/x-www-form-urlencoded"})  # through the gateway, as the OB tool sends it
    assert status == 200, body
    assert body["scope"] == "openid accounts payments fundsconfirmations"
