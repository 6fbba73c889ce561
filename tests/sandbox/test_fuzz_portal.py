"""Property tests: the developer portal and the id-bearing paths answer 2xx or a JSON 4xx to anything.

The real sandbox on 127.0.0.1. Bodies are raw JSON text (lone surrogates, huge integers, 1e400, NaN, deep
nesting, repeated members) under assorted content types; ids in paths are percent-escapes of anything,
including invalid UTF-8, or raw bytes on the request line.
"""

from __future__ import annotations

from typing import Any, Final

from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.sandbox.conftest import REGISTER, Bank, tpp_key
from tests.sandbox.fuzzing import (
    FUZZ,
    HOSTILE,
    Deep,
    assert_error_body,
    hostile_jwks,
    raw_http,
    stored_registrations,
    strict_json,
    to_json,
)

PORTAL_ERRORS: Final = frozenset({"invalid_request"})
BODIES: Final = st.one_of(
    HOSTILE.map(to_json),
    st.fixed_dictionaries({"name": HOSTILE}).map(to_json),
    st.dictionaries(st.sampled_from(["software_id", "org_id", "software_roles", "org_name", "jti", "exp",
                                     "software_client_name", "keys"]), HOSTILE, max_size=3).map(to_json),
    st.sampled_from(["", "{}", "[]", "null", "{", '{"name": "x"} trailing', '{"a": 1, "a": 2}']),
    hostile_jwks(tpp_key("portal").public()),
)
CONTENT_TYPES: Final = st.sampled_from(["application/json", "application/json", "application/json; charset=utf-8",
                                        "text/plain", "application/x-www-form-urlencoded", None])


async def post(bank: Bank, path: str, body: bytes, content_type: str | None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"} | ({"Content-Type": content_type} if content_type else {})
    async with bank.http.post(bank.sandbox_url + path, data=body, headers=headers,
                              skip_auto_headers=("Content-Type",)) as r:
        raw = await r.read()
        assert r.status < 500, (path, r.status, raw[:300])
        assert r.content_type == "application/json", (path, r.status, raw[:300])
        event(f"{path} {r.status}")
        return r.status, strict_json(raw)


@settings(FUZZ, max_examples=300)
@given(path=st.sampled_from(["/sandbox/apps", "/sandbox/ssa", "/sandbox/tpp-jwks"]), body=BODIES,
       content_type=CONTENT_TYPES)
@example(path="/sandbox/ssa", body=to_json(Deep(5000)), content_type="application/json")  # RecursionError: 500
@example(path="/sandbox/ssa", body='{"org_name": NaN, "exp": 1e400}', content_type="application/json")  # signed
async def test_fuzzed_portal_posts_are_201_or_400(bank: Bank, path: str, body: str, content_type: str | None) -> None:
    before = stored_registrations(bank)
    status, answer = await post(bank, path, body.encode("utf-8", "surrogatepass"), content_type)
    after = stored_registrations(bank)
    if status != 201:
        assert_error_body(status, answer, PORTAL_ERRORS, path)
        assert status == 400 and after == before
        return
    if path == "/sandbox/apps":
        assert set(after) - set(before) == {answer["client_id"]} and answer["client_secret"]
    elif path == "/sandbox/ssa":
        header, payload, _ = answer["software_statement"].split(".")
        claims = strict_json(URL_SAFE(payload))  # what was signed is JSON, not Python's NaN/Infinity
        assert claims["iss"] == "OpenBanking Ltd" and claims["software_id"] and strict_json(URL_SAFE(header))
    else:
        async with bank.http.get(answer["jwks_uri"]) as r:
            assert r.status == 200 and strict_json(await r.read())["keys"]


def URL_SAFE(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


SEGMENTS: Final = st.one_of(
    st.text(min_size=1, max_size=40).map(lambda t: "".join(f"%{b:02X}" for b in t.encode())),
    st.binary(min_size=1, max_size=40).map(lambda b: "".join(f"%{x:02X}" for x in b)),
    st.sampled_from(["%ED%A0%80", "%FF", "%C0%AF", "a" * 300, "%00", "%2F", "..", "%25zz"]),
)


async def fresh_token(bank: Bank) -> str:
    """A token that has not been revoked yet (an unknown ClientId revokes the token that asked)."""
    return await bank.app_token()


@settings(FUZZ, max_examples=60)
@given(segment=SEGMENTS, method=st.sampled_from(["GET", "PUT", "DELETE"]))
async def test_fuzzed_client_ids_in_paths_are_json_4xx(bank: Bank, segment: str, method: str) -> None:
    token = await fresh_token(bank)
    url = URL(bank.sandbox_url + f"{REGISTER}/{segment}", encoded=True)
    async with bank.http.request(method, url, headers={"Authorization": f"Bearer {token}"},
                                 data=b"x" if method == "PUT" else None) as r:
        raw = await r.read()
        event(f"{method} {r.status}")
        assert r.status in (401, 404, 405), (r.status, raw[:300])
        body = strict_json(raw)
        assert body["error"] in ("invalid_token", "not_found", "method_not_allowed"), body


@settings(FUZZ, max_examples=150)
@given(segment=SEGMENTS)
async def test_fuzzed_hosted_jwks_ids_are_json_404(bank: Bank, segment: str) -> None:
    async with bank.http.get(URL(bank.sandbox_url + f"/sandbox/tpp-jwks/{segment}", encoded=True)) as r:
        raw = await r.read()
        assert r.status == 404, (r.status, raw[:300])
        assert strict_json(raw)["error"] == "not_found"


@settings(FUZZ, max_examples=60)
@given(raw_segment=st.binary(min_size=1, max_size=40).filter(lambda b: not set(b) & set(b" \r\n?#")),
       path=st.sampled_from(["/sandbox/tpp-jwks/", f"{REGISTER}/"]))
async def test_raw_path_bytes_are_json_4xx(bank: Bank, raw_segment: bytes, path: str) -> None:
    """Bytes on the request line that no client library sends (invalid UTF-8, controls)."""
    token = await fresh_token(bank) if path != "/sandbox/tpp-jwks/" else "none"
    head = b"GET " + path.encode() + raw_segment + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " \
        + token.encode() + b"\r\n"
    status, headers, payload = await raw_http(bank.sandbox_url, head)
    assert status < 500, (status, payload[:300])
    if status == 400 and not headers.get("content-type", "").startswith("application/json"):
        event("refused by the HTTP parser")  # aiohttp's own 400, before any handler runs
        return
    event(f"{path} {status}")
    assert status in (401, 404), (status, payload[:300])
    assert strict_json(payload)["error"] in ("invalid_token", "not_found")
