"""/api/docs (Swagger UI) and /api/redoc render with the network off, in Debian's Chromium.

Their JavaScript and CSS come from drf-spectacular-sidecar's static files; the
browser context aborts every request that is not to the live server, so a page
that still needed a CDN would stay blank (and log the refused request).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("BROWSER_EXECUTABLE", "/usr/bin/chromium")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

if sync_playwright is None:
    pytestmark.append(pytest.mark.skip(reason="playwright is not installed: pip install -e '.[test]'"))
elif not Path(CHROMIUM).exists():
    pytestmark.append(pytest.mark.skip(reason=f"Chromium not found at {CHROMIUM}: browser tests skipped"))


@pytest.fixture
def offline_page(live_server):
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop in this thread
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            context = browser.new_context()
            outside: list[str] = []

            def refuse(route):
                outside.append(route.request.url)
                route.abort()

            context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]|localhost[:/])"), refuse)
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.errors = []
            page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            page.outside = outside
            yield page
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def test_swagger_ui_renders_every_group_of_operations_offline(offline_page, live_server):
    page = offline_page
    page.goto(f"{live_server.url}/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Berrys Portal API")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert page.locator(".swagger-ui .opblock").count() > 10
    assert page.outside == [] and page.errors == []


def test_redoc_renders_offline(offline_page, live_server):
    page = offline_page
    page.goto(f"{live_server.url}/api/redoc")
    expect(page.locator("h1").first).to_contain_text("Berrys Portal API")
    expect(page.get_by_text("/registry/services").first).to_be_attached()
    assert page.outside == []
