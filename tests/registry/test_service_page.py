"""The service page as an operator reads it: a read-only summary first, the configuration below,
the history after; JSON as JSON."""

from __future__ import annotations

import html
from datetime import timedelta

from django.utils import timezone

from dashboard.roles import OPERATORS, VIEWERS
from registry.breakers import breaker_for, events_flush
from registry.models import HealthSnapshot, HealthStatus
from tests.personas import logged_in, staff_user


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
    events_flush()
    return svc


def test_the_service_page_starts_with_a_read_only_summary_and_puts_the_configuration_below(make_service):
    svc = _service_with_history(make_service)
    page = logged_in(staff_user("olivia", OPERATORS)).get(f"/admin/registry/service/{svc.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    order = [
        text.index('id="svc-summary"'),
        text.index("HTTP 503 from /health"),  # status and reason
        text.index('color:#c82333">open</strong>'),  # live breaker state
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
    assert "None" not in text and "False" not in text and "{'" not in text


def test_the_metadata_textarea_holds_indented_json(make_service):
    svc = _service_with_history(make_service)
    text = logged_in(staff_user("olivia", OPERATORS)).get(f"/admin/registry/service/{svc.pk}/change/")
    body = html.unescape(text.content.decode())
    assert '{\n  "region": null,\n  "version": "1.0.0"\n}</textarea>' in body or \
        '{\n  "version": "1.0.0",\n  "region": null\n}</textarea>' in body
