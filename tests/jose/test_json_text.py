"""The strict JSON parser's bounds: nesting depth, lone surrogates and numbers beyond a double are refused as
ValueError (never RecursionError or a value later code cannot encode), and the same through parse_compact; its
compact-text shortcut answers every text as the reference parser does."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.jose import JoseError, encoding, parse_compact
from gateway.jose.encoding import MAX_JSON_DEPTH, JsonTextError, b64url_encode, json_loads_strict
from gateway.jose.errors import quoted, quoted_url
from gateway.jsonutil import dumps

HEADER = b'{"alg":"ES256","kid":"ec-1"}'


def _nested(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


def _compact(header: bytes, payload: bytes) -> str:
    return f"{b64url_encode(header)}.{b64url_encode(payload)}.{b64url_encode(b'sig')}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 100_000])
def test_deep_nesting_is_refused(depth: int) -> None:
    """Arrays or objects nested beyond the bound are refused before the recursive decoder runs."""
    with pytest.raises(JsonTextError, match="nested deeper"):
        json_loads_strict(_nested(depth))
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    with pytest.raises(JsonTextError, match="nested deeper"):
        json_loads_strict(objects)


def test_nesting_at_the_bound_parses() -> None:
    """Exactly MAX_JSON_DEPTH levels is accepted, and brackets inside strings do not count."""
    assert json_loads_strict(_nested(MAX_JSON_DEPTH, b"7")) is not None
    text = b'{"a":"' + b"[{" * 500 + b'\\"[[["}'
    assert json_loads_strict(text) == {"a": "[{" * 500 + '"[[['}
    many_flat = b"[" + b",".join([b"[]"] * 500) + b"]"
    assert json_loads_strict(many_flat) == [[]] * 500


@pytest.mark.parametrize("text", [b'{"scope":"\\ud800"}', b'{"a":["x","\\udfff"]}', b'{"\\uDBFF":1}',
                                  b'{"a":{"b":"ok \\ud83d"}}', b'"\\ude00\\ud83d"'])
def test_lone_surrogates_are_refused(text: bytes) -> None:
    """A \\u escape of an unpaired UTF-16 surrogate, in a value or a member name at any depth, is not text."""
    with pytest.raises(JsonTextError, match="surrogate"):
        json_loads_strict(text)


def test_paired_surrogates_and_escaped_backslashes_parse() -> None:
    """A surrogate pair is one code point; an escaped backslash before 'ud800' is no escape at all."""
    assert json_loads_strict(b'{"a":"\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert json_loads_strict(b'{"a":"\\\\ud800"}') == {"a": "\\ud800"}


@pytest.mark.parametrize("text", [b'{"exp":1e400}', b'{"exp":-1e999}', b"[1E+309]"])
def test_numbers_beyond_a_double_are_refused(text: bytes) -> None:
    """A float literal that overflows to infinity is refused as NaN / Infinity literals already are."""
    with pytest.raises(JsonTextError):
        json_loads_strict(text)


def test_big_integers_parse_exactly() -> None:
    """Integers stay exact at parse time; their range is judged where a claim is read (gateway.jose.claims)."""
    assert json_loads_strict(b'{"iat":' + b"9" * 400 + b"}") == {"iat": int("9" * 400)}


@pytest.mark.parametrize(("header", "payload", "reason"), [
    (HEADER, _nested(400), "payload_not_json"),
    (HEADER, b'{"a":' + _nested(100_000) + b"}", "payload_not_json"),
    (HEADER, b'{"scope":"\\ud800"}', "payload_not_json"),
    (HEADER, b'{"exp":1e400}', "payload_not_json"),
    (b'{"alg":"ES256","kid":"ec-1","x":' + _nested(300) + b"}", b"{}", "malformed"),
    (b'{"alg":"ES256","kid":"\\ud800"}', b"{}", "malformed"),
], ids=["payload_deep", "payload_very_deep", "payload_surrogate", "payload_inf", "header_deep",
        "header_surrogate"])
def test_parse_compact_refuses_with_a_reason(header: bytes, payload: bytes, reason: str) -> None:
    """The bounds surface as the usual JoseError reasons, with a description that names the cause."""
    with pytest.raises(JoseError) as info:
        parse_compact(_compact(header, payload), max_bytes=1_000_000)
    assert info.value.reason == reason
    assert "JSON text" in info.value.description


def test_quoted_is_bounded_and_never_raises() -> None:
    """Descriptions and log fields quote client values cut short, even values repr() cannot render."""
    assert len(quoted("x" * 100_000)) <= 64
    assert quoted("\ud800") == "'\\ud800'"
    assert quoted(10**5000) == "<int>"
    assert quoted("kid-1") == "'kid-1'"


def test_quoted_url_hides_credentials() -> None:
    """A password in a key-set URL is never shown."""
    shown = quoted_url("https://user:s3cret@keys.example/jwks")
    assert "s3cret" not in shown and "user" not in shown and "keys.example/jwks" in shown
    assert len(quoted_url("https://keys.example/" + "a" * 5000)) <= 128


def test_the_body_and_log_encoder_never_raises_on_what_a_client_can_send() -> None:
    """gateway.jsonutil.dumps writes NaN / infinities as null even when a huge integer forces its stdlib path."""
    encoded = dumps({"exp": float("inf"), "nbf": float("nan"), "iat": 10**30, "s": "\ud800"})
    assert json.loads(encoded) == {"exp": None, "nbf": None, "iat": 10**30, "s": "\ud800"}


# The shortcut of json_loads_strict (gateway.jose.encoding._compact_value) against its reference: on every text,
# both refuse (with the same error) or both return the same value, type for type (1 is not 1.0, -0.0 is not 0.0).

_SCALARS = (st.none() | st.booleans()
            | st.integers(min_value=-(2**70), max_value=2**70)  # past 64 bits too: orjson reads those as floats
            | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([-0.0, 1e16, 1e-7, 2.5e300])
            | st.text(st.characters(codec="utf-8"), max_size=12)
            | st.sampled_from(["https://tpp.example/cb", "a:b", '"', "\\", "\x00\x1f\x7f", "\u2028", "\U0001f600"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=4) | st.sampled_from(["iss", "a:b", "[", "{"]), inner,
                                         max_size=4), max_leaves=12)


def _serialisations(value: Any) -> list[bytes]:
    texts = [json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"),
             json.dumps(value).encode(), json.dumps(value, separators=(",", ":")).replace("/", "\\/").encode()]
    try:
        texts.append(orjson.dumps(value))
    except orjson.JSONEncodeError:  # an integer past 64 bits
        pass
    return texts


def _with_duplicate(text: bytes) -> bytes | None:
    """`text` with its first object's first member written twice, with another value the second time."""
    start = text.find(b'{"')
    end = text.find(b'":', start)
    if start < 0 or end < 0:
        return None
    name = text[start + 1:end + 1]
    return text[:start + 1] + name + b":0," + text[start + 1:]


