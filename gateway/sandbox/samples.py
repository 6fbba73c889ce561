"""The same HTTP call as copy-paste code in the bank page's eight languages: one template per language.

Every sample reproduces the request exactly as given — method, URL, the headers the caller chose and the body
byte for byte (each language's string literal escapes quotes, backslashes, `$`, `#`, newlines and any
invisible character; other non-ASCII text stays readable) — connects directly (no proxy from the environment)
with timeouts, and prints the answer's status on the first line, then its body: indented when it is JSON, as
it is otherwise, nothing when empty (204). An error status is an answer like any other, never a crash.
`render_all` is the one entry point the playground and the documentation page use; `LANGUAGES` says, in the
page's order, each language's key, label and how to run a saved sample.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request as the developer would write it."""

    method: str
    url: str
    headers: Sequence[tuple[str, str]]
    body: str | None


# String literals ---------------------------------------------------------------------------------------


def _sendable(text: str) -> str:
    """`text` with lone surrogates (no UTF-8 form, so never sendable) as U+FFFD, so every literal compiles."""
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _escaped(text: str, named: Mapping[str, str], other: Callable[[str], str]) -> str:
    """`text` with the `named` characters replaced and any other invisible one (`str.isprintable`) by `other`."""
    return "".join(named.get(c) or (c if c.isprintable() else other(c)) for c in text)


def _utf16_escapes(char: str) -> str:
    """`\\uXXXX` per UTF-16 code unit (a surrogate pair above the BMP), as Java and JavaScript spell them."""
    units = char.encode("utf-16-be", "surrogatepass")
    return "".join(f"\\u{int.from_bytes(units[i:i + 2], 'big'):04x}" for i in range(0, len(units), 2))


_C_LIKE: Final = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def ruby_string(text: str) -> str:
    """A double-quoted Ruby literal (`#` escaped: no interpolation)."""
    return '"' + _escaped(_sendable(text), {**_C_LIKE, "#": "\\#"}, lambda c: f"\\u{{{ord(c):x}}}") + '"'


def php_string(text: str) -> str:
    """A double-quoted PHP literal (`$` escaped: no interpolation)."""
    return '"' + _escaped(_sendable(text), {**_C_LIKE, "$": "\\$"}, lambda c: f"\\u{{{ord(c):x}}}") + '"'


def java_string(text: str) -> str:
    """A Java literal in ASCII only (`java Main.java` reads the source in the platform's encoding before
    Java 18): `\\uXXXX` for non-ASCII, octal for other control characters (a `\\u000a` would end the line)."""

    def other(c: str) -> str:
        return f"\\{ord(c):03o}" if ord(c) < 0x80 else _utf16_escapes(c)

    named = {**_C_LIKE, "\b": "\\b", "\f": "\\f"}
    return '"' + "".join(named.get(c) or (c if " " <= c <= "~" else other(c)) for c in text) + '"'


def js_string(text: str) -> str:
    """A double-quoted JavaScript literal."""
    return '"' + _escaped(text, _C_LIKE, _utf16_escapes) + '"'


def go_string(text: str) -> str:
    """An interpreted Go string literal."""

    def other(c: str) -> str:
        code = ord(c)
        return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"

    return '"' + _escaped(_sendable(text), _C_LIKE, other) + '"'


def swift_string(text: str) -> str:
    """A Swift literal (the escaped backslash also rules out `\\(…)` interpolation)."""
    return '"' + _escaped(_sendable(text), _C_LIKE, lambda c: f"\\u{{{ord(c):x}}}") + '"'


# The eight templates -------------------------------------------------------------------------------------


def curl(call: Call) -> str:
    """A curl command line (POSIX shell quoting); `-i` shows the status line and headers of the answer."""
    first = ["curl", "-sS", "-i", "--noproxy", "'*'", "--connect-timeout", "10", "--max-time", "30"]
    if call.method != "GET" or call.body is not None:
        first += ["-X", shlex.quote(call.method)]
    lines = [" ".join([*first, shlex.quote(call.url)])]
    lines += [f"-H {shlex.quote(f'{name}: {value}')}" for name, value in call.headers]
    if call.body is not None:
        lines.append(f"--data-binary {shlex.quote(call.body)}")
    return " \\\n  ".join(lines)


