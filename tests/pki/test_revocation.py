"""gateway.pki.revocation with CRLs served by a real aiohttp server on 127.0.0.1, a CA hierarchy made here and a
clock the test moves. (OCSP against Debian's `openssl ocsp`: test_revocation_ocsp.py.)"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from gateway.jose.url_guard import UrlPolicy
from gateway.pki.revocation import (
    RevocationChecker,
    RevocationEvents,
    RevocationSettings,
    crl_urls,
    ocsp_urls,
)
from tests.waiting import Clock

from .ca import NOW, TestCa

StartServer = Callable[[web.Application], Awaitable[TestServer]]
LOOPBACK = UrlPolicy(allow_http=True, allow_loopback=True)


@dataclass
class CrlServer:
    """Serves `body` at /crl and counts the requests."""

    body: bytes = b""
    hits: int = 0
    content_type: str = "application/pkix-crl"
    url: str = ""

    async def handle(self, _: web.Request) -> web.Response:
        self.hits += 1
        await asyncio.sleep(0)  # let concurrent callers pile up behind the one fetch
        return web.Response(body=self.body, content_type=self.content_type)


@dataclass
class Counted:
    """What the checker reported through its events."""

    checks: list[tuple[str, str]] = field(default_factory=list)
    fetches: list[tuple[str, str]] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)

    def events(self) -> RevocationEvents:
        return RevocationEvents(on_check=lambda m, o: self.checks.append((m, o)),
                                on_fetch=lambda m, r: self.fetches.append((m, r)), on_cache_hit=self.hits.append)


@pytest.fixture
async def crl_server(start_server: StartServer) -> CrlServer:
    served = CrlServer()
    app = web.Application()
    app.router.add_get("/crl", served.handle)
    server = await start_server(app)
    served.url = str(server.make_url("/crl"))
    return served


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW.timestamp())


@pytest.fixture
async def checker(clock: Clock) -> AsyncIterator[tuple[RevocationChecker, Counted]]:
    counted = Counted()
    checker = RevocationChecker(policy=LOOPBACK, clock=clock, events=counted.events(),
                                settings=RevocationSettings(max_crl_bytes=64 * 1024))
    await checker.start()
    yield checker, counted
    await checker.close()


async def test_a_certificate_not_on_the_crl_is_good(crl_server: CrlServer, checker: tuple[RevocationChecker, Counted]) -> None:
    """Not listed on the issuer's current, correctly signed CRL: good, decided by the CRL."""
    ca = TestCa()
    leaf = ca.issue("tpp", crl_url=crl_server.url)
    other = ca.issue("other", crl_url=crl_server.url)
    crl_server.body = ca.crl([other.cert])
    status = await checker[0].check(leaf.cert, ca.cert, ["crl"])
    assert (status.status, status.method) == ("good", "crl")
    assert checker[1].checks == [("crl", "good")] and checker[1].fetches == [("crl", "ok")]


async def test_a_listed_certificate_is_revoked_with_its_reason(
    crl_server: CrlServer, checker: tuple[RevocationChecker, Counted]
) -> None:
    """Listed on the CRL: revoked, with the CRL entry's reason and date in the answer."""
    ca = TestCa()
    leaf = ca.issue("tpp", crl_url=crl_server.url)
    crl_server.body = ca.crl([leaf.cert])
    status = await checker[0].check(leaf.cert, ca.cert, ["ocsp", "crl"])
    assert (status.status, status.method) == ("revoked", "crl")
    crl_answer = status.answers[-1]
    assert crl_answer.reason == "key_compromise" and crl_answer.revoked_at == NOW
    assert f"serial {leaf.cert.serial_number:x} was revoked" in status.description
    assert status.answers[0].outcome == "unknown"  # no OCSP responder named: the CRL decided


