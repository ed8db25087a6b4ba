"""Retention: rows older than their table's retention setting are deleted, in small batches.

One beat task (``portal.retention_prune``, installed by ``setup_periodic_tasks``) calls
``dashboard.retention.retention_prune``, which reads the apps' models; this kernel module
holds the table list (by label, for the admin's notices) and the batching, and imports no app.
Each batch selects at most RETENTION_BATCH_SIZE ids, oldest first, through
the table's age index and deletes exactly those ids in its own short transaction, so no
statement holds locks for long and a huge backlog is worked off across many transactions.
The same SQL runs on PostgreSQL and SQLite (no ``DELETE … LIMIT``, which PostgreSQL lacks).

Only finished runs are pruned (by ``finished_at``), never pending/running/waiting ones; a
run's steps, attempts and events go with it. A service's latest status change is kept
whatever its age: uptime reads the status in force when its window opens from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import models, transaction


@dataclass(frozen=True)
class Retention:
    key: str
    label: str
    model: str  # app_label.ModelName
    setting: str

    @property
    def days(self) -> int:
        return getattr(settings, self.setting)


RETENTIONS: tuple[Retention, ...] = (
    Retention("runs", "Finished workflow runs, with their steps, attempts and events", "workflows.WorkflowRun",
              "WORKFLOW_RUN_RETENTION_DAYS"),
    Retention("snapshots", "Health snapshots", "registry.HealthSnapshot", "HEALTH_SNAPSHOT_RETENTION_DAYS"),
    Retention("status_changes", "Service status changes (each service's latest is kept)",
              "registry.StatusChange", "STATUS_CHANGE_RETENTION_DAYS"),
    Retention("breaker_events", "Circuit-breaker events", "registry.BreakerEvent", "BREAKER_EVENT_RETENTION_DAYS"),
    Retention("alerts", "Alerts", "registry.Alert", "ALERT_RETENTION_DAYS"),
)


def retention_in_force() -> list[dict]:
    """What the admin shows: each table, how many days it keeps, and the setting that says so."""
    return [{"label": r.label, "days": r.days, "setting": r.setting} for r in RETENTIONS]


def retention_for_model(model: type[models.Model]) -> str | None:
    """A one-line notice for a changelist page, or None when the table is not pruned."""
    label = model._meta.label
    if label == "workflows.WorkflowRun":
        days = settings.WORKFLOW_RUN_RETENTION_DAYS
        return (f"Retention: finished runs (with their steps, attempts and events) are deleted "
                f"{days} days after they finish (WORKFLOW_RUN_RETENTION_DAYS). Active runs are never deleted.")
    if label == "registry.Service":
        parts = ", ".join(f"{r.label.split(' (')[0].lower()} {r.days} d" for r in RETENTIONS if r.key != "runs")
        return f"Retention of service history: {parts}."
    return None


def prune_batches(*, select_ids: Callable[[int], list], delete_ids: Callable[[list], None],
                  batch_size: int) -> int:
    """Repeat (select up to batch_size ids, delete them) in one transaction each until none are left."""
    total = 0
    while True:
        with transaction.atomic():
            ids = select_ids(batch_size)
            if not ids:
                return total
            delete_ids(ids)
        total += len(ids)
        if len(ids) < batch_size:
            return total


def rows_prune(*, queryset: models.QuerySet, age_field: str, cutoff: datetime, batch_size: int) -> int:
    """Delete the rows of ``queryset`` whose ``age_field`` is before ``cutoff``, oldest first."""
    old = queryset.filter(**{f"{age_field}__lt": cutoff}).order_by(age_field)
    model = queryset.model
    return prune_batches(
        select_ids=lambda n: list(old.values_list("pk", flat=True)[:n]),
        delete_ids=lambda ids: model.objects.filter(pk__in=ids).delete(),
        batch_size=batch_size,
    )
