"""The sandbox's web pages (the playground, the API documentation): static files read once, served with one
strict set of headers.

Each page is plain HTML, JavaScript and CSS from package files: no build step, no CDN, no web font, no inline
script. The headers make any stray external reference fail instead of load.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from aiohttp import web

from .bodies import json_object, json_response, read_limited
from .errors import bad_request, not_found
from .service import SANDBOX

# SECURITY: a page runs nothing but its own files and talks to nothing but this origin: no CDN, no web font,
# no inline script, no framing (the CSP makes a stray external reference fail instead of load).
PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True, slots=True)
class Asset:
    """A static file of a page, read once at start."""

    body: bytes
    content_type: str


SHARED: Final = {"pages.js": "text/javascript", "pages.css": "text/css"}
"""The files every page serves beside its own (from this package's `static/`): the DOM and copy-button helpers
and the colours, fonts and body style."""


def load_assets(package: str, names: Mapping[str, str]) -> dict[str, Asset]:
    """{file name: Asset} for `names` (file name → media type) in `package`'s `static/` folder, and the shared
    files (SHARED)."""
    shared = resources.files(__package__) / "static"
    folder = resources.files(package) / "static"
    return {**{name: Asset((shared / name).read_bytes(), ctype) for name, ctype in SHARED.items()},
            **{name: Asset((folder / name).read_bytes(), ctype) for name, ctype in names.items()}}


def asset_response(found: Asset) -> web.Response:
    """A page file with the pages' headers."""
    return web.Response(body=found.body, content_type=found.content_type, charset="utf-8", headers=PAGE_HEADERS)


def add_page(router: web.UrlDispatcher, path: str, assets: Mapping[str, Asset],
             wrap: Callable[[Handler], Handler] = lambda handler: handler) -> None:
    """GET `path` and `path`/ (index.html) and `path`/static/{name} (its other files); `wrap`: a guard."""

    async def page(_: web.Request) -> web.Response:
        return asset_response(assets["index.html"])

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = assets.get(name)
        if found is None or name == "index.html":  # the page itself is served at `path` only
            raise not_found(f"no such file under {path}")
        return asset_response(found)

    router.add_get(path, wrap(page))
    router.add_get(path + "/", wrap(page))
    router.add_get(path + "/static/{name}", wrap(asset))


async def json_body(request: web.Request) -> dict[str, Any]:
    """A JSON object body; `application/json` only, so no other site's page can post it without CORS."""
    if request.content_type != "application/json":
        raise bad_request("the body must be application/json")
    limit = request.app[SANDBOX].config.max_body_bytes
    body = await read_limited(request, limit)
    if body is None:
        raise bad_request(f"the body exceeds {limit} bytes")
    return json_object(body)


def api_response(data: Any, *, status: int = 200) -> web.Response:
    """A page's API answer: JSON, never stored (it may carry the caller's credentials)."""
    response = json_response(data, status=status, no_store=True)
    response.headers.update(API_HEADERS)
    return response
