"""The API documentation page on the sandbox listener.

GET  /                                   the portal root: a redirect to /docs, the page a TPP developer lands on
GET  /docs (and /docs/)                  the page (plain HTML, JS and CSS from package files, like the playground)
GET  /docs/static/{name}                 its script and style sheet
GET  /docs/api/config                    the URLs the page links to, the sample languages, the variables
GET  /docs/api/samples                   each call of the flow as code in every language, with placeholders
POST /docs/api/samples                   the same with the caller's values filled in
GET  /docs/postman/collection.json       the flow as a Postman collection (v2.1.0), as a download
GET  /docs/postman/environment.json      its environment

The page renders the operations from /openapi.json itself; the samples come from `samples.render_all`, over the
calls `examples.flow` reads from the same document. Nothing here keeps state or calls anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from ...config import Settings
from ...errors import GatewayError
from ..errors import bad_request, not_found
from ..openapi import DOCUMENT
from ..pages import Asset, add_page, api_response, json_body, load_assets
from ..playground.calls import allowed_call, header_problem
from ..samples import LANGUAGES, render_all
from .examples import VARIABLES, Example, call, flow
from .postman import collection, environment

PAGE_PATH: Final = "/docs"
PLAYGROUND_PATH: Final = "/playground"
_ASSETS: Final = {"index.html": "text/html", "apidocs.js": "text/javascript", "apidocs.css": "text/css"}
_DOWNLOADS: Final = {
    "collection.json": "dcr-sandbox.postman_collection.json",
    "environment.json": "dcr-sandbox.postman_environment.json",
}
_MAX_VALUE: Final = 8192
_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_JWS_VARIABLES: Final = frozenset({"registration_jwt", "client_assertion"})
_UNAVAILABLE: Final = "the API's policies cannot be read, so there is no OpenAPI document (see /openapi.json)"


class ApiDocs:
    """The page's assets, and the calls and Postman files built once from the OpenAPI document."""

    def __init__(self, doc: Mapping[str, Any] | None, playground: bool) -> None:
        self.assets: dict[str, Asset] = load_assets(__package__, _ASSETS)
        self.playground = playground
        self.doc = doc
        self.examples: list[Example] = flow(doc) if doc is not None else []
        self.downloads: dict[str, bytes] = {}
        self.placeholders: dict[str, Any] | None = None
        if doc is not None:
            for name, data in (("collection.json", collection(doc)), ("environment.json", environment(doc))):
                self.downloads[name] = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()
            self.placeholders = self.samples({})  # GET /docs/api/samples: the same answer every time

    def samples(self, values: Mapping[str, str]) -> dict[str, Any]:
        """Every call of the flow with `values` filled in, as code in each language."""
        if self.doc is None:
            raise _unavailable()
        base = self.doc["servers"][0]["url"]
        # The caller's values are checked in place, in the whole call; a value not given is checked as a
        # stand-in "x" (its placeholder, `<CLIENT_ID>`, is no valid path segment and is not sent anywhere).
        stand_ins = {name: "x" for name in VARIABLES}
        out = []
        for example in self.examples:
            made = call(example, {"baseUrl": base, **values})
            checked = call(example, {**stand_ins, "baseUrl": base, **values})
            _check(checked.method, checked.url.removeprefix(base), checked.headers)
            out.append({
                "key": example.key,
                "title": example.title,
                "operation_id": example.operation_id,
                "method": made.method,
                "url": made.url,
                "success": example.success,
                "samples": render_all(made),
            })
        return {"examples": out}


APIDOCS = web.AppKey("dcr_apidocs", ApiDocs)
"""The documentation page in the sandbox app."""


def _unavailable() -> GatewayError:
    return GatewayError(503, "temporarily_unavailable", _UNAVAILABLE)


def _check(method: str, path: str, headers: Sequence[tuple[str, str]]) -> None:
    """SECURITY: a filled-in call is one the playground could make, with headers it could set (calls.py): a
    value cannot add a path segment, a query or a header line."""
    if allowed_call("gateway", method, path) is None:
        raise bad_request(f"{method} {path!r} is not a call of the DCR API: client_id must be 1 to 256 "
                          "unreserved characters (RFC 3986 §2.3)")
    for name, value in headers:
        problem = header_problem(name, value)
        if problem is not None:
            raise bad_request(problem)