def ruby(call: Call) -> str:
    """A Ruby script with `net/http` (standard library)."""
    classes = {"GET": "Get", "POST": "Post", "PUT": "Put", "DELETE": "Delete", "PATCH": "Patch"}
    if call.method in classes:
        build = f"Net::HTTP::{classes[call.method]}.new(uri)"
    else:
        build = f"Net::HTTPGenericRequest.new({ruby_string(call.method)}, true, true, uri)"
    lines = [
        'require "json"',
        'require "net/http"',
        "",
        f"uri = URI({ruby_string(call.url)})",
        f"request = {build}",
        *(f"request[{ruby_string(name)}] = {ruby_string(value)}" for name, value in call.headers),
    ]
    if call.body is not None:
        lines.append(f"request.body = {ruby_string(call.body)}")
    lines += [
        "",
        "http = Net::HTTP.new(uri.hostname, uri.port, nil)  # nil: a direct connection, no proxy",
        'http.use_ssl = uri.scheme == "https"',
        "http.open_timeout = 10",
        "http.read_timeout = 30",
        "http.write_timeout = 30",
        "response = http.start { http.request(request) }  # 4xx and 5xx answers are returned, not raised",
        "puts response.code",
        "body = response.body.to_s",
        "unless body.empty?  # an empty (204) body prints nothing",
        "  begin",
        "    puts JSON.pretty_generate(JSON.parse(body))",
        "  rescue JSON::ParserError",
        "    puts body",
        "  end",
        "end",
    ]
    return "\n".join(lines) + "\n"


def python(call: Call) -> str:
    """A Python 3 script (standard library only) that sends the request and prints the status and body."""
    lines = [
        "import json",
        "import urllib.error",
        "import urllib.request",
        "",
        "request = urllib.request.Request(",
        f"    {call.url!r},",
        f"    method={call.method!r},",
        "    headers={",
        *(f"        {name!r}: {value!r}," for name, value in call.headers),
        "    },",
    ]
    if call.body is not None:
        lines.append(f"    data={call.body!r}.encode(),")
    lines += [
        ")",
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a direct connection, no proxy",
        "try:",
        "    with opener.open(request, timeout=30) as response:",
        "        status, body = response.status, response.read()",
        "except urllib.error.HTTPError as error:  # 4xx and 5xx answers carry a JSON error body",
        "    status, body = error.code, error.read()",
        "print(status)",
        "if body:  # an empty (204) body prints nothing",
        "    try:",
        "        print(json.dumps(json.loads(body), indent=2))",
        "    except ValueError:",
        "        print(body.decode())",
    ]
    return "\n".join(lines) + "\n"


def php(call: Call) -> str:
    """A PHP script with the curl extension."""
    lines = [
        "<?php",
        f"$curl = curl_init({php_string(call.url)});",
        "curl_setopt_array($curl, [",
        f"    CURLOPT_CUSTOMREQUEST => {php_string(call.method)},",
        "    CURLOPT_HTTPHEADER => [",
        *(f"        {php_string(f'{name}: {value}')}," for name, value in call.headers),
        "    ],",
    ]
    if call.body is not None:
        lines.append(f"    CURLOPT_POSTFIELDS => {php_string(call.body)},")
    lines += [
        "    CURLOPT_RETURNTRANSFER => true,",
        '    CURLOPT_PROXY => "",  // a direct connection, whatever the environment says',
        "    CURLOPT_CONNECTTIMEOUT => 10,",
        "    CURLOPT_TIMEOUT => 30,",
        "]);",
        "$body = curl_exec($curl);  // 4xx and 5xx answers are returned like any other",
        "if ($body === false) {",
        '    fwrite(STDERR, curl_error($curl) . "\\n");',
        "    exit(1);",
        "}",
        'echo curl_getinfo($curl, CURLINFO_RESPONSE_CODE), "\\n";',
        'if ($body !== "") {  // an empty (204) body prints nothing',
        "    $json = json_decode($body);",
        "    echo json_last_error() === JSON_ERROR_NONE",
        "        ? json_encode($json, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE)",
        '        : $body, "\\n";',
        "}",
    ]
    return "\n".join(lines) + "\n"


