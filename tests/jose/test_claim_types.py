"""The one rule for every claim a check reads (gateway.jose.claims.ClaimType / read_claim), and date claims of
every wrong shape through validate_claims: a stable JoseError, never OverflowError or TypeError."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.jose import ClaimRules, JoseError, validate_claims
from gateway.jose.claims import (
    ANY_VALUE,
    AUDIENCE,
    CLIENT_ID,
    IDENTIFIER,
    MAX_CLAIM_LENGTH,
    MAX_NUMERIC_DATE,
    MAX_SAFE_INTEGER,
    NAME,
    NUMERIC_DATE,
    STRINGS,
    TEXT,
    TOKEN_SCOPE,
    ClaimType,
    read_claim,
)

from .conftest import NOW

HUGE = 10**400
WRONG_FOR_STRINGS: list[Any] = [None, True, False, 0, 1, -1, 1.5, HUGE, [], {}, {"a": "b"}, [1], [None]]

ACCEPTS: list[tuple[str, ClaimType, Any, bool]] = [
    ("text", TEXT, "x", True),
    ("text_blank", TEXT, "   ", False),
    ("name_at_255", NAME, "n" * 255, True),
    ("text_empty", TEXT, "", False),
    ("text_at_bound", TEXT, "x" * MAX_CLAIM_LENGTH, True),
    ("text_over_bound", TEXT, "x" * (MAX_CLAIM_LENGTH + 1), False),
    ("text_list", TEXT, ["x"], False),
    ("name_over_255", NAME, "n" * 256, False),
    ("identifier", IDENTIFIER, "0015800001041REAAY", True),
    ("identifier_crlf", IDENTIFIER, "abc\r\nX-Evil: 1", False),
    ("identifier_space", IDENTIFIER, "a b", False),
    ("identifier_65", IDENTIFIER, "a" * 65, False),
    ("client_id_space_ok", CLIENT_ID, "my client", True),
    ("client_id_tab", CLIENT_ID, "a\tb", False),
    ("client_id_non_ascii", CLIENT_ID, "café", False),
    ("strings", STRINGS, ["a", "b"], True),
    ("strings_empty", STRINGS, [], False),
    ("strings_not_list", STRINGS, "a", False),
    ("strings_blank_item", STRINGS, ["a", ""], False),
    ("strings_too_many", STRINGS, ["a"] * 101, False),
    ("strings_nested", STRINGS, [["a"]], False),
    ("aud_string", AUDIENCE, "bank", True),
    ("aud_empty_list", AUDIENCE, [], True),
    ("aud_numbers", AUDIENCE, [1], False),
    ("scope_empty_string", TOKEN_SCOPE, "", True),
    ("scope_list_for_token", TOKEN_SCOPE, ["accounts"], False),
    ("any_value_string", ANY_VALUE, "x", True),
    ("any_value_object", ANY_VALUE, {"a": 1}, True),
    ("any_value_true", ANY_VALUE, True, False),
    ("any_value_zero", ANY_VALUE, 0, False),
    ("any_value_empty_object", ANY_VALUE, {}, False),
    ("date_int", NUMERIC_DATE, 1_700_000_000, True),
    ("date_float", NUMERIC_DATE, 1_700_000_000.5, True),
    ("date_zero", NUMERIC_DATE, 0, True),
    ("date_year_9999", NUMERIC_DATE, MAX_NUMERIC_DATE, True),
    ("date_after_9999", NUMERIC_DATE, MAX_NUMERIC_DATE + 1, False),
    ("date_negative", NUMERIC_DATE, -1, False),
    ("date_huge", NUMERIC_DATE, HUGE, False),
    ("date_huge_negative", NUMERIC_DATE, -HUGE, False),
    ("date_bool", NUMERIC_DATE, True, False),
    ("date_nan", NUMERIC_DATE, float("nan"), False),
    ("date_inf", NUMERIC_DATE, float("inf"), False),
    ("date_string", NUMERIC_DATE, "1700000000", False),
    ("date_list", NUMERIC_DATE, [1], False),
    ("number_safe_bound", ClaimType("n", shape="number"), MAX_SAFE_INTEGER, True),
    ("number_beyond_safe", ClaimType("n", shape="number"), MAX_SAFE_INTEGER + 1, False),
    ("pattern_and_test", ClaimType("p", pattern=re.compile("[a-z]+"), test=lambda v: v != "no"), "no", False),
]


@pytest.mark.parametrize(("kind", "value", "ok"), [a[1:] for a in ACCEPTS], ids=[a[0] for a in ACCEPTS])
def test_accepts(kind: ClaimType, value: Any, ok: bool) -> None:
    """Each value is judged by type and bounds alone."""
    assert kind.accepts(value) is ok


@pytest.mark.parametrize("value", WRONG_FOR_STRINGS, ids=repr)
@pytest.mark.parametrize("kind", [TEXT, NAME, IDENTIFIER, CLIENT_ID, STRINGS], ids=lambda k: k.what[:20])
def test_string_kinds_refuse_every_other_type(kind: ClaimType, value: Any) -> None:
    """Null, booleans, numbers, objects and mixed arrays are never a string claim."""
    assert not kind.accepts(value)


def test_read_claim_absent_missing_and_bad() -> None:
    """Absent: None (or missing_claim when required); null or empty and required: missing; wrong: bad_claim."""
    assert read_claim({}, "org_name", NAME) is None
    assert read_claim({"org_name": "Org"}, "org_name", NAME, required=True) == "Org"
    for claims in ({}, {"org_name": None}, {"org_name": ""}, {"org_name": []}):
        with pytest.raises(JoseError) as info:
            read_claim(claims, "org_name", NAME, required=True)
        assert info.value.reason == "missing_claim"
    for value in (True, 0, None, "x" * 300):
        with pytest.raises(JoseError) as info:
            read_claim({"org_name": value}, "org_name", NAME)
        assert info.value.reason == "bad_claim"
        assert info.value.description == "claim 'org_name' must be a non-empty string of at most 255 characters"


RULES = ClaimRules.build(leeway_seconds=30, max_lifetime_seconds=600, require=("exp", "iat"))
BAD_DATES: list[Any] = [HUGE, -HUGE, int("9" * 4000), -1, MAX_NUMERIC_DATE + 1, 1e300, -1e300, True, False,
                        float("nan"), float("inf"), "1700000000", [NOW], {"t": NOW}, None]


@pytest.mark.parametrize("value", BAD_DATES, ids=lambda v: repr(v)[:24])
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_date_claims_of_every_wrong_shape_are_bad_claims(claim: str, value: Any) -> None:
    """A 400-digit integer, a negative date, a float beyond year 9999, a bool or NaN: bad_claim, no arithmetic."""
    claims: dict[str, Any] = {"iat": NOW, "exp": NOW + 60, claim: value}
    with pytest.raises(JoseError) as info:
        validate_claims(claims, RULES, NOW)
    assert info.value.reason == "bad_claim"
    assert info.value.description.startswith(f"claim '{claim}' must be a NumericDate")


@pytest.mark.parametrize("claim", ["iss", "sub", "jti"])
@pytest.mark.parametrize("value", [True, 0, HUGE, "", " ", "j" * (MAX_CLAIM_LENGTH + 1), ["x"], {"a": 1}])
def test_string_registered_claims_are_typed_and_bounded(claim: str, value: Any) -> None:
    """iss, sub and jti are bounded non-blank strings."""
    with pytest.raises(JoseError) as info:
        validate_claims({"exp": NOW + 60, "iat": NOW, claim: value}, RULES, NOW)
    assert info.value.reason == "bad_claim"


def test_jti_is_bounded_to_255_characters() -> None:
    """jti is a replay-cache key and an audit field: 255 characters pass, 256 do not."""
    base = {"exp": NOW + 60, "iat": NOW}
    validate_claims({**base, "jti": "j" * 255}, RULES, NOW)
    with pytest.raises(JoseError) as info:
        validate_claims({**base, "jti": "j" * 256}, RULES, NOW)
    assert info.value.reason == "bad_claim"
