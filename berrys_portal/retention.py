"""Retention: rows older than their table's retention setting are deleted, in small batches.

One beat task (``portal.retention_prune``, installed by ``setup_periodic_tasks``) calls
``retention_prune``. Each batch selects at most RETENTION_BATCH_SIZE ids, oldest first, through
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
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone


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


def runs_prune(*, cutoff: datetime, batch_size: int) -> int:
    """Delete finished runs that finished before ``cutoff``, children first, a batch per transaction."""
    from workflows.models import RUN_FINISHED, RunEvent, StepAttempt, StepRun, WorkflowRun

    old = (
        WorkflowRun.objects.filter(status__in=RUN_FINISHED)
        .filter(Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff))
        .order_by("finished_at")
    )

    def select_ids(n: int) -> list:
        # Lock the batch (skipping runs an operator is touching right now) so a concurrent retry,
        # which locks the run first, either finishes before us or finds the run gone. SQLite
        # ignores FOR UPDATE: its IMMEDIATE transactions already serialise writers.
        return list(old.select_for_update(skip_locked=True).values_list("pk", flat=True)[:n])

    def delete_ids(ids: list) -> None:
        # Children first, each statement driven by an index on the parent's id (no joins: a
        # join through the models' default ordering made PostgreSQL scan whole tables).
        step_ids = list(StepRun.objects.filter(run_id__in=ids).order_by().values_list("pk", flat=True))
        StepAttempt.objects.filter(step_id__in=step_ids).order_by().delete()
        RunEvent.objects.filter(run_id__in=ids).order_by().delete()
        StepRun.objects.filter(pk__in=step_ids).order_by().delete()
        WorkflowRun.objects.filter(pk__in=ids, status__in=RUN_FINISHED).order_by().delete()

    return prune_batches(select_ids=select_ids, delete_ids=delete_ids, batch_size=batch_size)


def retention_prune(*, now: datetime | None = None, batch_size: int | None = None) -> dict[str, int]:
    """Prune every table past its retention; returns the rows (runs) deleted per table."""
    from registry.models import Alert, BreakerEvent, HealthSnapshot, StatusChange

    now = now or timezone.now()
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE

    def cutoff(key: str) -> datetime:
        return now - timedelta(days=next(r for r in RETENTIONS if r.key == key).days)

    newer = StatusChange.objects.filter(service_id=OuterRef("service_id"), at__gt=OuterRef("at"))
    return {
        "runs": runs_prune(cutoff=cutoff("runs"), batch_size=batch_size),
        "snapshots": rows_prune(queryset=HealthSnapshot.objects.all(), age_field="checked_at",
                                cutoff=cutoff("snapshots"), batch_size=batch_size),
        "status_changes": rows_prune(
            queryset=StatusChange.objects.filter(Q(service__isnull=True) | Exists(newer)),
            age_field="at", cutoff=cutoff("status_changes"), batch_size=batch_size),
        "breaker_events": rows_prune(queryset=BreakerEvent.objects.all(), age_field="at",
                                     cutoff=cutoff("breaker_events"), batch_size=batch_size),
        "alerts": rows_prune(queryset=Alert.objects.all(), age_field="created_at",
                             cutoff=cutoff("alerts"), batch_size=batch_size),
    }
