"""The curl and Python snippets reproduce the request byte for byte: run for real against a recording server."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from gateway.sandbox.samples import Call, curl, python
from tests.conftest import StartServer
from tests.playground.conftest import python_output, run_snippet

AWKWARD_BODY = """{"quote": "it's", "dq": "say \\"hi\\"", "shell": "$HOME `id` $(id) !x", "bs": "a\\\\b",
"multi": "line 1
line 2", "unicode": "é ✓"}"""


class Recorder:
    """An upstream that records every request and answers with the status the path asks for."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{status:\\d+}/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append({"method": request.method, "path": request.path, "headers": request.headers.copy(),
                          "body": await request.read()})
        status = int(request.match_info["status"])
        if status == 204:
            return web.Response(status=204)
        return web.json_response({"echo": request.method, "status": status}, status=status)


CASES = [
    pytest.param("POST", "/201/register", [("Content-Type", "application/json"), ("client_id", "abc-123")],
                 AWKWARD_BODY, id="post-awkward-json"),
    pytest.param("POST", "/200/oauth2/token", [("Authorization", "Basic YTpi"),
                                               ("Content-Type", "application/x-www-form-urlencoded")],
                 "grant_type=client_credentials&client_assertion=a.b-c_d.e%2Bf", id="post-form"),
    pytest.param("GET", "/200/register/x", [("Authorization", "Bearer t.o.k"), ("Accept", "application/json")],
                 None, id="get"),
    pytest.param("PUT", "/400/register/x", [("Content-Type", "application/jose")], "h.p.s", id="put-refused"),
    pytest.param("DELETE", "/204/register/x", [("Authorization", "Bearer t.o.k")], None, id="delete-no-content"),
]


@pytest.mark.parametrize("lang", ["curl", "python"])
@pytest.mark.parametrize(("method", "path", "headers", "body"), CASES)
async def test_snippet_sends_exactly_the_request(start_server: StartServer, lang: str, method: str, path: str,
                                                 headers: list[tuple[str, str]], body: str | None) -> None:
    """Method, path, every chosen header and the body arrive unchanged, and the answer's status is printed."""
    recorder = Recorder()
    server = await start_server(recorder.app)
    call = Call(method=method, url=str(server.make_url(path)), headers=headers, body=body)
    _, out = await run_snippet(lang, curl(call) if lang == "curl" else python(call))

    assert len(recorder.seen) == 1
    seen = recorder.seen[0]
    assert (seen["method"], seen["path"]) == (method, path)
    for name, value in headers:
        assert seen["headers"][name] == value
    assert seen["body"] == (body.encode() if body is not None else b"")
    status = int(path.split("/")[1])
    if lang == "curl":
        assert out.startswith(f"HTTP/1.1 {status} ")
    else:
        printed, answer = python_output(out)
        assert printed == status
        assert answer == ("" if status == 204 else {"echo": method, "status": status})


def test_snippets_are_plain_and_readable() -> None:
    """One header per line in curl; the Python snippet uses the standard library only."""
    call = Call("POST", "http://127.0.0.1:8080/oauth2/token",
                [("Content-Type", "application/x-www-form-urlencoded")], "grant_type=client_credentials")
    assert curl(call).splitlines() == [
        "curl -sS -i -X POST http://127.0.0.1:8080/oauth2/token \\",
        "  -H 'Content-Type: application/x-www-form-urlencoded' \\",
        "  --data-binary grant_type=client_credentials",
    ]
    imports = [line for line in python(call).splitlines() if line.startswith(("import", "from"))]
    assert imports == ["import json", "import urllib.error", "import urllib.request"]
