"""The same HTTP call as copy-paste code in the bank page's languages: one template per language.

Every sample reproduces the request exactly as given — method, URL, the headers the caller chose and the body
byte for byte — and prints the answer's status, then its body, so a sample shown by the playground or the
documentation page works against `make run` as it stands. `render_all` is the one entry point both pages use.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request as the developer would write it."""

    method: str
    url: str
    headers: Sequence[tuple[str, str]]
    body: str | None


def curl(call: Call) -> str:
    """A curl command line (POSIX shell quoting); `-i` shows the status line and headers of the answer."""
    first = ["curl", "-sS", "-i"]
    if call.method != "GET" or call.body is not None:
        first += ["-X", call.method]
    lines = [" ".join([*first, shlex.quote(call.url)])]
    lines += [f"-H {shlex.quote(f'{name}: {value}')}" for name, value in call.headers]
    if call.body is not None:
        lines.append(f"--data-binary {shlex.quote(call.body)}")
    return " \\\n  ".join(lines)


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
        "try:",
        "    with urllib.request.urlopen(request, timeout=30) as response:",
        "        status, body = response.status, response.read()",
        "except urllib.error.HTTPError as error:  # 4xx and 5xx answers carry a JSON error body",
        "    status, body = error.code, error.read()",
        "print(status)",
        "try:",
        "    print(json.dumps(json.loads(body), indent=2))",
        "except ValueError:  # an empty (204) or non-JSON body",
        "    print(body.decode())",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Language:
    """A language the pages offer: its key (stable, used by the pages and tests), label and template."""

    key: str
    label: str
    render: Callable[[Call], str]


LANGUAGES: Final = (
    Language("curl", "cURL", curl),
    Language("python", "Python", python),
)
"""In the order the pages show them."""


def render_all(call: Call) -> dict[str, str]:
    """The call as code in every language, keyed by `Language.key`, in `LANGUAGES` order."""
    return {language.key: language.render(call) for language in LANGUAGES}
