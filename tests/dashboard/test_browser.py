"""The operator and viewer flows in a real browser (Playwright driving Debian's Chromium).

Needs /usr/bin/chromium (``make test`` tries to install it with apt-get); without
it these tests are skipped with a message saying so. Screenshots go to
``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from dashboard.roles import OPERATORS, VIEWERS
from registry.models import Service
from tests.dashboard.conftest import wait_for_run
from tests.dashboard.factories import failed_run
from workflows.engine import run_start
from workflows.models import RunEvent, RunStatus

CHROMIUM = os.environ.get("BROWSER_EXECUTABLE", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

if sync_playwright is not None:
    expect.set_options(timeout=20_000)  # a loaded CI machine renders slowly

if sync_playwright is None:
    pytestmark.append(pytest.mark.skip(reason="playwright is not installed: pip install -e '.[test]'"))
elif not Path(CHROMIUM).exists():
    pytestmark.append(pytest.mark.skip(
        reason=f"Chromium not found at {CHROMIUM}: browser tests skipped "
               "(install it with `apt-get install chromium`; `make test` tries to)"))


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an asyncio loop in this thread; the test's own ORM
    # calls are still plain synchronous code, which Django would otherwise refuse.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield from _browser()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _browser():
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield b
        b.close()


def _user(username: str, group: str, password: str):
    user = get_user_model().objects.create_user(username=username, password=password, is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def _login(browser, live_server, username: str, password: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # Loopback only: anything else (a CDN, say) is aborted before it leaves the browser.
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]|localhost[:/])"), lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(15_000)
    # Console errors and uncaught exceptions, CSP violations included ("Refused to load ...").
    page.console_errors = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    expect(page.locator("#bp-dashboard")).to_be_visible()
    return context, page


def _shot(page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def test_an_operator_retries_a_failed_run_from_the_dashboard_and_watches_it_succeed(
    browser, live_server, engine, flaky_services
):
    _user("olga", OPERATORS, "olga-pass-123")
    run, _ = run_start(workflow="test_demo", input={"name": "Apollo"}, triggered_by="browser-test")
    assert wait_for_run(run.pk).status == RunStatus.FAILED
    flaky_services.flaky.ok = True  # the agent pool is back

    context, page = _login(browser, live_server, "olga", "olga-pass-123")
    try:
        failed = page.locator("#bp-failed")
        expect(failed).to_contain_text("test_demo")
        expect(failed.locator(f'button[data-run="{run.pk}"]')).to_be_visible()
        _shot(page, "dashboard-operator")

        # Open the failed run: the diagram highlights the failed step, the timeline shows retries.
        failed.locator(f'a[href*="{run.pk}"]').click()
        expect(page.locator("#bp-run-charts")).to_be_visible()
        expect(page.locator("g.bp-highlight")).to_have_attribute("data-status", "failed")
        expect(page.locator("rect.bp-attempt")).to_have_count(5)  # 1 + 1 + 3 attempts
        _shot(page, "run-failed", full_page=False)

        page.get_by_role("button", name="Retry from failed step").click()
        expect(page.locator(".messagelist")).to_contain_text("retried")
        assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
        page.reload()
        expect(page.locator("g.bp-step")).to_have_count(3)
        expect(page.locator('g.bp-step[data-status="succeeded"]')).to_have_count(3)
        expect(page.locator("rect.bp-attempt")).to_have_count(6)  # plus the successful retry
        _shot(page, "run-retried-succeeded", full_page=False)
        assert RunEvent.objects.filter(run_id=run.pk, kind=RunEvent.Kind.RETRIED, actor="olga").exists()

        page.goto(f"{live_server.url}/admin/")
        expect(page.locator("#bp-runs svg rect").first).to_be_visible()
        expect(page.locator(f'#bp-failed button[data-run="{run.pk}"]')).to_have_count(0)
        assert page.console_errors == []
    finally:
        context.close()


def test_a_viewer_sees_no_retry_button_and_a_forged_post_is_refused(browser, live_server, transactional_db):
    _user("vera", VIEWERS, "vera-pass-123")
    run = failed_run()
    context, page = _login(browser, live_server, "vera", "vera-pass-123")
    try:
        expect(page.locator("#bp-failed")).to_contain_text(str(run.pk)[:8])
        expect(page.locator("#bp-failed button")).to_have_count(0)
        _shot(page, "dashboard-viewer")

        page.goto(f"{live_server.url}/admin/workflows/workflowrun/{run.pk}/change/")
        expect(page.locator("#bp-run-charts")).to_be_visible()
        expect(page.get_by_role("button", name="Retry from failed step")).to_have_count(0)

        # Forge the operator's POSTs with the viewer's session and a valid CSRF token.
        token = next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")
        for url, form in [
            (f"/admin/dashboard/runs/{run.pk}/retry/", {}),
            (f"/admin/workflows/workflowrun/{run.pk}/retry/", {}),
            ("/admin/workflows/workflowrun/", {"action": "retry_runs", "_selected_action": str(run.pk)}),
        ]:
            response = context.request.post(
                f"{live_server.url}{url}", form={"csrfmiddlewaretoken": token, **form},
                headers={"X-CSRFToken": token, "Referer": f"{live_server.url}/admin/"},
            )
            assert response.status == 403, (url, response.status)
        run.refresh_from_db()
        assert run.status == RunStatus.FAILED
        assert page.console_errors == []
    finally:
        context.close()


def test_the_admin_and_the_dashboard_render_under_the_csp_with_no_violations(
    browser, live_server, transactional_db
):
    _user("cspo", OPERATORS, "cspo-pass-123")
    run = failed_run()
    service = Service.objects.create(name="planner", type="PLANNING_SYSTEM", url="http://127.0.0.1:9501",
                                     status="passing")
    context, page = _login(browser, live_server, "cspo", "cspo-pass-123")
    try:
        policy = page.request.get(f"{live_server.url}/admin/").headers["content-security-policy"]
        assert "script-src 'self'" in policy
        expect(page.locator("#bp-runs svg rect").first).to_be_visible()  # the dashboard's SVG charts
        page.goto(f"{live_server.url}/admin/workflows/workflowrun/{run.pk}/change/")
        expect(page.locator("g.bp-highlight")).to_have_attribute("data-status", "failed")
        page.goto(f"{live_server.url}/admin/registry/service/{service.pk}/change/")
        expect(page.locator("#id_name")).to_have_value("planner")
        # The admin's own scripts: the action bar's "select all" checkbox works.
        page.goto(f"{live_server.url}/admin/registry/service/")
        page.locator("#action-toggle").check()
        expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
        assert page.console_errors == []
    finally:
        context.close()


def test_swagger_ui_renders_under_the_csp_with_no_violations(browser, live_server, transactional_db):
    _user("cspv", VIEWERS, "cspv-pass-123")
    context, page = _login(browser, live_server, "cspv", "cspv-pass-123")
    try:
        policy = page.request.get(f"{live_server.url}/api/docs/").headers["content-security-policy"]
        assert "script-src 'self'" in policy
        # Swagger UI: its bundle, its init script and the schema all from the portal.
        page.goto(f"{live_server.url}/api/docs/")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Berrys Portal API")
        expect(page.locator(".opblock").first).to_be_visible()
        _shot(page, "swagger-ui-under-csp", full_page=False)
        assert page.console_errors == []
        # ReDoc too: its search worker (blob:) is allowed; the one refusal is its maker's CDN logo.
        page.goto(f"{live_server.url}/api/redoc")
        expect(page.locator("h1").first).to_contain_text("Berrys Portal API")
        page.wait_for_load_state("networkidle")
        assert [e for e in page.console_errors if "cdn.redoc.ly/redoc/logo-mini.svg" not in e] == []
    finally:
        context.close()