async def test_a_pem_crl_is_tolerated(crl_server: CrlServer, checker: tuple[RevocationChecker, Counted]) -> None:
    """A CRL served as PEM is read like DER."""
    ca = TestCa()
    leaf = ca.issue("tpp", crl_url=crl_server.url)
    crl = x509.load_der_x509_crl(ca.crl([leaf.cert]))
    crl_server.body = crl.public_bytes(serialization.Encoding.PEM)
    assert (await checker[0].check(leaf.cert, ca.cert, ["crl"])).status == "revoked"


async def test_a_crl_signed_by_another_key_is_not_believed(
    crl_server: CrlServer, checker: tuple[RevocationChecker, Counted]
) -> None:
    """A CRL in the issuer's name but signed by another key proves nothing: unknown, never good."""
    ca = TestCa()
    leaf = ca.issue("tpp", crl_url=crl_server.url)
    crl_server.body = ca.crl([], key=ec.generate_private_key(ec.SECP256R1()))
    status = await checker[0].check(leaf.cert, ca.cert, ["crl"])
    assert status.status == "unknown"
    assert "signature does not verify with the issuer's key" in status.description
    assert checker[1].checks == [("crl", "error")]


async def test_a_crl_of_another_issuer_is_not_believed(
    crl_server: CrlServer, checker: tuple[RevocationChecker, Counted]
) -> None:
    """A valid CRL of a different CA (its own name and key) does not speak for this issuer."""
    ca, stranger = TestCa(), TestCa(cn="Another CA")
    leaf = ca.issue("tpp", crl_url=crl_server.url)
    crl_server.body = stranger.crl([])
    status = await checker[0].check(leaf.cert, ca.cert, ["crl"])
    assert status.status == "unknown" and "not issued by the certificate's issuer" in status.description


async def test_a_stale_crl_is_refused(crl_server: CrlServer, checker: tuple[RevocationChecker, Counted],
                                      clock: Clock) -> None:
    """A CRL whose nextUpdate passed (beyond the skew) may miss revocations: unknown."""
    ca = TestCa()
    leaf = ca.issue("tpp", crl_url=crl_server.url)
    crl_server.body = ca.crl([], this_update=NOW - dt.timedelta(days=2), next_update=NOW - dt.timedelta(minutes=5))
    status = await checker[0].check(leaf.cert, ca.cert, ["crl"])
    assert status.status == "unknown" and "the CRL is stale" in status.description


async def test_a_cached_crl_is_reused_until_next_update_then_refetched(
    crl_server: CrlServer, checker: tuple[RevocationChecker, Counted], clock: Clock
) -> None:
    """Until its nextUpdate a CRL is not fetched again; after it, it is; a failed refetch keeps the old CRL only
    within the skew, then the answer is unknown."""
    ca = TestCa()
    leaf = ca.issue("tpp", crl_url=crl_server.url)
    crl_server.body = ca.crl([], next_update=NOW + dt.timedelta(hours=1))
    for _ in range(3):
        assert (await checker[0].check(leaf.cert, ca.cert, ["crl"])).status == "good"
    assert crl_server.hits == 1 and checker[1].hits == ["crl", "crl"]
    clock.now += 3600 + 1  # past nextUpdate: refetched, and the new CRL lists the certificate
    crl_server.body = ca.crl([leaf.cert], this_update=NOW + dt.timedelta(hours=1),
                             next_update=NOW + dt.timedelta(hours=2))
    assert (await checker[0].check(leaf.cert, ca.cert, ["crl"])).status == "revoked"
    assert crl_server.hits == 2
    clock.now += 3600 + 10  # past the new nextUpdate, within the 30 s skew; the refetch fails
    crl_server.body = b"not a CRL"
    assert (await checker[0].check(leaf.cert, ca.cert, ["crl"])).status == "revoked"
    clock.now += 60  # past nextUpdate + skew: the old CRL is no longer used
    status = await checker[0].check(leaf.cert, ca.cert, ["crl"])
    assert status.status == "unknown" and "not a DER or PEM CRL" in status.description