_JAVA_PRETTY: Final = """\
    /** The body indented when it is JSON (the JDK has no JSON library); any other text as it is. */
    static String pretty(String text) {
        String json = text.strip();
        if (!json.startsWith("{") && !json.startsWith("[")) {
            return text;
        }
        StringBuilder out = new StringBuilder();
        int depth = 0;
        boolean inString = false;
        for (int i = 0; i < json.length(); i++) {
            char c = json.charAt(i);
            if (inString) {
                out.append(c);
                if (c == '\\\\' && i + 1 < json.length()) {
                    out.append(json.charAt(++i));
                } else if (c == '"') {
                    inString = false;
                }
            } else if (c == '"') {
                inString = true;
                out.append(c);
            } else if (c == '{' || c == '[') {
                String rest = json.substring(i + 1).stripLeading();
                if (rest.startsWith(c == '{' ? "}" : "]")) {  // {} and [] stay on one line
                    out.append(c).append(rest.charAt(0));
                    i = json.length() - rest.length();
                } else {
                    out.append(c).append('\\n').append("  ".repeat(++depth));
                }
            } else if (c == '}' || c == ']') {
                depth = Math.max(depth - 1, 0);
                out.append('\\n').append("  ".repeat(depth)).append(c);
            } else if (c == ',') {
                out.append(",\\n").append("  ".repeat(depth));
            } else if (c == ':') {
                out.append(": ");
            } else if (!Character.isWhitespace(c)) {
                out.append(c);
            }
        }
        return out.toString();
    }
"""


def java(call: Call) -> str:
    """A Java 11+ program with `java.net.http`, in one file: save as Main.java, run `java Main.java`."""
    shortcuts = {"GET": ".GET()", "DELETE": ".DELETE()"}
    if call.body is None:
        method = shortcuts.get(call.method) or \
            f".method({java_string(call.method)}, HttpRequest.BodyPublishers.noBody())"
    elif call.method in ("POST", "PUT"):
        method = f".{call.method}(HttpRequest.BodyPublishers.ofString({java_string(call.body)}))"
    else:
        method = f".method({java_string(call.method)}, HttpRequest.BodyPublishers.ofString({java_string(call.body)}))"
    lines = [
        "import java.net.URI;",
        "import java.net.http.HttpClient;",
        "import java.net.http.HttpRequest;",
        "import java.net.http.HttpResponse;",
        "import java.time.Duration;",
        "",
        "public class Main {",
        "    public static void main(String[] args) throws Exception {",
        "        HttpClient client = HttpClient.newBuilder()",
        "            .version(HttpClient.Version.HTTP_1_1)",
        "            .proxy(HttpClient.Builder.NO_PROXY)  // a direct connection",
        "            .connectTimeout(Duration.ofSeconds(10))",
        "            .build();",
        f"        HttpRequest request = HttpRequest.newBuilder(URI.create({java_string(call.url)}))",
        "            .timeout(Duration.ofSeconds(30))",
        *(f"            .header({java_string(name)}, {java_string(value)})" for name, value in call.headers),
        f"            {method}",
        "            .build();",
        "        // 4xx and 5xx answers are returned like any other",
        "        HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());",
        "        System.out.println(response.statusCode());",
        "        if (!response.body().isEmpty()) {  // an empty (204) body prints nothing",
        "            System.out.println(pretty(response.body()));",
        "        }",
        "    }",
        "",
        _JAVA_PRETTY.rstrip("\n"),
        "}",
    ]
    return "\n".join(lines) + "\n"


