"""inbound.InboundRules: what a client may send, and what of it goes upstream (the rules alone; end to end in
tests/http/test_listener.py, tests/http/test_proxy.py and the harness)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.http.inbound import InboundRules, content_codings, encoding_refusal, family

RULES = InboundRules(["X-DCR-Client-Id", "X-DCR-Software-Id", "ssl-client-cert"], ["ssl-client-cert"])


def screen(*pairs: tuple[str, str]) -> str | None:
    denial = RULES.screen(CIMultiDictProxy(CIMultiDict(pairs)))
    return None if denial is None else f"{denial.status}:{denial.reason}"


def test_family_folds_case_and_underscores() -> None:
    assert family("X_DCR_Client_Id") == family("x-dcr-client-id") == "x-dcr-client-id"


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((("Authorization", "Bearer a"), ("client_id", "c")), None),
        ((("Content-Encoding", "gzip"),), None),  # refused or accepted by the route's policy: encoding_refusal
        ((("Connection", "keep-alive, TE, close"), ("TE", "trailers")), None),
        ((("Connection", "Authorization"), ("Authorization", "Bearer a")), "400:connection_header"),
        ((("Connection", "Content-Encoding"),), "400:connection_header"),
        ((("Connection", "x-anything"),), "400:connection_header"),
        ((("X-HTTP-Method-Override", "DELETE"),), "400:override_header"),
        ((("X_Original_URL", "/admin"),), "400:override_header"),
        ((("X-Rewrite-URL", "/admin"),), "400:override_header"),
        ((("client_id", "a"), ("client-id", "b")), "400:ambiguous_header"),
        ((("X-Foo", "a"), ("X_Foo", "a")), "400:ambiguous_header"),
        ((("Authorization", "Bearer a"), ("authorization", "Bearer b")), "400:duplicate_header"),
        ((("client_id", "a"), ("CLIENT_ID", "b")), "400:duplicate_header"),
        ((("Content-Type", "application/jose"), ("Content-Type", "application/json")), "400:duplicate_header"),
        ((("ssl-client-cert", "a"), ("ssl-client-cert", "b")), "400:duplicate_header"),
        ((("Accept", "a"), ("Accept", "b")), None),  # repeatable, and spelled alike
        ((("content_encoding", "gzip"),), "400:ambiguous_header"),
        ((("Transfer_Encoding", "chunked"),), "400:ambiguous_header"),
        ((("Content_Length", "3"),), "400:ambiguous_header"),
        ((("Transfer-Encoding", "chunked"),), None),
        ((("Transfer-Encoding", "gzip, chunked"),), "501:transfer_encoding"),
        ((("Expect", "100-continue"),), None),
        ((("Expect", "100-continue, x"),), "417:expectation"),
    ],
)
def test_screen(pairs: tuple[tuple[str, str], ...], expected: str | None) -> None:
    assert screen(*pairs) == expected


def test_upstream_headers_drop_every_spelling_of_what_the_gateway_sets() -> None:
    inbound = [
        ("X_DCR_Client_Id", "forged"), ("x-dcr-software-id", "forged"), ("SSL_Client_Cert", "forged"),
        ("Forwarded", "for=1.2.3.4"), ("X-Real-IP", "1.2.3.4"), ("X_Forwarded_For", "1.2.3.4"),
        ("X-Forwarded-Port", "1"), ("x_request_id", "r"), ("X-FAPI-Interaction-Id", "i"), ("Host", "h"),
        ("Content-Length", "3"), ("Transfer-Encoding", "chunked"), ("Expect", "100-continue"),
        ("Content-Encoding", "identity"), ("Keep-Alive", "timeout=5"), ("Upgrade", "h2c"),
        ("Authorization", "Bearer kept"), ("client_id", "kept"), ("X-Other", "kept"),
    ]
    lines = RULES.upstream_headers(inbound, {"X-DCR-Org-Id": "o"})
    # Content-Encoding goes as sent: only identity, or a coding the route accepts, gets this far.
    assert lines == ["Content-Encoding: identity\r\n", "Authorization: Bearer kept\r\n", "client_id: kept\r\n",
                     "X-Other: kept\r\n"]


def test_upstream_headers_drop_what_the_caller_sets_in_any_spelling() -> None:
    lines = RULES.upstream_headers([("X_Custom_Fact", "forged"), ("X-Kept", "1")], {"X-Custom-Fact": "real"})
    assert lines == ["X-Kept: 1\r\n"]



@pytest.mark.parametrize(
    ("value", "accepted", "expected"),
    [
        (None, set(), None),
        ("identity", set(), None),
        ("gzip", set(), "415:content_encoding"),
        ("GZIP, identity", set(), "415:content_encoding"),
        ("gzip", {"gzip"}, None),
        ("gzip, br", {"gzip"}, "415:content_encoding"),
        ("Gzip , br", {"gzip", "br"}, None),
    ],
)
def test_content_codings_against_the_route(value: str | None, accepted: set[str], expected: str | None) -> None:
    headers = CIMultiDictProxy(CIMultiDict({"Content-Encoding": value} if value is not None else {}))
    codings = content_codings(headers)
    denial = encoding_refusal(codings, frozenset(accepted)) if codings else None
    assert (None if denial is None else f"{denial.status}:{denial.reason}") == expected
