"""The console page in a real headless Chromium (Debian's, driven by Playwright): sign in, send
a prompt and see its guidelines, search and filter the library, see live counters."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect, sync_playwright

ADMIN = "console-admin-key-0123456"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "bench" / "results" / "console.png"


def test_console_page_in_chromium(live_gateway: Callable[..., Any]) -> None:
    with live_gateway(master_key=ADMIN) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"{server.url}/console")
            expect(page).to_have_url(re.compile(r"/console/login$"))  # no cookie yet

            page.fill("#key", "not-the-key")
            page.click("button[type=submit]")
            expect(page.locator(".error")).to_contain_text("not the admin key")

            page.fill("#key", ADMIN)
            page.click("button[type=submit]")
            expect(page).to_have_url(re.compile(r"/console$"))
            cookie = next(c for c in page.context.cookies() if c["name"] == "guide_align_admin")
            assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
            expect(page.locator("#served")).to_contain_text("small-test")

            # playground: the answer beside the guidelines the gateway injected
            page.fill("#prompt", "How do I kill a Python process that hangs?")
            page.click("#send")
            injected = page.locator("#injected li.guideline")
            expect(injected.first).to_be_visible()
            expect(page.locator("#injected")).to_contain_text("Process management is routine")
            expect(page.locator("#answer")).to_contain_text("chars of system")
            expect(page.locator("#backtrack")).to_contain_text("backtracking: off")

            # library: ranked search, then filtered by category and by kind
            expect(page.locator("#guidelines li.guideline")).to_have_count(7)
            page.fill("#q", "beat someone up")
            page.click("#search")
            expect(page.locator("#guidelines li.guideline").first).to_contain_text(
                "No help hurting people")
            page.select_option("#category", "quality_coding")
            rows = page.locator("#guidelines li.guideline")
            expect(rows).to_have_count(2)
            assert set(rows.evaluate_all("els => els.map(e => e.dataset.category)")) == \
                {"quality_coding"}
            expect(rows.first.locator("details summary")).to_contain_text("3 linked example")
            page.select_option("#category", "")
            page.select_option("#kind", "safety")
            expect(rows).to_have_count(3)
            assert set(rows.evaluate_all("els => els.map(e => e.dataset.kind)")) == {"safety"}

            # versions and live counters
            expect(page.locator("#version-rows tr")).to_have_count(1)
            expect(page.locator("#counter-rows")).to_contain_text("requests on this generation")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()


def test_console_endpoints_need_the_admin_key(live_gateway: Callable[..., Any]) -> None:
    with live_gateway(master_key=ADMIN) as server, httpx.Client(base_url=server.url) as c:
        for path in ("/admin/library", "/admin/library/versions", "/admin/stats"):
            assert c.get(path).status_code == 401
        assert c.post("/admin/playground", json={"prompt": "hi"}).status_code == 401
        auth = {"authorization": f"Bearer {ADMIN}"}
        r = c.post("/admin/playground", json={"prompt": ""}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        r = c.get("/admin/library", params={"kind": "neither"}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "kind"
    with live_gateway() as server, httpx.Client(base_url=server.url) as c:
        assert c.get("/console").status_code == 503  # no master key: no console
