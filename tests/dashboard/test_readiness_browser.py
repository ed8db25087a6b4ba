"""The dashboard's readiness panel in a real Chromium: ready -> degraded -> blocked -> ready."""

from __future__ import annotations

from berrys_portal.roles import VIEWERS
from registry.models import HealthStatus, Service
from tests.dashboard.test_browser import _login, _user, browser, expect, pytestmark  # noqa: F401

pytestmark = list(pytestmark)  # test_browser's marks: browser, slow, and its skip without Chromium


def test_the_readiness_panel_follows_the_services(browser, live_server, transactional_db):  # noqa: F811
    for name, type_ in (("ao", "AGENT_ORCHESTRATOR"), ("mo", "MODEL_ORCHESTRATION"), ("ti", "TOOL_INTEGRATION")):
        Service.objects.create(name=name, type=type_, url=f"http://127.0.0.1:9{len(name)}0{ord(name[0])}",
                               status=HealthStatus.PASSING)
    _user("vera", VIEWERS, "vera-pass-123")
    context, page = _login(browser, live_server, "vera", "vera-pass-123")
    try:
        row = page.locator("#bp-readiness-agent_task_execution")
        expect(row).to_contain_text("ready")
        expect(row).to_contain_text("every service it needs is available")
        for change, expected, text in (
            ({"ti": HealthStatus.CRITICAL}, "degraded", "discover_tools: skipped"),
            ({"mo": HealthStatus.CRITICAL}, "blocked", "needs MODEL_ORCHESTRATION"),
            ({"ti": HealthStatus.PASSING, "mo": HealthStatus.PASSING}, "ready", "every service it needs"),
        ):
            for name, status in change.items():
                Service.objects.filter(name=name).update(status=status)
            page.reload()
            expect(row.locator(".bp-badge")).to_have_text(expected)
            expect(row).to_contain_text(text)
        assert page.console_errors == []
    finally:
        context.close()

