"""The samples reproduce the request byte for byte: each language run for real against a recording server.

cURL, Ruby, Python, PHP, Java, Node and Go run as subprocesses with Debian's toolchains (`curl`, `ruby`,
`php-cli` + `php-curl`, `default-jdk-headless`, `nodejs`, `golang-go`; .ci/run installs them): a missing one
is skipped on a developer's machine and fails in CI. Swift has no Debian toolchain, so its sample is checked
structurally instead: it builds a `URLRequest` with the method, every header and the exact body literal (decoded
here by Swift's escape rules), and prints the status first.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from gateway.sandbox.samples import LANGUAGES, Call, curl, python, render_all, swift, swift_string
from tests.conftest import ROOT, StartServer
from tests.playground.conftest import RUNNABLE, TOOLCHAINS, run_snippet, sample_output
from tests.sandbox.fuzzing import FUZZ

AWKWARD_BODY = """{"quote": "it's", "dq": "say \\"hi\\"", "shell": "$HOME `id` $(id) !x", "bs": "a\\\\b",
"multi": "line 1
line 2", "unicode": "é ✓"}"""

HOSTILE_BODY = (
    "interpolation: #{x} #@x #$x ${x} {$x} \\(x) %s %d {0} <?php ?> */ /* \\u0041 \\x41 \\101 \\\\u000a\n"
    + "".join(chr(c) for c in range(1, 32)) + "\x7f"  # every control character but NUL (no shell argument holds one)
    + " quotes ' \" ` and \\ \\\\ \\\" end-of-literal \"\"\" '''\r\n"
    + "non-ASCII: é ß ✓ \u00a0(nbsp) \u2028(ls) \u2029(ps) \u200b(zwsp) \ufeff(bom) 😀 \U0001d11e 中文"
)
"""Everything a string literal could get wrong, in one body: interpolation in each language, escapes that
would be read twice (Java's `\\uXXXX`), every control character, invisible and astral characters."""

HOSTILE_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("client_id", "a\"b'c$d#{e}`f`\\g ${h} \\(i)"),
                   ("x-fapi-interaction-id", "93bac548-d2de-4546-b106-880a5018460d")]


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
    pytest.param("POST", "/500/hostile", HOSTILE_HEADERS, HOSTILE_BODY, id="post-hostile-server-error"),
]


@pytest.mark.process
@pytest.mark.parametrize("lang", RUNNABLE)
@pytest.mark.parametrize(("method", "path", "headers", "body"), CASES)
async def test_snippet_sends_exactly_the_request(start_server: StartServer, lang: str, method: str, path: str,
                                                 headers: list[tuple[str, str]], body: str | None) -> None:
    """Method, path, every chosen header and the body arrive unchanged, and the answer's status is printed
    first, then its body (none for 204); an error status is printed like any other, never a crash."""
    recorder = Recorder()
    server = await start_server(recorder.app)
    call = Call(method=method, url=str(server.make_url(path)), headers=headers, body=body)
    _, out = await run_snippet(lang, render_all(call)[lang])

    assert len(recorder.seen) == 1
    seen = recorder.seen[0]
    assert (seen["method"], seen["path"]) == (method, path)
    for name, value in headers:
        assert seen["headers"].getall(name) == [value]
    assert seen["body"] == (body.encode() if body is not None else b"")
    status = int(path.split("/")[1])
    printed, answer = sample_output(lang, out)
    assert printed == status
    assert answer == ("" if status == 204 else {"echo": method, "status": status})
    if lang == "curl":
        assert out.startswith(f"HTTP/1.1 {status} ")
    else:
        assert out.startswith(f"{status}\n")
        if status == 204:
            assert out == "204\n"


# Swift: no Debian toolchain, so the sample is read, not run ------------------------------------------------

_SWIFT_LITERAL = r'"((?:[^"\\\n]|\\.)*)"'
_SWIFT_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t", "0": "\0"}


