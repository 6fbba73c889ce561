"""The API documentation page in a real browser: Debian's Chromium, headless, driven by Playwright against
`python -m gateway serve` (gateway + sandbox, shipped config and policies, free loopback ports), as
tests/playground/test_browser.py drives the playground (whose Chromium set-up it shares).

The page renders every operation of the OpenAPI document; the test expands a schema, switches the sample
language, copies a sample (the clipboard, with Playwright's permission), fills in a value and follows "Try it on
the Playground" into the playground. DOCS_SCREENSHOT=docs/portal.png also saves a screenshot of the page.
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

from gateway.sandbox.samples import LANGUAGES
from tests.playground.conftest import Served
from tests.playground.test_browser import CHROMIUM, CHROMIUM_ARGS, STEP_TIMEOUT_MS, _playwright

OPERATIONS = ("createClient", "getClient", "updateClient", "deleteClient")


def _json(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return json.loads(response.read())


def test_the_documentation_page_in_chromium(served: Served) -> None:
    """Every operation with its parameters, schemas, responses and samples; a schema expanded, each language
    shown, a sample copied, a value filled in, the Postman and OpenAPI links, then "Try it" opens the playground;
    the browser requests nothing but the sandbox origin and the page logs no error."""
    sync_api = _playwright()
    expect = sync_api.expect
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    samples = {e["key"]: e for e in _json(served.sandbox_url + "/docs/api/samples")["examples"]}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                          permissions=["clipboard-read", "clipboard-write"])
            page = context.new_page()
            requested: list[str] = []
            problems: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)

            page.goto(served.sandbox_url + "/docs")
            expect(page.locator("body[data-ready='true']")).to_be_attached()
            expect(page.locator("#title")).to_have_text("Dynamic Client Registration PSD2")
            expect(page.locator("[data-config='gateway_url']").first).to_have_text(served.gateway_url)
            expect(page.locator("#toc li")).to_have_count(len(OPERATIONS))

            # The bank page's sections, for each operation.
            for op in OPERATIONS:
                section = page.locator(f"section[data-operation='{op}']")
                expect(section.locator("h4", has_text="Header parameters")).to_be_visible()
                expect(section.locator(".params", has_text="Header parameters")).to_contain_text("Authorization")
                expect(section.locator(".params", has_text="Header parameters")).to_contain_text("client_id")
                expect(section.locator(".response").first).to_be_visible()
                expect(section.locator(".samples .tab")).to_have_count(len(LANGUAGES))
                expect(section.locator("a.try")).to_have_attribute("href", "/playground")
            get = page.locator("section[data-operation='getClient']")
            expect(get.locator(".params", has_text="Path parameters")).to_contain_text("ClientId")
            statuses = get.locator(".response .code").all_text_contents()
            # The page's three, then the gateway's own refusals (shared responses; docs/sandbox.md "OpenAPI document").
            assert statuses == ["200", "401", "403", "404", "413", "415", "429", "502", "503", "504"]

            # "Show schema": the registration request's claims, expanded.
            post = page.locator("section[data-operation='createClient']")
            claims = post.locator(".params", has_text="Request body").locator("details.schema-toggle").first
            expect(claims.locator("table.props")).to_be_hidden()
            claims.locator("summary").click()
            expect(claims.locator("table.props").first).to_be_visible()
            expect(claims.locator("table.props").first).to_contain_text("software_statement")
            expect(claims.locator("table.props").first).to_contain_text("token_endpoint_auth_method")
            # A response's schema comes with the example recorded from a real exchange (examples.json).
            created = post.locator(".response[data-status='201'] details.schema-toggle").first
            created.locator("summary").click()
            expect(created.locator("h5.example").first).to_contain_text("Example: A signed registration request")
            expect(created.locator("pre").first).to_contain_text('"client_id"')

            # Each language in turn, as the sandbox rendered it.
            for language in LANGUAGES:
                get.locator(f".samples .tab[data-lang='{language.key}']").click()
                visible = get.locator(".samples .sample:not([hidden])")
                expect(visible).to_have_count(1)
                expect(visible).to_have_attribute("data-lang", language.key)
                assert visible.text_content() == samples["getClient"]["samples"][language.key]
            # The choice holds across the page.
            expect(post.locator(".samples .tab.active")).to_have_attribute("data-lang", LANGUAGES[-1].key)

            # Copy: the clipboard holds the visible sample.
            get.locator(".samples .tab[data-lang='curl']").click()
            get.locator(".samples button.copy").click()
            expect(get.locator(".samples button.copy")).to_have_text("Copied")
            copied = page.evaluate("navigator.clipboard.readText()")
            assert copied == samples["getClient"]["samples"]["curl"] and "<ACCESS_TOKEN>" in copied

            shot = os.environ.get("DOCS_SCREENSHOT")
            if shot:  # GET /register/{ClientId}: its parameters, responses, samples (curl) and "Try it"
                claims.locator("summary").click()  # closed again
                page.set_viewport_size({"width": 1400, "height": 1200})
                get.evaluate("node => node.scrollIntoView()")
                page.screenshot(path=shot)
                page.set_viewport_size({"width": 1400, "height": 1000})

            # Your values: filled in by the sandbox; a bad one is refused with the sandbox's reason.
            page.click("#your-values > summary")
            page.fill("#values input[name='client_id']", "my-client-1")
            page.click("#fill")
            expect(get.locator(".sample[data-lang='curl']")).to_contain_text("register/my-client-1")
            assert problems == []
            page.fill("#values input[name='client_id']", "../sandbox/apps")
            page.click("#fill")
            expect(page.locator("#values-problem")).to_contain_text("unreserved characters")
            # Chromium logs the refused request itself; that one is expected.
            assert [p for p in problems if "status of 400" not in p] == [] and len(problems) == 1
            problems.clear()
            page.click("#clear")
            expect(get.locator(".sample[data-lang='curl']")).to_contain_text("register/<CLIENT_ID>")

            # The links: OpenAPI and Postman downloads.
            expect(page.locator(".links a[href='/openapi.json']")).to_be_visible()
            with page.expect_download() as download:
                page.click("#link-collection")
            assert download.value.suggested_filename == "dcr-sandbox.postman_collection.json"
            assert json.loads(open(download.value.path(), encoding="utf-8").read())["info"]["schema"].endswith(
                "/v2.1.0/collection.json")


            # Try it: the playground opens, ready.
            get.locator("a.try").click()
            expect(page).to_have_url(served.sandbox_url + "/playground")
            expect(page.locator("body[data-ready='true']")).to_be_attached()
            expect(page.locator("[data-step='register'] h2")).to_have_text("Register the client")
            expect(page.locator(".page-head a[href='/docs']")).to_be_visible()

            assert problems == []
            assert requested and all(url.startswith(served.sandbox_url + "/") for url in requested)
        finally:
            browser.close()