async def test_concurrent_checks_share_one_fetch(crl_server: CrlServer,
                                                 checker: tuple[RevocationChecker, Counted]) -> None:
    """Twenty concurrent checks against a cold cache make one request to the CRL server."""
    ca = TestCa()
    leaves = [ca.issue(f"tpp{i}", crl_url=crl_server.url) for i in range(20)]
    crl_server.body = ca.crl([leaves[0].cert])
    statuses = await asyncio.gather(*(checker[0].check(leaf.cert, ca.cert, ["crl"]) for leaf in leaves))
    assert [s.status for s in statuses] == ["revoked"] + ["good"] * 19
    assert crl_server.hits == 1


async def test_a_crl_over_the_size_cap_is_refused(crl_server: CrlServer,
                                                  checker: tuple[RevocationChecker, Counted]) -> None:
    """A body beyond max_crl_bytes is not read to the end: unknown, counted as too_large."""
    ca = TestCa()
    leaf = ca.issue("tpp", crl_url=crl_server.url)
    crl_server.body = b"\x30" * (64 * 1024 + 1)
    status = await checker[0].check(leaf.cert, ca.cert, ["crl"])
    assert status.status == "unknown" and checker[1].fetches == [("crl", "too_large")]


async def test_no_distribution_point_is_unknown(checker: tuple[RevocationChecker, Counted]) -> None:
    """A certificate naming no CRL and no OCSP responder cannot be checked: unknown, nothing fetched."""
    ca = TestCa()
    leaf = ca.issue("tpp")
    status = await checker[0].check(leaf.cert, ca.cert)
    assert status.status == "unknown" and status.method is None
    assert [a.outcome for a in status.answers] == ["unknown", "unknown"] and checker[1].fetches == []


def test_only_http_urls_are_taken_from_the_certificate() -> None:
    """ldap:// and file:// distribution points and responders are ignored; http(s) ones are kept in order."""
    ca = TestCa()
    assert crl_urls(ca.issue("a", crl_url="ldap://dir.example/cn=CA?certificateRevocationList").cert) == []
    assert crl_urls(ca.issue("b", crl_url="file:///etc/passwd").cert) == []
    assert ocsp_urls(ca.issue("c", ocsp_url="ftp://ocsp.example/").cert) == []
    assert crl_urls(ca.issue("d", crl_url="HTTPS://crl.example/ca.crl").cert) == ["HTTPS://crl.example/ca.crl"]


@pytest.mark.parametrize("allow_loopback", [False, True])
async def test_a_refused_url_is_never_connected_to(allow_loopback: bool, clock: Clock) -> None:
    """Under a policy refusing loopback, neither the CRL server nor the OCSP responder on 127.0.0.1 sees a single
    connection: the refusal comes before any connect (with loopback allowed, the same server is reached)."""
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ca = TestCa()
    leaf = ca.issue("tpp", crl_url=f"http://127.0.0.1:{port}/crl", ocsp_url=f"http://127.0.0.1:{port}/ocsp")
    counted = Counted()
    checker = RevocationChecker(policy=UrlPolicy(allow_http=True, allow_loopback=allow_loopback), clock=clock,
                                events=counted.events())
    try:
        status = await checker.check(leaf.cert, ca.cert)
    finally:
        await checker.close()
        server.close()
        await server.wait_closed()
    assert status.status == "unknown"
    if allow_loopback:
        assert connections >= 2 and counted.fetches == [("ocsp", "error"), ("crl", "error")]
    else:
        assert connections == 0 and counted.fetches == [("ocsp", "refused"), ("crl", "refused")]
        assert "OCSP responder host '127.0.0.1' resolves to a loopback address" in status.description
        assert "CRL distribution point host '127.0.0.1' resolves to a loopback address" in status.description