def _values(data: Mapping[str, Any]) -> dict[str, str]:
    """The caller's values: known variables only, bounded strings without control characters."""
    values = data.get("values", {})
    if not isinstance(values, dict):
        raise bad_request('the body must be {"values": {name: string}}')
    out: dict[str, str] = {}
    for name, value in values.items():
        if name not in VARIABLES or name == "baseUrl":
            raise bad_request(f"unknown value {name!r}: one of {', '.join(n for n in VARIABLES if n != 'baseUrl')}")
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_VALUE or not value.isprintable():
            raise bad_request(f"{name} must be 1 to {_MAX_VALUE} printable characters")
        if name in _JWS_VARIABLES and not _JWS.fullmatch(value):
            raise bad_request(f"{name} must be a compact JWS (three base64url parts)")
        out[name] = value
    return out


async def config(request: web.Request) -> web.Response:
    """GET /docs/api/config: the page's links, the sample languages and the variables of the samples."""
    docs = request.app[APIDOCS]
    doc = docs.doc
    gateway = doc["servers"][0]["url"] if doc is not None else None
    return api_response({
        "available": doc is not None,
        "problem": None if doc is not None else _UNAVAILABLE,
        "gateway_url": gateway,
        "gateway_host": urlsplit(gateway).netloc if gateway else None,
        "openapi": {"json": "/openapi.json", "yaml": "/openapi.yaml"},
        "playground": PLAYGROUND_PATH if docs.playground else None,
        "postman": {name: f"{PAGE_PATH}/postman/{name}" for name in _DOWNLOADS},
        "languages": [{"key": language.key, "label": language.label} for language in LANGUAGES],
        "variables": {name: {"description": v.description, "placeholder": v.placeholder(name), "secret": v.secret}
                      for name, v in VARIABLES.items() if name != "baseUrl"},
    })


async def samples(request: web.Request) -> web.Response:
    """GET /docs/api/samples: every call of the flow as code, with placeholders for what the caller fills in."""
    placeholders = request.app[APIDOCS].placeholders
    if placeholders is None:
        raise _unavailable()
    return api_response(placeholders)


async def filled_samples(request: web.Request) -> web.Response:
    """POST /docs/api/samples: `{"values": {name: value}}` → the same samples with those values."""
    values = _values(await json_body(request))
    return api_response(request.app[APIDOCS].samples(values))


async def root(request: web.Request) -> web.Response:
    """GET /: the sandbox's root is the documentation page (a relative redirect, so any host and port work)."""
    return web.Response(status=302, headers={"Location": PAGE_PATH})  # returned: the app's error middleware
    # turns raised HTTP exceptions into JSON errors


async def download(request: web.Request) -> web.Response:
    """GET /docs/postman/{name}: the Postman collection or environment, as an attachment."""
    name = request.match_info["name"]
    if name not in _DOWNLOADS:
        raise not_found("no such Postman file: collection.json or environment.json")
    body = request.app[APIDOCS].downloads.get(name)
    if body is None:
        raise _unavailable()
    return web.Response(body=body, content_type="application/json", charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="{_DOWNLOADS[name]}"',
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    })


def add_routes(app: web.Application, settings: Settings) -> None:
    """Mount the documentation page on the sandbox app (after `openapi.add_routes`, whose document it reads)."""
    app[APIDOCS] = ApiDocs(app.get(DOCUMENT), settings.sandbox.playground)
    r = app.router
    r.add_get("/", root)  # the portal root lands on the page
    add_page(r, PAGE_PATH, app[APIDOCS].assets)  # the page and its files
    r.add_get(PAGE_PATH + "/api/config", config)
    r.add_get(PAGE_PATH + "/api/samples", samples)
    r.add_post(PAGE_PATH + "/api/samples", filled_samples)
    r.add_get(PAGE_PATH + "/postman/{name}", download)
