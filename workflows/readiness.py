"""Workflow readiness, live: can this workflow start right now, and if not, why?

From each definition's dependency table (``Workflow.requires`` / ``optional``, the
guide's table, checked against the steps) and the registry's live state:

- **ready**: every service type it needs and can use is available;
- **degraded**: an optional one is down; which steps will fall back or be skipped;
- **blocked**: a required one is down: which, since when, its instances' breakers.

A type is available when discovery would give a caller an instance (passing or
warning, or never checked when nothing better exists; not pending approval) whose
circuit breaker lets calls through (closed or half-open, or open with its reset
timeout over: the next call is the trial). One query for the services, one round
trip for the breakers, one for the latest deregistrations: cheap enough for every
scrape and dashboard view.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Max

from registry.breakers import breaker_config, breaker_snapshots
from registry.models import DISCOVERY_RANK, BreakerState, HealthStatus, Service, StatusChange
from workflows import definitions
from workflows.definitions import Workflow

READY, DEGRADED, BLOCKED = "ready", "degraded", "blocked"
STATES = (READY, DEGRADED, BLOCKED)


@dataclass
class TypeState:
    available: bool
    instances: int
    reason: str = ""
    since: datetime | None = None
    breakers: dict[str, str] | None = None

    def as_dict(self, service_type: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": service_type, "available": self.available, "instances": self.instances}
        if not self.available:
            out.update(reason=self.reason, since=self.since.isoformat() if self.since else None,
                       breakers=self.breakers or {})
        return out


def _type_states(types: set[str]) -> dict[str, TypeState]:
    services = list(Service.objects.filter(type__in=types, pending_approval=False).order_by("type", "name"))
    try:
        snapshots = breaker_snapshots([s.pk for s in services])
    except Exception:  # noqa: BLE001 - a breaker store outage: judge by health alone
        snapshots = {}
    gone = dict(StatusChange.objects.filter(service_type__in=types, new_status=StatusChange.DEREGISTERED)
                .values("service_type").annotate(at=Max("at")).values_list("service_type", "at"))
    by_type: dict[str, list[Service]] = {t: [] for t in types}
    for svc in services:
        by_type[svc.type].append(svc)
    out = {}
    for service_type, instances in by_type.items():
        if not instances:
            out[service_type] = TypeState(False, 0, "no instance registered", gone.get(service_type), {})
            continue
        ranked = [s for s in instances if s.status in DISCOVERY_RANK]
        healthy = [s for s in ranked if s.status != HealthStatus.UNKNOWN]
        eligible = healthy or ranked
        breakers = {}
        open_since = []
        callable_ = []
        for svc in eligible:
            snap = snapshots.get(svc.pk)
            state = snap.state if snap else BreakerState.CLOSED
            breakers[svc.name] = state
            if state == BreakerState.OPEN and not snap.reset_due(breaker_config(svc).reset_timeout):
                if snap.opened_at:
                    open_since.append(datetime.fromtimestamp(snap.opened_at, tz=UTC))
                continue
            callable_.append(svc)
        if callable_:
            out[service_type] = TypeState(True, len(instances))
        elif eligible:
            out[service_type] = TypeState(False, len(instances), "circuit breaker open on every eligible instance",
                                          max(open_since) if open_since else None, breakers)
        else:
            states = ", ".join(f"{s.name}: {s.status}" for s in instances[:10])
            since = max((s.status_changed_at for s in instances if s.status_changed_at), default=None)
            out[service_type] = TypeState(False, len(instances), f"no eligible instance ({states})", since,
                                          {s.name: snapshots[s.pk].state for s in instances if s.pk in snapshots})
    return out


def _fallbacks(workflow: Workflow, service_type: str) -> list[str]:
    """What runs instead when an optional service is down, step by step."""
    out = []
    for step in workflow.steps:
        if step.service_type == service_type:
            out.append(f"{step.name}: {'fallback' if step.fallback else 'skipped'}")
        elif service_type in step.uses:
            out.append(f"{step.name}: {step.description or 'runs without it'}")
    return out


def workflow_readiness(*, workflow: Workflow, states: dict[str, TypeState] | None = None) -> dict[str, Any]:
    required, optional = workflow.dependencies()
    if states is None:
        states = _type_states(set(required) | set(optional))
    missing_required = [t for t in required if not states[t].available]
    missing_optional = [t for t in optional if not states[t].available]
    status = BLOCKED if missing_required else DEGRADED if missing_optional else READY
    return {
        "workflow": workflow.name,
        "version": workflow.version,
        "status": status,
        "when_blocked": workflow.when_blocked,
        "required": [states[t].as_dict(t) for t in required],
        "optional": [{**states[t].as_dict(t), **({} if states[t].available else
                                                 {"fallbacks": _fallbacks(workflow, t)})}
                     for t in optional],
        "blocked_by": missing_required,
        "degraded_by": missing_optional,
    }


def readiness_all() -> list[dict[str, Any]]:
    """Every registered workflow's readiness (latest versions), with one look at the registry."""
    workflows = sorted(definitions.all(), key=lambda wf: wf.name)
    types: set[str] = set()
    for wf in workflows:
        required, optional = wf.dependencies()
        types.update(required, optional)
    states = _type_states(types) if types else {}
    return [workflow_readiness(workflow=wf, states=states) for wf in workflows]


def readiness_refusal(*, workflow: Workflow) -> str | None:
    """Why a start must be refused now (the workflow refuses starts while blocked), or None."""
    if workflow.when_blocked != "refuse":
        return None
    report = workflow_readiness(workflow=workflow)
    if report["status"] != BLOCKED:
        return None
    reasons = [f"{r['type']} ({r['reason']})" for r in report["required"] if not r["available"]]
    return f"Workflow {workflow.name} is blocked: required service unavailable: {'; '.join(reasons)}"
