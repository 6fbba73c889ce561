"""Property test: the documentation page's fill-in (POST /docs/api/samples) answers 200 or a JSON 400 to any
values, and a 200's samples carry each value as given — on the real sandbox with the shipped policies."""

from __future__ import annotations

from typing import Any, Final

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from gateway.sandbox.apidocs.examples import VARIABLES
from tests.sandbox.conftest import Bank, BankFactory
from tests.sandbox.fuzzing import FUZZ, HOSTILE, LONE_SURROGATES, assert_error_body, strict_json, to_json

NAMES: Final = st.one_of(st.sampled_from(sorted(VARIABLES)), st.text(max_size=12))
VALUES: Final = st.one_of(
    st.text(max_size=40), st.from_regex(r"[A-Za-z0-9._~-]{1,20}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{2,8}\.[A-Za-z0-9_-]{2,8}\.[A-Za-z0-9_-]{0,8}", fullmatch=True),
    LONE_SURROGATES, HOSTILE,
)
BODIES: Final = st.one_of(
    st.dictionaries(NAMES, VALUES, max_size=4).map(lambda values: {"values": values}),
    HOSTILE.map(lambda values: {"values": values}),
    HOSTILE,
)


@pytest.fixture
async def docs_bank(bank_factory: BankFactory) -> Bank:
    return await bank_factory(shipped_policies=True)


@settings(FUZZ, max_examples=300)
@given(body=BODIES)
@example(body={"values": {"client_id": "a b"}})
@example(body={"values": {"access_token": "{{client_id}}", "client_id": "c1"}})
async def test_fuzzed_fill_ins_are_200_or_400(docs_bank: Bank, body: Any) -> None:
    async with docs_bank.http.post(docs_bank.sandbox_url + "/docs/api/samples",
                                   data=to_json(body).encode("utf-8", "surrogatepass"),
                                   headers={"Content-Type": "application/json"}) as r:
        raw = await r.read()
        status = r.status
    event(f"samples {status}")
    assert status < 500, raw[:300]
    answer = strict_json(raw)
    if status != 200:
        assert_error_body(status, answer, frozenset({"invalid_request"}), "samples")
        assert status == 400
        return
    curl = "\n".join(example["samples"]["curl"] for example in answer["examples"])
    for name, value in body.get("values", {}).items():  # no "values": placeholders only
        assert value in curl or name in ("app_client_id", "app_client_secret"), name  # those two go in as Basic
