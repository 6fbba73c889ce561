"""The playground in a real browser: Debian's Chromium, headless, driven by Playwright through the whole flow
against `python -m gateway serve` (gateway + sandbox, shipped config and policies, free loopback ports).

Needs /usr/bin/chromium (`apt-get install chromium`) and Playwright for Python (the `browser` extra); no
browser is downloaded. Missing either, the test is skipped on a developer's machine and fails in CI.
PLAYGROUND_SCREENSHOT=docs/playground.png also saves a screenshot of the finished flow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.playground.conftest import Served, python_output, require, run_sample

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STEP_TIMEOUT_MS = 30_000  # an upper bound for one step (scrypt, key generation, JWKS fetches), not a measurement


def _playwright() -> Any:
    require(CHROMIUM.exists(), f"{CHROMIUM} (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        require(False, "Playwright for Python (pip install -e '.[browser]')")
    return sync_api


def test_the_whole_flow_in_chromium(served: Served) -> None:
    """Create app → token → key → SSA → two refused registrations (http redirect: invalid_redirect_uri; tampered
    signature: invalid_client_metadata) → 201 → client token → GET 200 (its Python and curl snippets run; its
    Go tab shows the Go sample) → PUT 200 → DELETE 204 → GET 401, as the page shows them; the browser talks to
    the sandbox origin only."""
    sync_api = _playwright()
    expect = sync_api.expect
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            requested: list[str] = []
            problems: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)

            page.goto(served.sandbox_url + "/playground")
            expect(page.locator("body[data-ready='true']")).to_be_attached()
            expect(page.locator("[data-config='gateway_url']")).to_have_text(served.gateway_url)

            def last(step: str) -> Any:
                return page.locator(f"[data-step='{step}'] .exchange").last

            def run(step: str, status: str) -> Any:
                count = page.locator(f"[data-step='{step}'] .exchange").count()
                page.click(f"button[data-action='{step}']")
                expect(page.locator(f"[data-step='{step}'] .exchange")).to_have_count(
                    count + (2 if step in ("client-token", "update") else 1))
                expect(last(step).locator(".status")).to_have_text(status)
                expect(page.locator(f"[data-step='{step}'] .problem")).to_be_hidden()
                return last(step)

            run("app", "201 Created")
            run("token", "200 OK")
            key = run("key", "201 Created")
            hosted = json.loads(key.locator(".pane").nth(1).locator("pre.body").text_content())
            assert set(hosted["jwks"]["keys"][0]) == {"kty", "n", "e", "kid", "use", "alg"}  # public only
            run("ssa", "201 Created")

            # Two refusals, as the gateway words them.
            page.check("#http-redirect")
            run("request", "200 OK")
            refused = run("register", "400 Bad Request")
            expect(refused.locator(".refusal .error-code")).to_have_text("invalid_redirect_uri")
            expect(refused.locator(".refusal")).to_contain_text("must use the https scheme")
            page.uncheck("#http-redirect")
            page.check("#tamper")
            run("request", "200 OK")
            expect(page.locator("[data-step='request'] .to-send .tampered")).to_be_visible()
            refused = run("register", "400 Bad Request")
            expect(refused.locator(".refusal .error-code")).to_have_text("invalid_client_metadata")
            expect(refused.locator(".refusal")).to_contain_text("signature verification failed")
            page.uncheck("#tamper")
            run("request", "200 OK")
            decoded = page.locator("[data-step='request'] .to-send .decoded")
            assert json.loads(decoded.first.text_content())["typ"] == "JWT"
            assert json.loads(decoded.nth(1).text_content())["redirect_uris"] == ["https://tpp.example.com/callback"]

            created = run("register", "201 Created")
            client = json.loads(created.locator(".pane").nth(1).locator("pre.body").text_content())
            expect(page.locator("[data-fact='registered client_id']")).to_have_text(client["client_id"])
            run("client-token", "200 OK")

            read = run("read", "200 OK")
            # The page doubles as documentation: its snippets for this step work as they are.
            status, body = python_output(run_sample(
                "python", read.locator(".snippet[data-lang='python']").text_content()))
            assert status == 200 and body["client_id"] == client["client_id"]
            assert run_sample("curl", read.locator(".snippet[data-lang='curl']").text_content()).startswith(
                "HTTP/1.1 200 OK")
            # Eight languages; switching to Go shows the Go sample (and how to run it) instead of cURL.
            code = read.locator("details.code")
            expect(code.locator("summary")).to_have_text(
                "The same call as code: cURL · Ruby · Python · PHP · Java · Node · Go · Swift")
            code.locator("summary").click()
            expect(code.locator(".snippet[data-lang='curl']")).to_be_visible()
            code.locator(".tab[data-lang='go']").click()
            expect(code.locator(".snippet[data-lang='go']")).to_be_visible()
            expect(code.locator(".snippet[data-lang='curl']")).to_be_hidden()
            expect(code.locator(".tab.active")).to_have_text("Go")
            expect(code.locator(".run-hint")).to_have_text("Save as main.go, then run: go run main.go")
            expect(code.locator(".snippet[data-lang='go']")).to_contain_text(
                f'http.NewRequest("GET", "{served.gateway_url}/open-banking/v3.1/register/{client["client_id"]}", nil)')

            run("update", "200 OK")
            run("delete", "204 No Content")
            gone = run("reread", "401 Unauthorized")
            expect(gone.locator(".refusal .error-code")).to_have_text("invalid_token")
            expect(gone.locator(".refusal")).to_contain_text("revoked")

            statuses = [page.locator(f"[data-step='{s}'] .badge").text_content()
                        for s in ("register", "read", "update", "delete", "reread")]
            assert statuses == ["201 Created", "200 OK", "200 OK", "204 No Content", "401 Unauthorized"]
            assert problems == []
            assert requested and all(url.startswith(served.sandbox_url + "/playground") for url in requested)

            secrets = [client["client_secret"], page.locator("[data-fact='app client_secret']").get_attribute("title"),
                       page.locator("[data-fact='app access token']").get_attribute("title"),
                       page.locator("[data-fact='client access token']").get_attribute("title"),
                       page.locator("[data-step='request'] .to-send .compact").text_content()]
            assert all(secrets)

            shot = os.environ.get("PLAYGROUND_SCREENSHOT")
            if shot:
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()

    log = served.log.read_text()
    assert "playground_call" in log
    for secret in secrets:
        assert secret not in log