async def test_a_redirect_is_not_followed(start_server: StartServer, checker: tuple[RevocationChecker, Counted]) -> None:
    """A CRL URL answering a redirect is refused, never followed (the target could be anywhere)."""
    followed = 0

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def elsewhere(_: web.Request) -> web.Response:
        nonlocal followed
        followed += 1
        return web.Response(body=b"")

    app = web.Application()
    app.router.add_get("/crl", redirect)
    app.router.add_get("/elsewhere", elsewhere)
    server = await start_server(app)
    ca = TestCa()
    leaf = ca.issue("tpp", crl_url=str(server.make_url("/crl")))
    status = await checker[0].check(leaf.cert, ca.cert, ["crl"])
    assert status.status == "unknown" and followed == 0 and checker[1].fetches == [("crl", "refused")]


async def test_an_ocsp_answer_signed_by_an_impostor_is_refused(
    start_server: StartServer, checker: tuple[RevocationChecker, Counted]
) -> None:
    """An OCSP answer whose ResponderID names the issuer (by its DN) but which an impostor CA of the same name
    signed does not verify with the issuer's key: unknown, never good."""
    ca = TestCa()
    impostor = TestCa(cn=ca.cn)  # same subject, another key

    async def answer(request: web.Request) -> web.Response:
        asked = ocsp.load_der_ocsp_request(await request.read())
        built = (ocsp.OCSPResponseBuilder()
                 .add_response(cert=leaf.cert, issuer=ca.cert, algorithm=asked.hash_algorithm,
                               cert_status=ocsp.OCSPCertStatus.GOOD, this_update=NOW,
                               next_update=NOW + dt.timedelta(hours=1), revocation_time=None, revocation_reason=None)
                 .responder_id(ocsp.OCSPResponderEncoding.NAME, impostor.cert)
                 .sign(impostor.key, hashes.SHA256()))
        return web.Response(body=built.public_bytes(serialization.Encoding.DER), content_type="application/ocsp-response")

    app = web.Application()
    app.router.add_post("/ocsp", answer)
    server = await start_server(app)
    leaf = ca.issue("tpp", ocsp_url=str(server.make_url("/ocsp")))
    status = await checker[0].check(leaf.cert, ca.cert, ["ocsp"])
    assert status.status == "unknown" and "the answer's signature does not verify" in status.description
    assert checker[1].checks == [("ocsp", "error")]


async def test_the_caches_are_bounded(start_server: StartServer, clock: Clock) -> None:
    """With max_entries 2, three CRL URLs leave two CRLs cached: the least recently used is forgotten (and fetched
    again when asked)."""
    ca = TestCa()
    hits: dict[str, int] = {}

    async def crl(request: web.Request) -> web.Response:
        hits[request.path] = hits.get(request.path, 0) + 1
        return web.Response(body=ca.crl([]), content_type="application/pkix-crl")

    app = web.Application()
    app.router.add_get("/{name}.crl", crl)
    server = await start_server(app)
    leaves = [ca.issue(n, crl_url=str(server.make_url(f"/{n}.crl"))) for n in ("a", "b", "c")]
    checker = RevocationChecker(policy=LOOPBACK, clock=clock, settings=RevocationSettings(max_entries=2))
    try:
        for leaf in [*leaves, leaves[0]]:
            assert (await checker.check(leaf.cert, ca.cert, ["crl"])).status == "good"
        assert checker.cached() == (2, 0)
    finally:
        await checker.close()
    assert hits == {"/a.crl": 2, "/b.crl": 1, "/c.crl": 1}


async def test_the_wrong_issuer_is_never_asked_about(crl_server: CrlServer,
                                                     checker: tuple[RevocationChecker, Counted]) -> None:
    """Handed an issuer certificate that did not issue the certificate (another CA's, whose valid CRL is served):
    unknown, nothing fetched."""
    ca, other = TestCa(), TestCa(cn="Another CA")
    leaf = ca.issue("tpp", crl_url=crl_server.url)
    crl_server.body = other.crl([])
    status = await checker[0].check(leaf.cert, other.cert)
    assert status.status == "unknown" and "not the certificate's issuer" in status.description
    assert crl_server.hits == 0
