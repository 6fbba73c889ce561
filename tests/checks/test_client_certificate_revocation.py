"""`client_certificate`'s `revocation` parameter: the check instance on the runtime's real services (the
RevocationChecker built from config `trust.revocation`), the issuer's CRL served by an aiohttp server on 127.0.0.1,
the issuer handed over through `Services.issuers` as chain validation will."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pydantic
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from gateway.checks.base import RequestView
from gateway.checks.client_certificate import CLIENT_CERT_REVOCATION, ClientCertificate
from gateway.checks.services import Services
from gateway.config import Settings
from gateway.observability.metrics import Metrics
from gateway.runtime import build_runtime
from tests.conftest import free_port
from tests.pki.ca import NOW, Issued, TestCa, pem

StartServer = Callable[[web.Application], Awaitable[TestServer]]
SOFT_FAIL = "dcr_gateway_certificate_revocation_soft_fail_total"


class Issuers:
    """An IssuerLookup over certificates the test trusts (what chain validation will provide)."""

    def __init__(self, *cas: x509.Certificate) -> None:
        self._by_name = {ca.subject: ca for ca in cas}

    def issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        return self._by_name.get(cert.issuer)


@dataclass
class World:
    services: Services
    metrics: Metrics
    ca: TestCa
    crl_hits: list[int]
    crl_url: str
    revoked: list[x509.Certificate]

    def check(self, **params: Any) -> ClientCertificate:
        params = {"match_software_jwks": False, "match_tls_client_auth_dn": False, **params}
        return ClientCertificate(ClientCertificate.Params.model_validate(params), self.services)

    def soft_failed(self) -> float:
        return self.metrics.registry.get_sample_value(SOFT_FAIL) or 0.0


def request(leaf: Issued) -> RequestView:
    """The request as the ingress forwards it (ingress-nginx: the URL-encoded PEM in ssl-client-cert)."""
    header = CIMultiDict({"ssl-client-cert": quote(pem(leaf.cert).decode())})
    return RequestView("POST", "/register", header, peer="127.0.0.1", now=NOW.timestamp())


@pytest.fixture
async def world(start_server: StartServer) -> AsyncIterator[World]:
    ca = TestCa()
    hits: list[int] = []
    revoked: list[x509.Certificate] = []

    async def crl(_: web.Request) -> web.Response:
        hits.append(1)
        return web.Response(body=ca.crl(revoked), content_type="application/pkix-crl")

    app = web.Application()
    app.router.add_get("/ca.crl", crl)
    server = await start_server(app)
    settings = Settings.model_validate({"trust": {"client_certificate": {"trusted_proxies": ["127.0.0.1"]},
                                                  "revocation": {"allow_loopback": True}}})
    metrics = Metrics(CollectorRegistry())
    runtime = build_runtime(settings, metrics)
    runtime.services.issuers = Issuers(ca.cert)
    await runtime.start()
    w = World(runtime.services, metrics, ca, hits, str(server.make_url("/ca.crl")), revoked)
    yield w
    await runtime.close()


async def test_a_revoked_certificate_is_refused(world: World) -> None:
    """On the issuer's CRL: 400 invalid_client_metadata client_cert_revoked, whatever the mode, with the serial."""
    leaf = world.ca.issue("tpp", crl_url=world.crl_url)
    world.revoked.append(leaf.cert)
    for mode in ("hard_fail", "soft_fail"):
        view = request(leaf)
        denial = await world.check(revocation={"mode": mode}).evaluate(view)
        assert denial is not None and denial.reason == "client_cert_revoked"
        assert (denial.status, denial.error) == (400, "invalid_client_metadata")
        assert f"serial {leaf.cert.serial_number:x} was revoked" in denial.description
        assert view.facts.audit_fields()["cert_revocation"] == "revoked:crl"


async def test_a_revoked_certificate_at_the_token_endpoint_is_401(world: World) -> None:
    """With status 401 the refusal is 401 invalid_token with a Bearer challenge."""
    leaf = world.ca.issue("tpp", crl_url=world.crl_url)
    world.revoked.append(leaf.cert)
    denial = await world.check(revocation={"mode": "hard_fail"}, status=401).evaluate(request(leaf))
    assert denial is not None and denial.reason == "client_cert_revoked"
    assert (denial.status, denial.error) == (401, "invalid_token")
    assert dict(denial.headers)["WWW-Authenticate"].startswith("Bearer")


async def test_a_good_certificate_passes_with_its_status_recorded(world: World) -> None:
    """Not on the CRL: passes; the audit field says good:crl; the CRL is fetched once for two requests."""
    leaf = world.ca.issue("tpp", crl_url=world.crl_url)
    check = world.check(revocation={"mode": "hard_fail", "methods": ["crl"]})
    for _ in range(2):
        view = request(leaf)
        assert await check.evaluate(view) is None
        assert view.facts.audit_fields()["cert_revocation"] == "good:crl"
    assert len(world.crl_hits) == 1


async def test_an_unreachable_crl_refuses_under_hard_fail_and_passes_counted_under_soft_fail(world: World) -> None:
    """Nobody listening at the CRL URL: hard_fail refuses (client_cert_revocation_unknown, saying why), soft_fail
    lets the certificate through and counts it."""
    leaf = world.ca.issue("tpp", crl_url=f"http://127.0.0.1:{free_port()}/ca.crl")
    denial = await world.check(revocation={"mode": "hard_fail"}).evaluate(request(leaf))
    assert denial is not None and denial.reason == "client_cert_revocation_unknown"
    assert "connection failed" in denial.description and "hard_fail" in denial.description
    assert world.soft_failed() == 0
    view = request(leaf)
    assert await world.check(revocation={"mode": "soft_fail"}).evaluate(view) is None
    assert view.facts.audit_fields()["cert_revocation"] == "unknown"
    assert world.soft_failed() == 1


async def test_without_a_validated_issuer_the_status_is_unknown(world: World) -> None:
    """A certificate whose issuer chain validation does not know: nothing can verify a CRL for it, unknown."""
    stranger = TestCa(cn="Unknown CA")
    leaf = stranger.issue("tpp", crl_url=world.crl_url)
    denial = await world.check(revocation={"mode": "hard_fail"}).evaluate(request(leaf))
    assert denial is not None and denial.reason == "client_cert_revocation_unknown"
    assert "issuer is not a validated CA certificate" in denial.description
    assert world.crl_hits == []


async def test_off_asks_nothing(world: World) -> None:
    """The default, off: even a revoked certificate passes and no CRL is fetched (no fact recorded)."""
    leaf = world.ca.issue("tpp", crl_url=world.crl_url)
    world.revoked.append(leaf.cert)
    view = request(leaf)
    assert await world.check().evaluate(view) is None
    assert world.crl_hits == [] and view.facts.get(CLIENT_CERT_REVOCATION) is None


@pytest.mark.parametrize("methods", [[], ["crl", "crl"], ["ldap"]])
def test_methods_must_be_distinct_known_and_not_empty(methods: list[str]) -> None:
    """`methods` is a non-empty list of distinct `ocsp` / `crl`: anything else fails at load."""
    with pytest.raises(pydantic.ValidationError):
        ClientCertificate.Params.model_validate({"revocation": {"mode": "hard_fail", "methods": methods}})
