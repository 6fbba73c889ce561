"""Strict base64url and strict JSON: the fast paths decide exactly as the straightforward definitions do."""

from __future__ import annotations

import base64
import itertools
import random

import pytest

from gateway.jose.encoding import DuplicateMemberError, b64url_decode, b64url_encode, json_loads_strict

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _reference(segment: str) -> bytes | None:
    """The definition: decodable, and re-encoding the bytes gives the very same text (canonical)."""
    if len(segment) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError:  # binascii.Error; non-ASCII text
        return None
    return data if b64url_encode(data) == segment else None


def _decode(segment: str) -> bytes | None:
    try:
        return b64url_decode(segment)
    except ValueError:
        return None


def test_every_short_segment_is_judged_as_the_reference_does() -> None:
    # Every string of 1 to 3 characters: the unused bits live in the last character of a 2 or 3 char group.
    for length in (1, 2, 3):
        for chars in itertools.product(_ALPHABET, repeat=length):
            segment = "".join(chars)
            assert _decode(segment) == _reference(segment), segment


# Characters no canonical segment holds: standard base64's '+' and '/', padding, whitespace, NUL, non-ASCII
# letters and digits (the reference decoder drops them silently; the decoder under test must refuse them).
_FOREIGN = "+/= \n\t\x00\u00e9\u0661\uff21"


@pytest.mark.parametrize("foreign", [0.0, 0.05])
def test_random_longer_segments_are_judged_as_the_reference_does(foreign: float) -> None:
    rng = random.Random(7)
    for _ in range(20000):
        segment = "".join(rng.choice(_FOREIGN) if rng.random() < foreign else rng.choice(_ALPHABET)
                          for _ in range(rng.randrange(4, 40)))
        assert _decode(segment) == _reference(segment), segment


@pytest.mark.parametrize("size", range(0, 9))
def test_round_trip(size: int) -> None:
    data = bytes(range(200, 200 + size))
    assert b64url_decode(b64url_encode(data)) == data


@pytest.mark.parametrize("segment", ["AB=", "A+B/", "AB C", "QUJD\n", "QQ==", "QR", "QUJ", "Q"])
def test_refused(segment: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(segment)


@pytest.mark.parametrize(
    ("text", "name"),
    [(b'{"a":1,"a":2}', "a"), (b'{"a":1,"b":2,"b":3,"a":4}', "b"), (b'{"x":{"y":1,"z":2,"y":3}}', "y"),
     (b'[{"k":1},{"k":1,"k":1}]', "k")],
)
def test_duplicate_members_are_refused_at_any_depth(text: bytes, name: str) -> None:
    with pytest.raises(DuplicateMemberError) as info:
        json_loads_strict(text)
    assert info.value.name == name


def test_distinct_members_parse() -> None:
    assert json_loads_strict(b'{"a":1,"b":{"a":2},"c":[{"a":3}]}') == {"a": 1, "b": {"a": 2}, "c": [{"a": 3}]}
