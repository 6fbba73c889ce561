"""`replay`: a verified registration request's jti is accepted once (case-insensitively, per software), on the
memory store; a request `registration_request` did not verify is refused."""

from __future__ import annotations

from typing import Any

from gateway.checks.registration import REGISTRATION_CLAIMS
from gateway.checks.replay import Replay, replay_key
from tests.checks.unit import NOW, make_check, services, view

JTI = "6f1b9c2e-0d4b-4c6e-9a57-1b1f4f0e8a11"


def claims(jti: str = JTI, iss: str = "software-1") -> dict[str, Any]:
    return {REGISTRATION_CLAIMS: {"jti": jti, "iss": iss, "exp": NOW + 300}}


async def test_a_jti_is_accepted_once() -> None:
    """The first request passes; the same jti again is 400 invalid_client_metadata jti_replayed."""
    check = make_check(Replay)
    assert await check.evaluate(view("POST", facts=claims())) is None
    denial = await check.evaluate(view("POST", facts=claims()))
    assert denial is not None
    assert (denial.status, denial.error, denial.reason, denial.check) == (400, "invalid_client_metadata",
                                                                          "jti_replayed", "replay")
    assert JTI in denial.description


async def test_the_jti_is_compared_case_insensitively_and_per_software() -> None:
    """An upper-cased copy of the UUID is the same jti; the same jti from another software is another one."""
    check = make_check(Replay)
    assert await check.evaluate(view("POST", facts=claims())) is None
    assert (await check.evaluate(view("POST", facts=claims(JTI.upper())))) is not None
    assert await check.evaluate(view("POST", facts=claims(iss="software-2"))) is None
    assert replay_key("s", JTI) == replay_key("s", JTI.upper()) != replay_key("t", JTI)


async def test_each_replay_is_reported() -> None:
    """services.on_replay is called once per replayed jti (the metric's hook)."""
    svc = services()
    seen: list[None] = []
    svc.on_replay = lambda: seen.append(None)
    check = make_check(Replay, svc)
    for _ in range(3):
        await check.evaluate(view("POST", facts=claims()))
    assert len(seen) == 2


async def test_an_unverified_request_is_refused() -> None:
    """No verified registration claims: 400 registration_unverified, nothing recorded."""
    denial = await make_check(Replay).evaluate(view("POST"))
    assert denial is not None and (denial.status, denial.reason) == (400, "registration_unverified")
