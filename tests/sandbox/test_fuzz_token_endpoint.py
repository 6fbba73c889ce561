"""Property tests: whatever a client sends to `POST /oauth2/token`, the answer is 200 or an RFC 6749 §5.2 error.

The real sandbox on 127.0.0.1, called on its own port. Forms are written by hand: repeated parameters, odd and
invalid percent-escapes (including encoded lone surrogates and invalid UTF-8), huge values, wrong content types,
malformed Basic credentials, and client assertions signed with a real TPP key over hostile claims and headers.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any, Final
from urllib.parse import quote_plus

import pytest
from aiohttp import web
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from tests.conftest import StartServer
from tests.sandbox.conftest import REDIRECT, TOKEN, Bank, BankFactory, TppKey, tpp_key
from tests.sandbox.fuzzing import (
    FUZZ,
    HOSTILE,
    LONE_SURROGATES,
    RFC6749_ERRORS,
    SURROGATE_TEXT,
    Deep,
    assert_error_body,
    hostile_jwks,
    raw_http,
    sign_raw,
    strict_json,
    to_json,
)

FORM: Final = "application/x-www-form-urlencoded"
JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
NAMES: Final = ("grant_type", "client_id", "client_secret", "scope", "client_assertion", "client_assertion_type")


def encoded(text: str, how: str) -> bytes:
    """One form component: percent-encoded (lone surrogates as their would-be UTF-8), raw, or broken."""
    if how == "quoted":
        return quote_plus(text, encoding="utf-8", errors="surrogatepass").encode("ascii")
    if how == "raw":
        return text.encode("utf-8", "surrogatepass")
    return quote_plus(text, encoding="utf-8", errors="surrogatepass").encode("ascii") + b"%" + b"zZe"[: len(text) % 3]


async def token_call(bank: Bank, body: bytes, content_type: str | None,
                     authorization: str | None) -> tuple[int, Any, dict[str, str]]:
    """POST the sandbox's token endpoint; asserts no 5xx and a strict JSON body."""
    headers = {"Accept": "application/json"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if authorization is not None:
        headers["Authorization"] = authorization
    async with bank.http.post(bank.sandbox_url + TOKEN, data=body, headers=headers,
                              skip_auto_headers=("Content-Type",)) as r:
        raw = await r.read()
        assert r.status < 500, (r.status, raw[:300])
        assert r.content_type == "application/json", (r.status, r.content_type, raw[:300])
        return r.status, strict_json(raw), dict(r.headers)


def assert_token_answer(status: int, body: Any, headers: dict[str, str]) -> None:
    """200 with a Bearer token, or an RFC 6749 §5.2 error (401 with a Basic challenge)."""
    event(f"{status} {body.get('error', '')} {body.get('error_description', '')[:50]}")
    if status == 200:
        assert body["token_type"] == "Bearer" and body["access_token"] and isinstance(body["scope"], str)
        assert headers["Cache-Control"] == "no-store"
        return
    assert_error_body(status, body, RFC6749_ERRORS, "token")
    assert status in (400, 401), body
    if status == 401:
        assert headers["WWW-Authenticate"] == 'Basic realm="dcr-sandbox"'


async def app_credentials(bank: Bank) -> tuple[str, str]:
    """A developer app, made once per test."""
    if "app" not in bank.extra:
        bank.extra["app"] = await bank.create_app()
    found: tuple[str, str] = bank.extra["app"]
    return found


VALID_VALUES: Final = st.sampled_from([
    "client_credentials", "authorization_code", "", "accounts", "openid accounts", " accounts", "accounts  payments",
    "payments payments", JWT_BEARER, "a.b.c", "payments", "fundsconfirmations", "openid", "openid payments",
])
VALUES: Final = st.one_of(
    VALID_VALUES, VALID_VALUES, VALID_VALUES, st.text(max_size=40), SURROGATE_TEXT, LONE_SURROGATES,
    st.integers(1000, 70_000).map(lambda n: "v" * n),
)
PAIRS: Final = st.lists(
    st.tuples(st.one_of(*[st.sampled_from(NAMES)] * 3, st.text(max_size=8), LONE_SURROGATES), VALUES,
              st.sampled_from([*["quoted"] * 8, "raw", "broken"])),
    max_size=4,
)
CONTENT_TYPES: Final = st.sampled_from([
    *[FORM] * 8, f"{FORM}; charset=utf-8", f"{FORM}; charset=iso-8859-1", "application/json", "text/plain",
    "multipart/form-data; boundary=x", "application/jose", None,
])
PRINTABLE: Final = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


def authorizations(client_id: str, secret: str) -> st.SearchStrategy[str | None]:
    def basic(raw: bytes) -> str:
        return "Basic " + base64.b64encode(raw).decode("ascii")

    return st.one_of(
        st.none(),
        st.just(basic(f"{client_id}:{secret}".encode())),
        st.just(basic(f"{client_id}:wrong".encode())),
        st.binary(max_size=40).map(basic),
        st.sampled_from(["Basic %zz:%ff", "Basic", "Basic ====", "Bearer abc", "basic " + "A" * 5000]),
        st.sampled_from([basic(b"%ED%A0%80:x"), basic(b"\xed\xa0\x80:x"), basic(b"a:%"), basic(b":")]),
        PRINTABLE,
        PRINTABLE.map(lambda t: "Basic " + t),
    )


@settings(FUZZ, max_examples=300)
@given(data=st.data(), pairs=PAIRS, content_type=CONTENT_TYPES, grant=st.booleans(),
       post_credentials=st.booleans())
async def test_fuzzed_token_requests_get_an_rfc6749_answer(
    bank: Bank, data: st.DataObject, pairs: list[tuple[str, str, str]], content_type: str | None, grant: bool,
    post_credentials: bool,
) -> None:
    client_id, secret = await app_credentials(bank)
    authorization = data.draw(authorizations(client_id, secret), label="authorization")
    if post_credentials:  # the right credentials in the body, among whatever else
        pairs = [("client_id", client_id, "quoted"), ("client_secret", secret, "quoted"), *pairs]
    if grant:
        pairs = [("grant_type", "client_credentials", "quoted"), *pairs]
    body = b"&".join(encoded(name, how) + b"=" + encoded(value, how) for name, value, how in pairs)
    assert_token_answer(*await token_call(bank, body, content_type, authorization))


@settings(FUZZ, max_examples=60)
@given(head=st.one_of(
    st.binary(min_size=1, max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b)
    .map(lambda b: b"Authorization: Basic " + b),
    st.binary(min_size=1, max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b)
    .map(lambda b: b"Authorization: " + b),
    st.binary(max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b)
    .map(lambda b: b"Content-Type: " + b),
))
async def test_raw_header_bytes_get_an_rfc6749_answer(bank: Bank, head: bytes) -> None:
    """Header bytes no client library sends (invalid UTF-8, controls): still no 5xx, still JSON."""
    request = b"POST " + TOKEN.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if not head.startswith(b"Content-Type"):
        request += f"Content-Type: {FORM}\r\n".encode()
    status, headers, payload = await raw_http(bank.sandbox_url, request + head, b"grant_type=client_credentials")
    assert status < 500, (status, payload[:300])
    if status == 400 and not headers.get("content-type", "").startswith("application/json"):
        event("refused by the HTTP parser")  # aiohttp's own 400, before any handler runs
        return
    assert headers["content-type"].startswith("application/json"), (status, headers, payload[:300])
    assert_token_answer(status, strict_json(payload), {k.title(): v for k, v in headers.items()} | {
        "WWW-Authenticate": headers.get("www-authenticate", ""), "Cache-Control": headers.get("cache-control", "")})


# private_key_jwt ------------------------------------------------------------------------------------------

ASSERTION_CLAIMS: Final = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti")


def assertion(bank: Bank, tpp: TppKey, client_id: str, overrides: dict[str, Any], header: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": bank.gateway_url + TOKEN, "iat": now,
                              "exp": now + 120, "jti": str(uuid.uuid4())}
    claims.update(overrides)
    raw_header = None if header is None else to_json({"alg": "PS256", "typ": "JWT", **header})
    return sign_raw(tpp.key, tpp.kid, to_json(claims), header=raw_header)


@pytest.fixture
async def jwt_bank(bank_factory: BankFactory, start_server: StartServer) -> Bank:
    """A sandbox with a private_key_jwt client whose JWKS the test serves as raw bytes (no JWKS cache)."""
    bank = await bank_factory(tpp_jwks_cache_seconds=0)
    served: dict[str, bytes] = {}

    async def jwks(_: web.Request) -> web.Response:
        return web.Response(body=served["doc"], content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = await start_server(app)
    tpp = tpp_key("fuzz-jwt")
    served["doc"] = to_json({"keys": [tpp.public()]}).encode()
    ssa = await bank.mint_ssa(software_jwks_endpoint=str(server.make_url("/jwks")), software_redirect_uris=[REDIRECT])
    claims = bank.registration_claims(ssa, token_endpoint_auth_method="private_key_jwt",
                                      token_endpoint_auth_signing_alg="PS256")
    status, client, _ = await bank.register(await bank.app_token(), tpp.sign(claims))
    assert status == 201, client
    bank.extra.update(served=served, tpp=tpp, client_id=client["client_id"])
    return bank


async def assertion_answer(bank: Bank, overrides: dict[str, Any], header: dict[str, Any] | None,
                           jwks: str | None) -> tuple[int, Any]:
    """Serve `jwks` (the real one when None) as the client's JWKS and ask for a token with an assertion."""
    tpp: TppKey = bank.extra["tpp"]
    bank.extra["served"]["doc"] = (
        to_json({"keys": [tpp.public()]}) if jwks is None else jwks
    ).encode("utf-8", "surrogatepass")
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(bank, tpp, bank.extra["client_id"], overrides, header)}
    body = "&".join(f"{k}={quote_plus(v)}" for k, v in form.items()).encode("ascii")
    status, answer, headers = await token_call(bank, body, FORM, None)
    assert_token_answer(status, answer, headers)
    return status, answer


@settings(FUZZ, max_examples=150)
@given(
    overrides=st.one_of(
        st.lists(st.sampled_from(ASSERTION_CLAIMS), max_size=3, unique=True).flatmap(
            lambda names: st.fixed_dictionaries({n: HOSTILE for n in names})),
        HOSTILE.map(lambda client_id: {"iss": client_id, "sub": client_id}),  # as far as the client lookup
    ),
    header=st.one_of(st.none(), st.fixed_dictionaries({"kid": HOSTILE}),
                     st.fixed_dictionaries({"kid": st.just("fuzz-jwt-ps256"), "x": HOSTILE})),
)
@example(overrides={"iss": Deep(5000), "sub": Deep(5000)}, header=None)  # RecursionError: 500
@example(overrides={"iss": "\ud800", "sub": "\ud800"}, header=None)  # 500 from SQLite
async def test_fuzzed_client_assertions_get_an_rfc6749_answer(
    jwt_bank: Bank, overrides: dict[str, Any], header: dict[str, Any] | None
) -> None:
    status, answer = await assertion_answer(jwt_bank, overrides, header, None)
    if not overrides and header is None:
        assert status == 200, answer  # the fuzzing keeps the valid case reachable


@settings(FUZZ, max_examples=100)
@given(jwks=st.one_of(hostile_jwks(tpp_key("fuzz-jwt").public()), HOSTILE.map(to_json)))
@example(jwks=to_json({"keys": [{**tpp_key("fuzz-jwt").public(), "crv": None}]}))  # jwcrypto's KeyError: 500
async def test_fuzzed_tpp_jwks_documents_get_an_rfc6749_answer(jwt_bank: Bank, jwks: str) -> None:
    """A valid assertion, checked against whatever the TPP's JWKS endpoint serves."""
    await assertion_answer(jwt_bank, {}, None, jwks)
