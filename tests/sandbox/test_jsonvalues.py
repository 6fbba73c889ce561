"""The sandbox's strict JSON (I-JSON, RFC 7493): what it refuses, where it says the fault is, what it keeps."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.sandbox.jsonvalues import MAX_DEPTH, MAX_SAFE_INTEGER, JsonValueError, check, loads


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "text, where",
    [
        ('{"org_name": "\\ud800"}', "$: a string holds a lone UTF-16 surrogate"),
        ('{"a": ["x", "\\udfff tail"]}', "$: a string holds a lone UTF-16 surrogate"),
        ('{"\\ud800": 1}', "$: a string holds a lone UTF-16 surrogate"),
        ('{"n": 18446744073709551616}', "$.n: integers must be at most 2^53-1"),
        (f'{{"n": {-MAX_SAFE_INTEGER - 1}}}', "$.n: integers must be at most 2^53-1"),
        ('{"f": 1e400}', "$: a number beyond the range of an IEEE 754 double"),
        ('{"f": -1e400}', "$: a number beyond the range of an IEEE 754 double"),
        (nested(MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels"),
    ],
)
def test_values_the_sandbox_refuses(text: str, where: str) -> None:
    with pytest.raises(JsonValueError) as caught:
        loads(text.encode())
    assert where in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [b"NaN", b'{"a": Infinity}', b'{"a": 1, "a": 2}', b"[" * 100_000, b'{"a": ' * 50_000, b"\xff", b"{} x"],
)
def test_invalid_json_is_a_value_error(data: bytes) -> None:
    """Not JSON at all (NaN, duplicates, parser-deep nesting, bad UTF-8, trailing data): a plain ValueError."""
    with pytest.raises(ValueError):
        loads(data)


def test_what_is_kept_unchanged() -> None:
    text = nested(MAX_DEPTH)
    assert loads(text.encode()) is not None
    value: Any = {"s": "é 中 😀", "i": [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0], "f": 1.5e308, "b": False, "z": None}
    check(value)
    assert loads(b'{"s": "\\u00e9 \\ud83d\\ude00"}') == {"s": "é 😀"}  # a surrogate pair is one character


def test_string_bound_applies_to_values_and_member_names() -> None:
    check({"a": "x" * 10}, max_string=10)
    with pytest.raises(JsonValueError, match=r"\$\.a: a string longer than 10"):
        check({"a": "x" * 11}, max_string=10)
    with pytest.raises(JsonValueError, match="a member name longer than 10"):
        check({"k" * 11: 1}, max_string=10)
