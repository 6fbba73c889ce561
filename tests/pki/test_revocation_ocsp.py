"""gateway.pki.revocation's OCSP client against a REAL responder: Debian's `openssl ocsp`, answering from an
`openssl ca` index the test writes, with a clock the test moves. `openssl ocsp -port` would listen on every
interface (it takes no address), so the responder's HTTP side is a small aiohttp server on 127.0.0.1 that hands
each request's DER to `openssl ocsp -reqin … -respout …` and returns openssl's answer unchanged."""

from __future__ import annotations

import asyncio
import base64
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
from aiohttp import web
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.jose.url_guard import UrlPolicy
from gateway.pki.revocation import RevocationChecker, RevocationSettings, refuses
from tests.waiting import Clock

from ..conftest import free_port
from .ca import Issued, TestCa, pem

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs Debian's openssl (in the base system)"),
]
LOOPBACK = UrlPolicy(allow_http=True, allow_loopback=True)
DAY = 86400.0


@dataclass
class World:
    """A CA, its responder (URL, and how to take it away), and three leaves: good, revoked, unknown to it."""

    ca: TestCa
    url: str
    stop: Callable[[], Awaitable[None]]
    good: Issued
    revoked: Issued
    unknown: Issued


def _responder(directory: Path) -> web.Application:
    """The HTTP side of an OCSP responder (RFC 6960 appendix A: POST of the DER request, or GET with it in the
    path, base64): `openssl ocsp` answers each request from the index and keys in `directory`."""
    count = 0

    async def answer(request: web.Request) -> web.Response:
        nonlocal count
        count += 1
        if request.method == "POST":
            der = await request.read()
        else:
            der = base64.b64decode(unquote(request.match_info["encoded"]))
        reqin, respout = directory / f"req-{count}.der", directory / f"resp-{count}.der"
        reqin.write_bytes(der)
        process = await asyncio.create_subprocess_exec(
            "openssl", "ocsp", "-index", "index.txt", "-CA", "ca.pem", "-rsigner", "signer.pem",
            "-rkey", "signer-key.pem", "-ndays", "1", "-reqin", reqin.name, "-respout", respout.name,
            cwd=directory, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await process.communicate()
        assert process.returncode == 0 and respout.exists(), output.decode(errors="replace")
        return web.Response(body=respout.read_bytes(), content_type="application/ocsp-response")

    app = web.Application()
    app.router.add_post("/", answer)
    app.router.add_get("/{encoded:.+}", answer)
    return app


MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture
async def make_world(tmp_path: Path) -> AsyncIterator[MakeWorld]:
    """A CA and its `openssl ocsp` responder on 127.0.0.1, signing as the CA or as a delegated responder
    certificate it issues (`delegated`: the keyword arguments of that certificate); stopped at teardown."""
    runners: list[web.AppRunner] = []

    async def make(*, delegated: dict[str, object] | None = None, signer_ca: TestCa | None = None) -> World:
        ca = TestCa()
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        good, revoked, unknown = (ca.issue(cn, ocsp_url=url) for cn in ("good", "revoked", "unknown"))
        signer = (signer_ca or ca).issue("OCSP responder", **delegated) if delegated is not None else None  # type: ignore[arg-type]
        ca.write_index(tmp_path / "index.txt", [revoked.cert], unknown=(unknown.cert,))
        (tmp_path / "ca.pem").write_bytes(pem(ca.cert))
        (tmp_path / "signer.pem").write_bytes(pem(signer.cert if signer else ca.cert))
        (tmp_path / "signer-key.pem").write_bytes(pem(signer.key if signer else ca.key))
        runner = web.AppRunner(_responder(tmp_path))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return World(ca, url, runner.cleanup, good, revoked, unknown)

    yield make
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def clock() -> Clock:
    """The real time when the test starts: `openssl ocsp` stamps thisUpdate with it (the certificates are valid
    for weeks around NOW, which the suite fixed at collection)."""
    return Clock(time.time())


@pytest.fixture
async def checker(clock: Clock) -> AsyncIterator[RevocationChecker]:
    checker = RevocationChecker(policy=LOOPBACK, clock=clock)
    await checker.start()
    yield checker
    await checker.close()


async def test_good_revoked_and_unknown(make_world: MakeWorld, checker: RevocationChecker) -> None:
    """The responder's three answers, each signed by the CA itself: good, revoked (with reason), unknown."""
    w = await make_world()
    good = await checker.check(w.good.cert, w.ca.cert, ["ocsp"])
    revoked = await checker.check(w.revoked.cert, w.ca.cert, ["ocsp"])
    unknown = await checker.check(w.unknown.cert, w.ca.cert, ["ocsp"])
    assert (good.status, good.method) == ("good", "ocsp")
    assert (revoked.status, revoked.method) == ("revoked", "ocsp") and revoked.answers[0].reason == "key_compromise"
    assert unknown.status == "unknown" and unknown.answers[0].outcome == "unknown"
    assert "does not know serial" in unknown.description


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
async def test_either_cert_id_hash_and_a_nonce(make_world: MakeWorld, clock: Clock, digest: str) -> None:
    """SHA-1 and SHA-256 CertIDs are both understood, and the nonce openssl echoes is the one sent."""
    w = await make_world()
    checker = RevocationChecker(policy=LOOPBACK, clock=clock,
                                settings=RevocationSettings(ocsp_hash=digest, ocsp_nonce=True))  # type: ignore[arg-type]
    try:
        assert (await checker.check(w.revoked.cert, w.ca.cert, ["ocsp"])).status == "revoked"
    finally:
        await checker.close()


async def test_a_cached_answer_is_used_until_next_update(make_world: MakeWorld, checker: RevocationChecker,
                                                         clock: Clock) -> None:
    """Once answered, the responder is not asked again before nextUpdate (it can be gone); after, it is, and an
    unreachable responder then leaves the status unknown (hard_fail refuses, soft_fail lets through)."""
    w = await make_world()
    assert (await checker.check(w.good.cert, w.ca.cert, ["ocsp"])).status == "good"
    await w.stop()
    assert (await checker.check(w.good.cert, w.ca.cert, ["ocsp"])).status == "good"
    clock.now += DAY + 60  # past nextUpdate (-ndays 1)
    down = await checker.check(w.good.cert, w.ca.cert, ["ocsp"])
    assert down.status == "unknown" and "connection failed" in down.description
    assert refuses(down, "hard_fail") and not refuses(down, "soft_fail") and not refuses(down, "off")


async def test_a_stale_answer_is_refused(make_world: MakeWorld, checker: RevocationChecker, clock: Clock) -> None:
    """An answer whose nextUpdate has passed (the checker's clock two days on) is not believed."""
    w = await make_world()
    clock.now += 2 * DAY
    status = await checker.check(w.good.cert, w.ca.cert, ["ocsp"])
    assert status.status == "unknown" and "the answer is stale" in status.description


async def test_an_answer_from_the_future_is_refused(make_world: MakeWorld, checker: RevocationChecker,
                                                    clock: Clock) -> None:
    """thisUpdate an hour ahead of the checker's clock (beyond the skew): not believed."""
    w = await make_world()
    clock.now -= 3600
    status = await checker.check(w.good.cert, w.ca.cert, ["ocsp"])
    assert status.status == "unknown" and "is in the future" in status.description


async def test_a_delegated_responder_with_ocsp_signing_and_nocheck(make_world: MakeWorld,
                                                                    checker: RevocationChecker) -> None:
    """A responder certificate issued by the CA for OCSPSigning, with id-pkix-ocsp-nocheck, is believed."""
    w = await make_world(delegated={"eku": [ExtendedKeyUsageOID.OCSP_SIGNING], "nocheck": True})
    assert (await checker.check(w.good.cert, w.ca.cert, ["ocsp"])).status == "good"
    assert (await checker.check(w.revoked.cert, w.ca.cert, ["ocsp"])).status == "revoked"


async def test_a_delegated_responder_without_ocsp_signing_is_refused(make_world: MakeWorld,
                                                                      checker: RevocationChecker) -> None:
    """A certificate of the same CA without the OCSPSigning EKU cannot speak for it: its "revoked" is not even
    believed, the status is unknown."""
    w = await make_world(delegated={"eku": [ExtendedKeyUsageOID.CLIENT_AUTH], "nocheck": True})
    status = await checker.check(w.revoked.cert, w.ca.cert, ["ocsp"])
    assert status.status == "unknown" and "lacks the OCSPSigning extended key usage" in status.description


async def test_a_responder_of_another_ca_is_refused(make_world: MakeWorld, checker: RevocationChecker) -> None:
    """A responder certificate with OCSPSigning and nocheck, but issued by another CA, does not speak for this one:
    even its "revoked" is not believed."""
    w = await make_world(delegated={"eku": [ExtendedKeyUsageOID.OCSP_SIGNING], "nocheck": True},
                         signer_ca=TestCa(cn="Another CA"))
    status = await checker.check(w.revoked.cert, w.ca.cert, ["ocsp"])
    assert status.status == "unknown" and "is not issued by the certificate's issuer" in status.description


async def test_a_delegated_responder_without_nocheck_needs_a_good_crl_status(make_world: MakeWorld,
                                                                              checker: RevocationChecker) -> None:
    """Without id-pkix-ocsp-nocheck the responder's own status must be known: with no CRL to ask, unknown."""
    w = await make_world(delegated={"eku": [ExtendedKeyUsageOID.OCSP_SIGNING], "nocheck": False})
    status = await checker.check(w.good.cert, w.ca.cert, ["ocsp"])
    assert status.status == "unknown" and "has no id-pkix-ocsp-nocheck" in status.description


async def test_ocsp_unknown_falls_back_to_the_crl(make_world: MakeWorld, checker: RevocationChecker) -> None:
    """OCSP first: an unknown answer lets the CRL decide (here: none named, so unknown from both)."""
    w = await make_world()
    status = await checker.check(w.unknown.cert, w.ca.cert)
    assert [a.outcome for a in status.answers] == ["unknown", "unknown"] and status.status == "unknown"
