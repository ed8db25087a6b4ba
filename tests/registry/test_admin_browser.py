"""The service list at 1366 px in Chromium: the columns operators sort and scan by are on screen
without scrolling sideways (positions measured in the browser, not guessed from the HTML)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.utils import timezone

from berrys_portal.roles import OPERATORS
from registry.breakers import breaker_for
from registry.models import Criticality, HealthStatus
from tests.dashboard.test_browser import ARTIFACTS, CHROMIUM, browser, sync_playwright  # noqa: F401
from tests.personas import staff_user

pytestmark = [
    pytest.mark.browser, pytest.mark.slow,
    pytest.mark.skipif(sync_playwright is None or not Path(CHROMIUM).exists(),
                       reason=f"Chromium (at {CHROMIUM}) or Playwright missing: browser test skipped"),
]

SORT_COLUMNS = ("column-breaker_badge", "column-criticality", "column-last_checked")


def _fill_registry(make_service) -> None:
    """A realistic page: long names and URLs, every status, an open breaker."""
    now = timezone.now()
    statuses = [HealthStatus.PASSING, HealthStatus.WARNING, HealthStatus.CRITICAL, HealthStatus.MAINTENANCE,
                HealthStatus.UNKNOWN]
    for i, kind in enumerate(["agent-orchestrator", "model-orchestration", "planning-system",
                              "project-coordinator", "tool-integration", "resource-management"] * 2):
        svc = make_service(
            name=f"{kind}-eu-west-{i}", type=kind.upper().replace("-", "_"),
            url=f"http://{kind}-{i}.berrys-production.internal.example.com:8000",
            status=statuses[i % len(statuses)], status_reason="HTTP 503 from /health" if i % 5 == 2 else "",
            criticality=Criticality.CRITICAL if i % 2 else Criticality.NON_CRITICAL,
            last_checked_at=now, last_heartbeat_at=now,
        )
        if i % 4 == 0:
            breaker_for(svc).force_open(reason="browser test")


def test_the_service_list_shows_breaker_criticality_and_last_checked_at_1366_px(browser, live_server,  # noqa: F811
                                                                               make_service):
    user = staff_user("oscar", OPERATORS)
    user.set_password("oscar-pass-123")
    user.save()
    _fill_registry(make_service)

    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/admin/login/?next=/admin/registry/service/")
        page.fill("#id_username", "oscar")
        page.fill("#id_password", "oscar-pass-123")
        page.click("input[type=submit]")
        page.wait_for_selector("#result_list")
        assert page.locator("#result_list tbody tr").count() == 12
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "service-list-1366.png"))

        layout = page.evaluate("""(columns) => {
            const box = (el) => { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right}; };
            const results = document.querySelector('#changelist .results');
            return {
                viewport: window.innerWidth,
                pageScroll: document.documentElement.scrollWidth - document.documentElement.clientWidth,
                tableScroll: results.scrollWidth - results.clientWidth,
                columns: Object.fromEntries(columns.map((c) => [c, box(document.querySelector('th.' + c))])),
                cells: columns.map((c) => document.querySelectorAll('td.field-' + c.slice(7)).length),
            };
        }""", list(SORT_COLUMNS))
        assert layout["pageScroll"] <= 0, layout  # no sideways scroll for the page...
        for name, box in layout["columns"].items():
            # ...and each column lies inside the visible part of the (scroll-free) table.
            assert 0 <= box["left"] < box["right"] <= layout["viewport"], (name, layout)
        assert layout["tableScroll"] <= 0, layout
        assert layout["cells"] == [12, 12, 12], layout
        assert page.locator("td.field-breaker_badge", has_text="open").count() == 3
    finally:
        context.close()
