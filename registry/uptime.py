"""Uptime: the one computation every page uses (the service admin's 24 h / 7 d / 30 d figures
and the dashboard's 30 daily bars).

Read from the service's ``StatusChange`` rows: the status in force when the window opens (the
latest change before it; retention keeps each service's latest change for this), then every
change inside it. Time passing or warning is up, critical is down; unknown, maintenance and
time before registration count neither way. A service with no recorded change at all has
held its current status since registration.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from registry.models import HealthStatus, Service, StatusChange

UP_STATUSES = frozenset({HealthStatus.PASSING, HealthStatus.WARNING})
DOWN_STATUSES = frozenset({HealthStatus.CRITICAL})

Segment = tuple[datetime, datetime, str | None]


def status_segments(*, service: Service, start: datetime, now: datetime) -> list[Segment]:
    """(from, to, status) covering [start, now]; status None before the service existed. Two queries."""
    # registry_statuschange_latest (service, -at): the changes inside the window ...
    changes = list(
        StatusChange.objects.filter(service=service, at__gte=start, at__lte=now)
        .order_by("at").values_list("at", "new_status")
    )
    # ... and the status in force when the window opened.
    before = (
        StatusChange.objects.filter(service=service, at__lt=start)
        .order_by("-at").values_list("new_status", flat=True).first()
    )
    registered = service.registered_at or start
    if not changes and before is None and service.status != HealthStatus.UNKNOWN:
        # No recorded change at all: the current status has held since registration.
        return [(max(registered, start), now, service.status)]
    status = before if before is not None else (HealthStatus.UNKNOWN if registered < start else None)
    segments: list[Segment] = []
    cursor = start
    for at, new_status in changes:
        segments.append((cursor, at, status))
        cursor, status = at, new_status
    segments.append((cursor, now, status))
    return segments


def uptime_share(segments: list[Segment], *, start: datetime, end: datetime) -> float | None:
    """Up time / (up + down) time within [start, end]; None when the status was never known."""
    up = down = 0.0
    for s0, s1, status in segments:
        lo, hi = max(s0, start), min(s1, end)
        if hi <= lo or status is None:
            continue
        if status in UP_STATUSES:
            up += (hi - lo).total_seconds()
        elif status in DOWN_STATUSES:
            down += (hi - lo).total_seconds()
    return None if up + down == 0 else up / (up + down)


def service_uptime(*, service: Service, window: timedelta, now: datetime | None = None) -> float | None:
    """Share (0..1) of the last ``window`` the service was up; None when nothing is known."""
    now = now or timezone.now()
    start = now - window
    return uptime_share(status_segments(service=service, start=start, now=now), start=start, end=now)


def service_uptime_days(*, service: Service, days: int = 30, now: datetime | None = None) -> list[dict]:
    """Per UTC day (oldest first, today so far last): {"date", "uptime": percent or None}."""
    now = now or timezone.now()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days - 1)
    segments = status_segments(service=service, start=start, now=now)
    result = []
    for d in range(days):
        d0 = start + timedelta(days=d)
        share = uptime_share(segments, start=d0, end=min(d0 + timedelta(days=1), now))
        result.append({"date": d0, "uptime": None if share is None else 100.0 * share})
    return result