def node(call: Call) -> str:
    """An ES module for Node 18+ (its built-in `fetch`): save as sample.mjs, run `node sample.mjs`."""
    lines = [
        "// Node's fetch connects directly: it reads no proxy from the environment.",
        f"const response = await fetch({js_string(call.url)}, {{",
        f"  method: {js_string(call.method)},",
        "  headers: {",
        *(f"    {js_string(name)}: {js_string(value)}," for name, value in call.headers),
        "  },",
    ]
    if call.body is not None:
        lines.append(f"  body: {js_string(call.body)},")
    lines += [
        "  signal: AbortSignal.timeout(30_000),",
        "});",
        "console.log(response.status); // 4xx and 5xx answers are returned like any other",
        "const body = await response.text();",
        "if (body) { // an empty (204) body prints nothing",
        "  try {",
        "    console.log(JSON.stringify(JSON.parse(body), null, 2));",
        "  } catch {",
        "    console.log(body);",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def go(call: Call) -> str:
    """A Go program with `net/http` (standard library): save as main.go, run `go run main.go`."""
    strings = ["strings"] if call.body is not None else []  # Go refuses an unused import
    imports = ["bytes", "encoding/json", "fmt", "io", "net/http", "os", *strings, "time"]
    body = f"strings.NewReader({go_string(call.body)})" if call.body is not None else "nil"
    lines = [
        "package main",
        "",
        "import (",
        *(f'\t"{name}"' for name in imports),
        ")",
        "",
        "func main() {",
        f"\trequest, err := http.NewRequest({go_string(call.method)}, {go_string(call.url)}, {body})",
        "\tif err != nil {",
        "\t\tpanic(err)",
        "\t}",
        *(f"\trequest.Header.Set({go_string(name)}, {go_string(value)})" for name, value in call.headers),
        "",
        "\t// A direct connection (a Transport without Proxy), with a timeout.",
        "\tclient := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}",
        "\tresponse, err := client.Do(request) // 4xx and 5xx answers are returned like any other",
        "\tif err != nil {",
        "\t\tfmt.Fprintln(os.Stderr, err)",
        "\t\tos.Exit(1)",
        "\t}",
        "\tdefer response.Body.Close()",
        "\tdata, err := io.ReadAll(response.Body)",
        "\tif err != nil {",
        "\t\tpanic(err)",
        "\t}",
        "\tfmt.Println(response.StatusCode)",
        "\tvar pretty bytes.Buffer",
        "\tif json.Indent(&pretty, data, \"\", \"  \") == nil {",
        "\t\tfmt.Println(pretty.String())",
        "\t} else if len(data) > 0 { // an empty (204) body prints nothing",
        "\t\tfmt.Println(string(data))",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def swift(call: Call) -> str:
    """A Swift 5.7+ script with `URLSession` (Foundation): save as sample.swift, run `swift sample.swift`."""
    lines = [
        "import Foundation",
        "#if canImport(FoundationNetworking)",
        "import FoundationNetworking  // URLSession outside Apple's platforms",
        "#endif",
        "",
        f"var request = URLRequest(url: URL(string: {swift_string(call.url)})!, timeoutInterval: 30)",
        f"request.httpMethod = {swift_string(call.method)}",
        *(f"request.setValue({swift_string(value)}, forHTTPHeaderField: {swift_string(name)})"
          for name, value in call.headers),
    ]
    if call.body is not None:
        lines.append(f"request.httpBody = Data({swift_string(call.body)}.utf8)")
    lines += [
        "",
        "let configuration = URLSessionConfiguration.ephemeral",
        "configuration.connectionProxyDictionary = [:]  // a direct connection, no proxy",
        "let session = URLSession(configuration: configuration)",
        "// 4xx and 5xx answers are returned like any other",
        "let (data, response) = try await session.data(for: request)",
        "print((response as! HTTPURLResponse).statusCode)",
        "if !data.isEmpty {  // an empty (204) body prints nothing",
        "    if let json = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]),",
        "       let pretty = try? JSONSerialization.data(",
        "           withJSONObject: json, options: [.prettyPrinted, .fragmentsAllowed, .withoutEscapingSlashes]) {",
        "        print(String(decoding: pretty, as: UTF8.self))",
        "    } else {",
        "        print(String(decoding: data, as: UTF8.self))",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


# The languages --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Language:
    """A language the pages offer: its key (stable, used by the pages and tests), label and template; `file`
    and `run` say how a developer runs a saved sample (`file` None: paste it into a POSIX shell)."""

    key: str
    label: str
    render: Callable[[Call], str]
    file: str | None = None
    run: str = ""


LANGUAGES: Final = (
    Language("curl", "cURL", curl, None, "paste into a POSIX shell (sh, bash, zsh)"),
    Language("ruby", "Ruby", ruby, "sample.rb", "ruby sample.rb"),
    Language("python", "Python", python, "sample.py", "python3 sample.py"),
    Language("php", "PHP", php, "sample.php", "php sample.php"),
    Language("java", "Java", java, "Main.java", "java Main.java"),
    Language("node", "Node", node, "sample.mjs", "node sample.mjs"),
    Language("go", "Go", go, "main.go", "go run main.go"),
    Language("swift", "Swift", swift, "sample.swift", "swift sample.swift"),
)
"""In the order the pages show them (the bank page's order)."""


def render_all(call: Call) -> dict[str, str]:
    """The call as code in every language, keyed by `Language.key`, in `LANGUAGES` order."""
    return {language.key: language.render(call) for language in LANGUAGES}


def json_languages() -> list[dict[str, str | None]]:
    """`LANGUAGES` as the pages' JSON: key, label, the file to save a sample as and how to run it."""
    return [{"key": lang.key, "label": lang.label, "file": lang.file, "run": lang.run} for lang in LANGUAGES]