def _typed(value: Any) -> Any:
    """`value` with each scalar's type beside it, so that comparing two of them compares types too."""
    if isinstance(value, dict):
        return ("dict", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    if isinstance(value, float):
        return ("float", value, math.copysign(1.0, value))
    return (type(value).__name__, value)


def _outcome(parse: Any, text: bytes) -> tuple[Any, ...]:
    try:
        return ("value", _typed(parse(text)))
    except ValueError as exc:
        return ("refused", type(exc), str(exc))


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(value=_VALUES, cut=st.integers(min_value=0, max_value=200), byte=st.integers(min_value=0, max_value=255))
def test_the_compact_shortcut_reads_every_text_as_the_reference_does(value: Any, cut: int, byte: int) -> None:
    """Serialisations of generated values (compact, spaced, ASCII-escaped, slashes escaped, orjson's own), the same
    with a repeated member, and with one byte replaced: json_loads_strict answers as its reference parser."""
    texts = _serialisations(value)
    texts += [t for t in map(_with_duplicate, texts) if t is not None]
    texts += [t[:cut % len(t)] + bytes([byte]) + t[cut % len(t) + 1:] for t in texts[:2]]
    for text in texts:
        assert _outcome(json_loads_strict, text) == _outcome(encoding._json_loads_reference, text), text


@pytest.mark.parametrize("text", [b'{"a":1}', b'{"iss":"x","aud":["a","b"],"exp":1796609265,"f":0.5,"n":null}',
                                  b'[true,false,-0.0,18446744073709551615]', '"\u00e9t\u00e9 \U0001f600"'.encode(),
                                  br'{"a":"\\ \" \n"}'])
def test_compact_text_takes_the_shortcut(text: bytes) -> None:
    """orjson's compact form (how most JOSE libraries write) is read without the reference parser."""
    assert encoding._compact_value(text) is not encoding._NOT_COMPACT


@pytest.mark.parametrize("text", [b'{"a":1,"a":1}', b'{"a": 1}', b'[18446744073709551616]', b'{"u":"https:\\/\\/x"}',
                                  b'["\\ud800"]', b"[NaN]", b"[1e400]", b"[1.0E2]", b" [1]", b"[1]\n"])
def test_other_text_goes_to_the_reference(text: bytes) -> None:
    """Anything but a value's own compact form (a repeated member, spaces, escapes orjson would not write, integers
    past 64 bits, what orjson refuses) is judged by the reference parser alone."""
    assert encoding._compact_value(text) is encoding._NOT_COMPACT
