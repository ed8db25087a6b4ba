"""Health verdict rules: pure functions of a probe's answer and a service's thresholds.

No database, network or Redis here (settings are read for the server-side bounds):
``probe_verdict`` judges one answer by the integration guide's body, ``status_next`` and
``transition`` apply a service's thresholds (and a breaker trial's rule) to a verdict.
The sweep that uses them is ``registry.health_loop``; the writes, ``registry.health_results``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings

from berrys_portal.errors import InvalidInput
from berrys_portal.json_input import json_value_storable_check, text_scrub
from registry.models import HealthStatus

if TYPE_CHECKING:
    from registry.models import Service


def _falsy_dependency(value: Any) -> bool:
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return value.lower() in {"down", "unhealthy", "false", "error", "fail", "failed"}
    if isinstance(value, dict):
        if "status" in value:
            return _falsy_dependency(value["status"])
        if "healthy" in value:
            return _falsy_dependency(value["healthy"])
    return False


_PLAIN_WORD = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


def _dep_name(name: Any) -> str:
    text = str(name)
    return text if _PLAIN_WORD.match(text.lower()) else "?"


def _dependencies_down(body: dict) -> list[str]:
    down = [key for key in ("database", "cache") if key in body and _falsy_dependency(body[key])]
    deps = body.get("dependencies")
    if isinstance(deps, dict):
        down += [f"dependencies.{_dep_name(name)}" for name, value in deps.items() if _falsy_dependency(value)]
    elif isinstance(deps, list):
        for item in deps:
            if isinstance(item, dict) and _falsy_dependency(item):
                down.append(f"dependencies.{_dep_name(item.get('name', '?'))}")
    elif deps is not None and _falsy_dependency(deps):
        down.append("dependencies")
    return down


def storable(value: Any) -> Any:
    """A service's decoded health answer as the database can store it: NUL and lone surrogates
    (which PostgreSQL's jsonb refuses, failing the whole batch's write) become U+FFFD, NaN and
    infinities null. One C-level check decides; the walk runs only for a bad answer."""
    try:
        json_value_storable_check(value)
        return value
    except InvalidInput:
        return _scrubbed(value)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return text_scrub(value)
    if isinstance(value, dict):
        return {text_scrub(str(k)): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def probe_verdict(
    *, http_status: int | None, body: Any, latency_ms: float | None,
    slow_threshold_ms: int | None, error: str = "",
) -> tuple[str, str, dict]:
    """(status, reason, details) of one probe, by the integration guide's body.

    passing: 2xx with no body, a non-JSON body, or ``status`` "healthy";
    warning: 2xx but slow, or a dependency reported down while still "healthy";
    critical: no answer, a non-2xx answer, or ``status`` "unhealthy".
    """
    details: dict[str, Any] = {}
    if isinstance(body, dict):
        details = {k: body[k] for k in ("status", "database", "cache", "dependencies", "timestamp") if k in body}
    if error:
        return HealthStatus.CRITICAL, error, details
    if http_status is None or not 200 <= http_status < 300:
        return HealthStatus.CRITICAL, f"HTTP {http_status}", details
    reported = str(body.get("status", "healthy")).lower() if isinstance(body, dict) else "healthy"
    if reported == "unhealthy":
        down = _dependencies_down(body)
        return HealthStatus.CRITICAL, "reports unhealthy" + (f" ({', '.join(down)} down)" if down else ""), details
    if isinstance(body, dict):
        down = _dependencies_down(body)
        if down:
            details["down"] = down
            return HealthStatus.WARNING, f"dependency down: {', '.join(down)}", details
        if reported not in {"healthy", "ok", "pass", "passing", "up"}:
            # The reason is readable with a `read` key: name only a short, plain word.
            shown = repr(reported) if _PLAIN_WORD.match(reported) else "a non-standard status"
            return HealthStatus.WARNING, f"reports status {shown}", details
    if slow_threshold_ms is not None and latency_ms is not None and latency_ms > slow_threshold_ms:
        return HealthStatus.WARNING, f"slow: {latency_ms:.0f} ms > {slow_threshold_ms} ms", details
    return HealthStatus.PASSING, "", details


def status_next(service: Service, verdict: str, reason: str) -> tuple[str, str, int, int]:
    """Apply the service's thresholds: (status, reason, consecutive failures, successes).

    A service never checked before takes its first verdict at once. Entering
    critical needs ``failures_before_critical`` failed probes in a row; leaving
    it needs ``successes_before_passing`` good ones. Passing ↔ warning is immediate.
    """
    first = service.last_checked_at is None or service.status == HealthStatus.UNKNOWN
    if verdict == HealthStatus.CRITICAL:
        failures, successes = service.consecutive_failures + 1, 0
        if first or service.status == HealthStatus.CRITICAL or failures >= service.failures_before_critical:
            return HealthStatus.CRITICAL, reason, failures, successes
        return service.status, service.status_reason, failures, successes
    failures, successes = 0, service.consecutive_successes + 1
    if service.status == HealthStatus.CRITICAL and not first and successes < service.successes_before_passing:
        return service.status, service.status_reason, failures, successes
    return verdict, reason, failures, successes


def transition(service: Service, verdict: str, reason: str, *, trial: bool) -> tuple[str, str, int, int]:
    """(status, reason, failures, successes) after a probe; a breaker trial decides at once.

    A failed trial keeps the service critical; a passed one (the breaker closes) takes
    the verdict without waiting for ``successes_before_passing``.
    """
    if not trial:
        return status_next(service, verdict, reason)
    if verdict == HealthStatus.CRITICAL:
        return HealthStatus.CRITICAL, f"breaker trial failed: {reason}", service.consecutive_failures + 1, 0
    return verdict, reason, 0, 1


def redirect_host(location: str) -> str:
    host = urlsplit(location).hostname if location else None
    if not host:
        return "(same host)" if location else "(no location)"
    return host if _HOST_SHOWN.match(host) else "(unreadable host)"


_HOST_SHOWN = re.compile(r"^[A-Za-z0-9.:_-]{1,100}$")


def timeout_of(svc: Service) -> float:
    """The probe timeout, clamped to HEALTH_MAX_TIMEOUT_SECONDS (rows older than the bound)."""
    return min(svc.check_timeout_seconds, settings.HEALTH_MAX_TIMEOUT_SECONDS)


def interval_of(svc: Service) -> timedelta:
    return timedelta(seconds=max(svc.check_interval_seconds, settings.HEALTH_MIN_INTERVAL_SECONDS))