def swift_value(literal: str) -> str:
    """The text of a single-line Swift string literal's contents, by Swift's escape rules (no interpolation)."""
    out, i = [], 0
    while i < len(literal):
        c = literal[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = literal[i + 1]
        assert nxt != "(", f"interpolation in {literal!r}"
        if nxt == "u":
            end = literal.index("}", i)
            assert literal[i + 2] == "{", literal
            out.append(chr(int(literal[i + 3:end], 16)))
            i = end + 1
        else:
            out.append(_SWIFT_ESCAPES[nxt])
            i += 2
    return "".join(out)


def swift_request(source: str) -> dict[str, Any]:
    """What a Swift sample's URLRequest holds: url, timeout, method, headers (in order) and body."""
    url = re.search(rf"URLRequest\(url: URL\(string: {_SWIFT_LITERAL}\)!, timeoutInterval: (\d+)\)", source)
    method = re.search(rf"^request\.httpMethod = {_SWIFT_LITERAL}$", source, re.M)
    headers = re.findall(rf"^request\.setValue\({_SWIFT_LITERAL}, forHTTPHeaderField: {_SWIFT_LITERAL}\)$", source,
                         re.M)
    bodies = re.findall(rf"^request\.httpBody = Data\({_SWIFT_LITERAL}\.utf8\)$", source, re.M)
    assert url and method, source
    assert len(bodies) <= 1
    return {"url": swift_value(url[1]), "timeout": int(url[2]), "method": swift_value(method[1]),
            "headers": [(swift_value(name), swift_value(value)) for value, name in headers],
            "body": swift_value(bodies[0]) if bodies else None}


@pytest.mark.parametrize(("method", "path", "headers", "body"), CASES)
def test_swift_sample_builds_exactly_the_request(method: str, path: str, headers: list[tuple[str, str]],
                                                 body: str | None) -> None:
    """Checked structurally (Swift has no Debian toolchain): a URLRequest with the URL, the method, each header and
    the body as exact literals, a 30 s timeout, no proxy, then the status printed before the body."""
    call = Call(method=method, url=f"http://127.0.0.1:8080{path}", headers=headers, body=body)
    source = swift(call)
    assert swift_request(source) == {"url": call.url, "timeout": 30, "method": method, "headers": headers,
                                     "body": body}
    assert source.count("request.setValue(") == len(headers)
    lines = source.splitlines()
    assert "configuration.connectionProxyDictionary = [:]  // a direct connection, no proxy" in lines
    assert "let session = URLSession(configuration: configuration)" in lines
    assert "let (data, response) = try await session.data(for: request)" in lines
    prints = [line.strip() for line in lines if line.strip().startswith("print(")]
    assert prints[0] == "print((response as! HTTPURLResponse).statusCode)"
    assert len(prints) == 3  # then the body: indented JSON, or as it is


@FUZZ
@given(text=st.text())
def test_every_sample_renders_any_text_and_swift_keeps_it(text: str) -> None:
    """No URL, header or body text breaks a template (lone surrogates included); a Swift literal reads back as the
    text (lone surrogates, which have no UTF-8 form and so cannot be sent, become U+FFFD)."""
    samples = render_all(Call("POST", "http://127.0.0.1:8080/x?" + text, [("client_id", text)], text))
    assert list(samples) == [language.key for language in LANGUAGES]
    assert all(samples.values())
    sendable = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    assert swift_value(swift_string(text)[1:-1]) == sendable


def test_ci_installs_every_toolchain() -> None:
    """.ci/run's Debian packages include each runnable language's (TOOLCHAINS), so CI runs every sample."""
    script = (ROOT / ".ci" / "run").read_text()
    listed = re.search(r"^PACKAGES=\((.*?)\)", script, re.M | re.S)
    assert listed
    packages = set(listed[1].split())
    for lang in RUNNABLE:
        if lang != "python":  # this interpreter
            assert set(TOOLCHAINS[lang][1].split()) <= packages, lang


def test_snippets_are_plain_and_readable() -> None:
    """The bank page's eight languages in its order; one header per line in curl; each sample uses its
    language's standard HTTP client only."""
    assert [(lang.key, lang.label) for lang in LANGUAGES] == [
        ("curl", "cURL"), ("ruby", "Ruby"), ("python", "Python"), ("php", "PHP"), ("java", "Java"),
        ("node", "Node"), ("go", "Go"), ("swift", "Swift")]
    call = Call("POST", "http://127.0.0.1:8080/oauth2/token",
                [("Content-Type", "application/x-www-form-urlencoded")], "grant_type=client_credentials")
    assert curl(call).splitlines() == [
        "curl -sS -i --noproxy '*' --connect-timeout 10 --max-time 30 -X POST http://127.0.0.1:8080/oauth2/token \\",
        "  -H 'Content-Type: application/x-www-form-urlencoded' \\",
        "  --data-binary grant_type=client_credentials",
    ]
    samples = render_all(call)

    def starting(key: str, *prefixes: str) -> list[str]:
        return [line.strip() for line in samples[key].splitlines() if line.strip().startswith(prefixes)]

    assert starting("python", "import", "from") == ["import json", "import urllib.error", "import urllib.request"]
    assert python(call) == samples["python"]
    assert starting("ruby", "require") == ['require "json"', 'require "net/http"']
    assert starting("php", "<?php") == ["<?php"] and "curl_init(" in samples["php"]
    assert all(line.startswith("import java.") for line in starting("java", "import"))
    assert "import" not in samples["node"] and "await fetch(" in samples["node"]
    go_imports = re.search(r"import \(\n(.*?)\n\)", samples["go"], re.S)
    assert go_imports and all("." not in line.split("/")[0] for line in go_imports[1].split())  # the standard library
    assert starting("swift", "import") == ["import Foundation", "import FoundationNetworking  // URLSession outside "
                                           "Apple's platforms"]
