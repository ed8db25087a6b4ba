"""The service page as an operator reads it: a read-only summary first, the configuration below,
the history after; JSON as JSON."""

from __future__ import annotations

import html
import re
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from berrys_portal.roles import OPERATORS, VIEWERS
from registry.breakers import breaker_for
from registry.models import BreakerEvent, HealthSnapshot, HealthStatus
from tests.personas import logged_in, staff_user
from tests.registry.loopback import Reply


def _service_with_history(make_service):
    svc = make_service(name="model-orchestration", type="MODEL_ORCHESTRATION", status=HealthStatus.CRITICAL,
                       status_reason="HTTP 503 from /health", metadata={"version": "1.0.0", "region": None})
    now = timezone.now()
    HealthSnapshot.objects.bulk_create([
        HealthSnapshot(service=svc, checked_at=now - timedelta(seconds=15 * i), status="critical",
                       http_status=503, latency_ms=5.0 + i, error="HTTP 503",
                       details={"status": "unhealthy", "database": False, "cache": None})
        for i in range(12)
    ])
    breaker_for(svc).force_open(reason="operator says so")
    return svc


def test_the_service_page_starts_with_a_read_only_summary_and_puts_the_configuration_below(make_service):
    svc = _service_with_history(make_service)
    page = logged_in(staff_user("olivia", OPERATORS)).get(f"/admin/registry/service/{svc.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    order = [
        text.index('id="svc-summary"'),
        text.index("HTTP 503 from /health"),  # status and reason
        text.index('color:#d13b3b">open</strong>'),  # live breaker state
        text.index('aria-label="Uptime per day"'),  # uptime bars
        text.index('id="latency-chart"'),
        text.index('id="snapshots-panel"'),  # last checks
        text.index('id="svc-config-heading"'),
        text.index('name="name"'),  # the editable configuration
        text.index('name="_save"'),
        text.index('id="breaker-events-panel"'),  # history after the form
        text.index('id="status-changes-panel"'),
    ]
    assert order == sorted(order), order
    assert "| Service model-orchestration | Berrys Portal</title>" in text
    assert text.count("<details><summary><code>") == 10  # the last 10 checks


def test_snapshot_details_and_json_fields_are_json_not_python_reprs(make_service):
    svc = _service_with_history(make_service)
    text = html.unescape(
        logged_in(staff_user("victor", VIEWERS)).get(f"/admin/registry/service/{svc.pk}/change/").content.decode())
    # Indented, one key a line (PostgreSQL's jsonb chooses the key order).
    for line in ('\n  "status": "unhealthy"', '\n  "database": false', '\n  "cache": null'):
        assert line in text, line
    assert '"region": null' in text  # the metadata, read-only for a viewer
    shown = re.findall(r"<pre[^>]*>(.*?)</pre>|<code>(.*?)</code>", text, re.S)
    assert len(shown) >= 20
    for block in (a or b for a, b in shown):
        assert "None" not in block and "False" not in block and "{'" not in block, block


def test_the_metadata_textarea_holds_indented_json(make_service):
    svc = _service_with_history(make_service)
    text = logged_in(staff_user("olivia", OPERATORS)).get(f"/admin/registry/service/{svc.pk}/change/")
    body = html.unescape(text.content.decode())
    assert '{\n  "region": null,\n  "version": "1.0.0"\n}</textarea>' in body or \
        '{\n  "version": "1.0.0",\n  "region": null\n}</textarea>' in body


def _post(client, svc, what: str, **data):
    return client.post(reverse("admin:registry_service_operate", args=[svc.pk, what]), data, follow=True)


def test_the_service_page_offers_only_the_buttons_that_apply_and_they_work(make_service, loopback):
    server = loopback({"/health": Reply(200, {"status": "healthy"})})
    svc = make_service(url=server.url, name="planner-7")
    operator = logged_in(staff_user("olivia", OPERATORS))
    page = operator.get(f"/admin/registry/service/{svc.pk}/change/").content.decode()
    assert 'form="svc-check_now"' in page and 'form="svc-breaker_force_open"' in page
    assert 'form="svc-breaker_reset"' not in page  # the breaker is closed
    assert 'form="svc-maintenance_on"' in page and 'form="svc-maintenance_off"' not in page

    assert "Checked: passing" in _post(operator, svc, "check_now").content.decode()
    assert "Say why" in _post(operator, svc, "breaker_force_open", reason=" ").content.decode()
    assert breaker_for(svc).snapshot().state == "closed"
    _post(operator, svc, "breaker_force_open", reason="upstream migration")
    assert breaker_for(svc).snapshot().state == "open"
    page = _post(operator, svc, "breaker_reset").content.decode()  # follows back to the page
    assert "Circuit breaker closed." in page
    assert breaker_for(svc).snapshot().state == "closed"
    assert 'form="svc-breaker_reset"' not in page
    # A button that does not apply any more (a second reset) changes nothing and says so.
    assert "does not apply now" in _post(operator, svc, "breaker_reset").content.decode()

    _post(operator, svc, "maintenance_on")
    svc.refresh_from_db()
    assert svc.status == HealthStatus.MAINTENANCE
    page = operator.get(f"/admin/registry/service/{svc.pk}/change/").content.decode()
    assert 'form="svc-maintenance_off"' in page and 'form="svc-check_now"' not in page
    _post(operator, svc, "maintenance_off")
    svc.refresh_from_db()
    assert svc.status == HealthStatus.UNKNOWN
    assert list(BreakerEvent.objects.filter(service=svc).values_list("actor", flat=True)) == ["olivia", "olivia"]


def test_viewers_get_no_buttons_and_a_403_for_a_forged_post(make_service):
    svc = make_service(name="planner-8")
    viewer = logged_in(staff_user("victor", VIEWERS))
    page = viewer.get(f"/admin/registry/service/{svc.pk}/change/").content.decode()
    assert 'id="svc-actions"' not in page
    for what in ("check_now", "breaker_force_open", "maintenance_on"):
        response = viewer.post(reverse("admin:registry_service_operate", args=[svc.pk, what]), {"reason": "x"})
        assert response.status_code == 403, what
    assert breaker_for(svc).snapshot().state == "closed"
