"""Retention pruning of every app's tables (the ``portal.retention_prune`` beat task).

The table list, the settings and the batching are the kernel's (``berrys_portal.retention``);
this module reads the registry's and workflows' models, so it lives in the top layer.
Only finished runs are pruned (by ``finished_at``); a service's latest status change is kept
whatever its age (uptime reads the status in force when its window opens from it).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from berrys_portal.retention import RETENTIONS, prune_batches, rows_prune
from registry.models import Alert, BreakerEvent, HealthSnapshot, StatusChange
from workflows.models import RUN_FINISHED, RunEvent, StepAttempt, StepRun, WorkflowRun


def runs_prune(*, cutoff: datetime, batch_size: int) -> int:
    """Delete finished runs that finished before ``cutoff``, children first, a batch per transaction."""
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
