"""Property tests: the playground's API answers 2xx or a JSON 4xx to anything its page (or anyone) posts.

The real sandbox with its playground on 127.0.0.1. Bodies are raw JSON text with hostile values (lone
surrogates, huge integers, 1e400, NaN, deep nesting, repeated members); calls through `send` go to the sandbox
itself, whose own answer must not be a 5xx either.
"""

from __future__ import annotations

from typing import Any, Final

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from tests.playground.conftest import JSON_HEADERS, PlaygroundClient
from tests.sandbox.fuzzing import FUZZ, HOSTILE, assert_error_body, strict_json, to_json

PLAYGROUND_ERRORS: Final = frozenset({"invalid_request", "not_found"})


async def post_raw(pg: PlaygroundClient, path: str, body: str) -> tuple[int, Any]:
    async with pg.bank.http.post(pg.url + path, data=body.encode("utf-8", "surrogatepass"),
                                 headers=JSON_HEADERS) as r:
        raw = await r.read()
        event(f"{path.rsplit('/', 1)[-1]} {r.status}")
        assert r.status < 500, (path, r.status, raw[:300])
        assert r.content_type == "application/json", (r.status, raw[:300])
        return r.status, strict_json(raw)


@settings(FUZZ, max_examples=40)  # each 201 generates an RSA key
@given(body=st.one_of(HOSTILE.map(lambda alg: to_json({"alg": alg})), HOSTILE.map(to_json)))
async def test_fuzzed_session_requests_are_201_or_400(playground: PlaygroundClient, body: str) -> None:
    status, answer = await post_raw(playground, "/playground/api/sessions", body)
    if status != 201:
        assert_error_body(status, answer, PLAYGROUND_ERRORS, "sessions")
        assert status == 400
    else:
        assert answer["alg"] in ("PS256", "ES256") and answer["session_id"]


async def session_id(pg: PlaygroundClient) -> str:
    """One key session per test (ES256: quick to generate)."""
    if "session" not in pg.bank.extra:
        status, body, _ = await pg.api("POST", "/playground/api/sessions", {"alg": "ES256"})
        assert status == 201, body
        pg.bank.extra["session"] = body["session_id"]
    return str(pg.bank.extra["session"])


@settings(FUZZ, max_examples=200)
@given(body=st.one_of(HOSTILE.map(lambda claims: to_json({"claims": claims})),
                      st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=20), st.integers(-9, 10**9),
                                                                      HOSTILE), max_size=4)
                      .map(lambda c: to_json({"claims": c})),
                      HOSTILE.map(to_json)))
async def test_fuzzed_sign_requests_are_200_or_400(playground: PlaygroundClient, body: str) -> None:
    path = f"/playground/api/sessions/{await session_id(playground)}/sign"
    status, answer = await post_raw(playground, path, body)
    if status != 200:
        assert_error_body(status, answer, PLAYGROUND_ERRORS, "sign")
        assert status == 400
    else:
        assert answer["jws"].count(".") == 2 and isinstance(answer["claims"], dict)


HEADER_NAMES: Final = st.sampled_from(["Content-Type", "Accept", "client_id", "x-fapi-interaction-id",
                                       "Authorization", "Host", "X-Other"])
CALLS: Final = st.sampled_from([("sandbox", "POST", "/sandbox/ssa"), ("sandbox", "POST", "/sandbox/apps"),
                                ("sandbox", "POST", "/playground/api/sessions"), ("gateway", "POST", "/oauth2/token"),
                                ("gateway", "GET", "/open-banking/v3.1/register/abc")])
SEND_FIELDS: Final = st.builds(
    lambda call, headers, body, send, hostile: {
        "target": call[0], "method": call[1], "path": call[2], "headers": headers, "body": body, **send, **hostile
    },
    CALLS,
    st.one_of(st.none(), st.dictionaries(HEADER_NAMES, st.one_of(st.text(max_size=30), HOSTILE), max_size=3),
              st.just({"Content-Type": "application/json"})),
    st.one_of(st.none(), st.text(max_size=50), HOSTILE.map(to_json)),
    st.one_of(st.just({}), st.fixed_dictionaries({"send": st.one_of(st.booleans(), HOSTILE)})),
    st.one_of(st.just({}), st.just({}), st.dictionaries(st.sampled_from(["target", "method", "path", "headers", "body"]),
                                                         HOSTILE, max_size=1)),
)
"""A call the page may make, with hostile headers and body, and now and then one hostile field."""


@settings(FUZZ, max_examples=300)
@given(fields=SEND_FIELDS)
@example(fields={"target": "sandbox", "method": "POST", "path": "/sandbox/ssa",
                 "headers": {"Content-Type": "\x1f"}, "body": None})  # aiohttp refused to send it: 500
async def test_fuzzed_send_requests_are_200_or_400(playground: PlaygroundClient, fields: dict[str, Any]) -> None:
    """`send` answers with its report (the called service's answer inside, never a 5xx) or a JSON 400."""
    if fields["target"] == "gateway" and fields.get("send", True) is not False:
        fields["send"] = False  # the gateway is not under test here: only the sandbox is called
    status, answer = await post_raw(playground, "/playground/api/send", to_json(fields))
    if status != 200:
        assert_error_body(status, answer, PLAYGROUND_ERRORS, "send")
        assert status == 400
        return
    assert answer["snippets"]["curl"] and answer["snippets"]["python"]
    if "response" in answer:
        event(f"forwarded {answer['response']['status']}")
        assert answer["response"]["status"] < 500, answer["response"]
