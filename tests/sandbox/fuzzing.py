"""Shared pieces of the sandbox's property tests: hostile JSON values, raw JSON text, raw signing, assertions.

Values are Python objects written as raw JSON text by `to_json`, so a test can send what a well-behaved encoder
never writes: lone surrogates (as `\\ud800` escapes), integers of any size, `1e400` (infinity once parsed),
`NaN`, nesting hundreds of levels deep, and a member repeated.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from jwcrypto import jwk

from tests.sandbox.conftest import Bank

FUZZ: Final = settings(
    max_examples=100,
    deadline=None,
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""One server per test function serves every example (hence the function-scoped fixture)."""

RFC7591_ERRORS: Final = frozenset({
    "invalid_redirect_uri", "invalid_client_metadata", "invalid_software_statement",
    "unapproved_software_statement",
})
RFC6749_ERRORS: Final = frozenset({
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
    "invalid_scope",
})


@dataclass(frozen=True)
class Deep:
    """An array nested `depth` levels deep around one string."""

    depth: int


@dataclass(frozen=True)
class Repeated:
    """An object whose only member appears twice (RFC 8259 §4: names SHOULD be unique)."""

    name: str
    first: Any
    second: Any


def to_json(value: Any) -> str:
    """Raw JSON text for `value` (lone surrogates escaped; non-finite floats as 1e400 / -1e400 / NaN)."""
    if isinstance(value, Deep):
        return "[" * value.depth + '"x"' + "]" * value.depth
    if isinstance(value, Repeated):
        return "{" + f"{to_json(value.name)}:{to_json(value.first)},{to_json(value.name)}:{to_json(value.second)}" + "}"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("1e400" if value > 0 else "-1e400")
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: a lone surrogate becomes a \udXXX escape


LONE_SURROGATES: Final = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d", "x\ude00"])
SURROGATE_TEXT: Final = st.text(
    st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), min_size=1, max_size=20
)
HUGE_INTS: Final = st.one_of(
    st.sampled_from([2**53, -(2**53), 2**63, 2**64, -(2**64) - 1, 10**300, -(10**300)]),
    st.integers(min_value=2**53, max_value=2**200),
    st.integers(max_value=-(2**53), min_value=-(2**200)),
)
LONG_STRINGS: Final = st.integers(2049, 30_000).map(lambda n: "y" * n)
SCALARS: Final = st.one_of(
    st.none(), st.booleans(), st.integers(), HUGE_INTS, st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), LONE_SURROGATES, SURROGATE_TEXT, LONG_STRINGS,
    st.integers(33, 400).map(Deep), st.sampled_from([Deep(1200), Deep(5000)]),  # past the parser's recursion limit
)
HOSTILE: Final = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=10), LONE_SURROGATES), inner, max_size=3),
        st.builds(Repeated, st.sampled_from(["a", "software_id"]), inner, inner),
    ),
    max_leaves=6,
)
"""Any JSON value, biased towards what the sandbox must refuse without a 500."""


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).rstrip(b"=").decode("ascii")


def sign_raw(key: jwk.JWK, kid: str, payload: str, *, header: str | None = None) -> str:
    """A PS256 compact JWS over exactly this payload (and header) text, signed with `cryptography` directly.

    Not the sandbox's signer, and not jwcrypto's JWS either: it would parse, and refuse, the hostile header.
    """
    protected = header if header is not None else json.dumps({"alg": "PS256", "kid": kid, "typ": "JWT"})
    signing_input = f"{_b64url(protected)}.{_b64url(payload)}"
    signature = key.get_op_key("sign").sign(
        signing_input.encode("ascii"), padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode('ascii')}"


def directory_key(bank: Bank) -> tuple[jwk.JWK, str]:
    """The sandbox directory's real signing key (read from its state directory) and its kid (RFC 7638)."""
    if "directory_key" not in bank.extra:
        key = jwk.JWK.from_pem((_state_dir(bank) / "directory-signing-key.pem").read_bytes())
        bank.extra["directory_key"] = (key, key.thumbprint())
    found: tuple[jwk.JWK, str] = bank.extra["directory_key"]
    return found


def _state_dir(bank: Bank) -> Path:
    return bank.settings.resolve_path(bank.settings.sandbox.state_dir)


def stored_registrations(bank: Bank) -> dict[str, str | None]:
    """client_id → stored registration text of every client in the sandbox's SQLite file (read-only)."""
    db = sqlite3.connect(f"file:{_state_dir(bank) / 'sandbox.db'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT client_id, registration FROM clients").fetchall())
    finally:
        db.close()


def strict_json(raw: bytes) -> Any:
    """Parse a response body as RFC 8259 JSON (no NaN/Infinity), failing the test otherwise."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a response body is not JSON")

    return json.loads(raw.decode("utf-8"), parse_constant=refuse)


def assert_error_body(status: int, body: Any, errors: frozenset[str], where: str) -> None:
    """A 4xx with an `{"error", "error_description"}` body whose error is one of `errors`."""
    assert 400 <= status < 500, (where, status, body)
    assert isinstance(body, dict), (where, status, body)
    assert body.get("error") in errors, (where, status, body)
    assert isinstance(body.get("error_description"), str), (where, status, body)


async def raw_http(base_url: str, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send one hand-written HTTP/1.1 request (request line and headers as given, bytes and all) to a loopback
    server; returns (status, headers, body). For what no HTTP client library will send."""
    url = urlsplit(base_url)
    assert url.hostname == "127.0.0.1" and url.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", url.port)
    try:
        writer.write(head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, payload


def hostile_jwks(public: dict[str, Any]) -> st.SearchStrategy[str]:
    """JWKS documents as raw JSON: a hostile `keys`, or the real public key with hostile or foreign members."""
    extras = st.one_of(
        st.dictionaries(st.sampled_from(["kid", "use", "alg", "x5c", "n", "e", "key_ops", "crv", "x", "d"]), HOSTILE,
                        max_size=2),
        st.dictionaries(st.sampled_from(["kid", "x-extra"]), HOSTILE, max_size=2),
    )
    return st.one_of(
        HOSTILE.map(lambda keys: to_json({"keys": keys})),
        extras.map(lambda extra: to_json({"keys": [{**public, **extra}]})),
    )
