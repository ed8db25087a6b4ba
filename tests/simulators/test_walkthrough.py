"""The README's demo walkthrough, on the embedded default, in Debian's Chromium.

``make demo-run`` in a clean clone (SQLite, the filesystem broker, breakers in the
database: no PostgreSQL, no Redis), then what the README tells a newcomer to do,
asserting on what an operator must see (text, not layout):

1. every simulated service passes its health check within 30 s of the start;
2. the injected fault opened Model Orchestration's circuit breaker: its admin page says so;
3. "Reset circuit breaker (close it)" from the Services list closes it (across processes:
   the web process resets what the worker opened);
4. the failed run's page names the cause; "Retry from failed step" makes it succeed;
5. the waiting run shows the question; "Answer waiting step…" with {"answer": "Dark"}
   makes it succeed.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import requests

from tests.simulators.test_demo import DemoOnTerminal, _free_block, _run_ids, clean_clone  # noqa: F401

CHROMIUM = os.environ.get("BROWSER_EXECUTABLE", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSING_WITHIN = 30.0
QUESTION = "Should the Berrys website use a light or a dark theme?"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

if sync_playwright is None:
    pytestmark.append(pytest.mark.skip(reason="playwright is not installed: pip install -e '.[test]'"))
elif not Path(CHROMIUM).exists():
    pytestmark.append(pytest.mark.skip(
        reason=f"Chromium not found at {CHROMIUM}: browser tests skipped "
               "(install it with `apt-get install chromium`; `make test` tries to)"))


def _button(page, name: str):
    """A button or a link-styled button named ``name`` (the page's layout may use either)."""
    pattern = re.compile(re.escape(name))
    return page.get_by_role("button", name=pattern).or_(page.get_by_role("link", name=pattern)).first


def _wait_for_run(page, portal: str, run_id: str, key: str, timeout: float = 60.0) -> str:
    """Wait (through the API) until the run finished; its page's text once it has."""
    deadline = time.monotonic() + timeout
    while True:
        run = requests.get(f"{portal}/workflows/runs/{run_id}", timeout=10,
                           headers={"Authorization": f"Token {key}"}).json()
        if run["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert run["status"] == "succeeded", run
    page.goto(f"{portal}/admin/workflows/workflowrun/{run_id}/change/")
    text = page.locator("body").inner_text()
    assert re.search(r"(?i)status:?\s*succeeded", text), text[:3000]  # what the operator sees too
    return text


def test_the_readme_walkthrough_works_on_the_embedded_default(clean_clone):  # noqa: F811
    first = _free_block(9)  # portal, 5 simulators, control, web dashboard, watch server
    portal = f"http://127.0.0.1:{first}"
    demo = DemoOnTerminal(clean_clone, first, first + 1)
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop in this thread; no ORM used here
    try:
        summary = demo.wait_ready()
        # 1. Every service passed its health check (the driver waits for 5/5 before the runs).
        started = demo.seen_at("Starting the demo")
        passing = demo.seen_at("passing 5/5")
        assert passing is not None, summary[-3000:]
        assert passing - started < PASSING_WITHIN, f"5/5 passing {passing - started:.1f} s after the start"
        ids = _run_ids(summary)
        failed_id = re.search(r"agent_task_execution\s+failed\s+(\S+)", summary).group(1)
        waiting_id = ids["human_interaction"]

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                              "--disable-component-update", "--no-first-run"])
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            # Loopback only: a page that needs anything else fails here.
            context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]|localhost[:/])"), lambda r: r.abort())
            page = context.new_page()
            page.set_default_timeout(20_000)
            try:
                _walk(page, portal, failed_id, waiting_id,
                      (clean_clone / "var" / "demo" / "api.key").read_text().strip())
            except BaseException:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "walkthrough-failure.png"), full_page=True)
                raise
            finally:
                browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        if demo.proc.poll() is None:
            rc, _ = demo.ctrl_c()
            assert rc == 0
        demo.close()


def _assert_styled(page) -> None:
    """The admin's stylesheet loaded (the demo's runserver serves the static files)."""
    page.wait_for_load_state("load")
    loaded = page.evaluate("() => [...document.styleSheets].filter(s => (s.href || '').includes("
                           "'/static/admin/css/base.css') && s.cssRules.length > 0).length")
    assert loaded == 1, f"the admin's CSS did not load on {page.url}"


def _walk(page, portal: str, failed_id: str, waiting_id: str, key: str) -> None:
    # Log in with the banner's login.
    page.goto(f"{portal}/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "berrys-demo")
    page.click("input[type=submit]")
    expect(page.get_by_text("Log out").or_(page.get_by_role("button", name="Log out")).first).to_be_attached()
    _assert_styled(page)

    # 2. The injected fault opened Model Orchestration's breaker: its page says so.
    services = f"{portal}/admin/registry/service/"
    page.goto(services)
    row = page.locator("#result_list tr", has_text="model-orchestration")
    expect(row.locator("td.field-breaker_badge")).to_have_text("open")
    row.locator("th a, td a").first.click()
    page.wait_for_url(re.compile(r"/admin/registry/service/\d+/change/"))  # the click navigates
    expect(page.locator("body")).to_contain_text(re.compile("circuit breaker", re.IGNORECASE))
    text = page.locator("body").inner_text()
    assert re.search(r"(?i)circuit breaker", text) and re.search(r"\bopen\b", text), text[:3000]
    assert "HTTP 500" in text  # the breaker's last error: what opened it

    # 3. Reset it from the Services list (the web process closes what the worker opened).
    page.goto(services)
    row = page.locator("#result_list tr", has_text="model-orchestration")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "reset_breaker")
    page.locator("button[name=index], input[name=index]").first.click()
    expect(page.locator(".messagelist")).to_contain_text("1 breaker")
    row = page.locator("#result_list tr", has_text="model-orchestration")
    expect(row.locator("td.field-breaker_badge")).to_have_text("closed")

    # 4. The failed run names its cause; retry it from the failed step and it succeeds.
    run_url = f"{portal}/admin/workflows/workflowrun/{failed_id}/change/"
    page.goto(run_url)
    text = page.locator("body").inner_text()
    assert "execution_plan" in text and "model-orchestration" in text and "500" in text, text[:3000]
    _assert_styled(page)
    _button(page, "Retry from failed step").click()
    text = _wait_for_run(page, portal, failed_id, key)
    assert "Retry from failed step" not in text  # no retry offered on a run that succeeded

    # 5. The waiting run shows the question; answer it and it succeeds.
    run_url = f"{portal}/admin/workflows/workflowrun/{waiting_id}/change/"
    page.goto(run_url)
    assert QUESTION in page.locator("body").inner_text()
    if page.locator("textarea[name=data]").count() == 0:  # the answer form on a page of its own
        _button(page, "Answer waiting step").click()
    page.fill("textarea[name=data]", json.dumps({"answer": "Dark"}))
    page.get_by_role("button", name=re.compile("^(Send answer|Answer)$")).first.click()
    text = _wait_for_run(page, portal, waiting_id, key)
    assert '"answer": "Dark"' in text  # the answer in the run's data, shown as JSON
    assert "'answer'" not in text and ": None" not in text  # not as a Python repr
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "walkthrough-answered-run.png"), full_page=True)
