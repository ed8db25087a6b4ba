"""Workflow runs, their steps, every step attempt, and the events operators and the system cause.

Postgres is the source of truth for a run; the broker only carries "run step X".
State changes go through ``workflows.engine`` (claims are conditional UPDATEs, so a
duplicate delivery is harmless) and operator actions through ``workflows.services``;
both record ``RunEvent`` rows.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


RUN_ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)
RUN_FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    RETRYING = "retrying", "Retrying"
    WAITING = "waiting", "Waiting"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    FALLBACK = "fallback", "Fallback used"


# A step in one of these is done and the run may move past it.
STEP_DONE = (StepStatus.SUCCEEDED, StepStatus.SKIPPED, StepStatus.FALLBACK)
# A step in one of these expects a Celery message to exist for it.
STEP_CLAIMABLE = (StepStatus.QUEUED, StepStatus.RETRYING)


class WorkflowRun(models.Model):
    """One execution of a workflow definition, pinned to the version it started with."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.CharField(max_length=100, help_text="Definition name, e.g. project_planning.")
    version = models.PositiveIntegerField(help_text="Definition version this run is pinned to.")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    input = models.JSONField(default=dict, blank=True, help_text="The input the run started with.")
    context = models.JSONField(
        default=dict, blank=True, help_text="Input plus every finished step's output, in step order."
    )
    error = models.TextField(blank=True, help_text="Why the run failed, naming the step and the cause.")
    failed_step = models.CharField(max_length=100, blank=True, help_text="Name of the step that failed the run.")
    # NULL (not ""): the unique constraint must ignore runs started without a key.
    idempotency_key = models.CharField(  # noqa: DJ001
        max_length=200, null=True, blank=True,
        help_text="Idempotency-Key header: the same key and workflow return the same run.",
    )
    triggered_by = models.CharField(max_length=200, blank=True, help_text="API key, operator or command.")
    # The API key that started the run (empty: an operator or a command). Through the API only
    # that key, or one with workflows:operate / runs:read:all, sees or acts on the run.
    owner_key = models.ForeignKey(
        "registry.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_index=False, verbose_name="started by key",
    )
    cancel_requested = models.BooleanField(default=False, help_text="Set by cancel: nothing further runs.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The Idempotency-Key is scoped per API key: two keys sending the same one get two runs.
            models.UniqueConstraint(
                fields=["owner_key", "workflow", "idempotency_key"], name="workflows_run_idempotency_key",
                condition=Q(idempotency_key__isnull=False, owner_key__isnull=False),
            ),
            # Runs started without a key (operators, commands) share one scope.
            models.UniqueConstraint(
                fields=["workflow", "idempotency_key"], name="workflows_run_idempotency_nokey",
                condition=Q(idempotency_key__isnull=False, owner_key__isnull=True),
            ),
        ]
        indexes = [
            # Admin run list and GET /workflows/runs: newest first, no filter.
            models.Index(fields=["-created_at"], name="workflows_run_created"),
            # Admin/API filter by status (and "failed in the last 24 h": status=failed, finished_at range).
            models.Index(fields=["status", "-created_at"], name="workflows_run_status"),
            # GET /workflows/runs for a key that sees only its own runs, newest first.
            models.Index(fields=["owner_key", "-created_at"], name="workflows_run_owner",
                         condition=Q(owner_key__isnull=False)),
            # Admin/API filter by workflow name.
            models.Index(fields=["workflow", "-created_at"], name="workflows_run_workflow"),
            # Admin filter "failed in the last 24 h".
            models.Index(fields=["-finished_at"], name="workflows_run_failed_recent",
                         condition=Q(status="failed")),
            # Retention pruning (berrys_portal.retention): finished runs, oldest first.
            models.Index(fields=["finished_at"], name="workflows_run_finished_age",
                         condition=Q(status__in=["succeeded", "failed", "cancelled"])),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} v{self.version} {str(self.id)[:8]} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        from django.utils import timezone

        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class StepRun(models.Model):
    """One step of one run. Created with the run (all steps in one transaction)."""

    # No index of its own: the (run, index) unique constraint starts with it.
    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="steps", db_index=False)
    index = models.PositiveIntegerField(help_text="Position in the workflow, from 0.")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, default="http")
    service_type = models.CharField(max_length=64, blank=True)
    required = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempt_count = models.PositiveIntegerField(
        default=0, help_text="Attempts since the step was (re)activated; the retry policy counts these."
    )
    attempts_total = models.PositiveIntegerField(default=0, help_text="Attempts ever made (numbers them).")
    output = models.JSONField(null=True, blank=True, help_text="What the step merged into the context.")
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When a queued/retrying step is due (the reconciler re-enqueues after it)."
    )
    lease_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="A running step whose lease expired lost its worker."
    )
    deliveries = models.PositiveIntegerField(
        default=0,
        help_text="Claims since the last finished attempt: a step that keeps losing its worker "
        "fails once this exceeds WORKFLOW_MAX_DELIVERIES.",
    )
    wait_until = models.DateTimeField(null=True, blank=True, help_text="Human step: timeout deadline.")
    generation = models.PositiveIntegerField(
        default=1,
        help_text="Bumped by an operator retry or rerun: part of the Idempotency-Key, so a deliberate "
        "rerun is a new effect while redeliveries and retries repeat the same one.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="workflows_step_run_index"),
        ]
        indexes = [
            # Reconciler: queued/retrying steps past their due time.
            models.Index(fields=["next_attempt_at"], name="workflows_step_due",
                         condition=Q(status__in=["queued", "retrying"])),
            # Reconciler: running steps whose lease expired.
            models.Index(fields=["lease_expires_at"], name="workflows_step_lease",
                         condition=Q(status="running")),
            # Reconciler: waiting human steps past their timeout.
            models.Index(fields=["wait_until"], name="workflows_step_wait",
                         condition=Q(status="waiting", wait_until__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.index}. {self.name} ({self.status})"

    @property
    def idempotency_key(self) -> str:
        """What every HTTP call of this step's current effect carries (see ``workflows.engine``)."""
        return step_idempotency_key(run_id=self.run_id, step_name=self.name, generation=self.generation)


def step_idempotency_key(*, run_id, step_name: str, generation: int) -> str:
    """``<run id>:<step name>:<generation>``: stable across redeliveries and retries of one effect."""
    return f"{run_id}:{step_name}:{generation}"


class AttemptOutcome(models.TextChoices):
    SENT = "sent", "Sent (in flight)"
    SUCCEEDED = "succeeded", "Succeeded"
    RETRY = "retry", "Failed, retried"
    FAILED = "failed", "Failed"
    FALLBACK = "fallback", "Fallback used"
    SKIPPED = "skipped", "Skipped"
    WORKER_LOST = "worker_lost", "Outcome unknown — worker lost"


class StepAttempt(models.Model):
    """One try of a step: the HTTP request and response (truncated), or a local call."""

    # No index of its own: workflows_attempt_step (step, number) starts with it.
    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="attempts", db_index=False)
    number = models.PositiveIntegerField()
    # No database constraint: its check at commit KEY-SHARE-locked the called service's row, the
    # one row every worker's steps to that service share, so two worker processes' step
    # boundaries met there (a MultiXact for ~40 % of the steps of bench/scaleout's two-process
    # batch; none without). Django's collector still sets it NULL when a service is deleted
    # (``on_delete``); ``service_name`` keeps who was called.
    service = models.ForeignKey(
        "registry.Service", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_constraint=False, help_text="The instance that was called.",
    )
    service_name = models.CharField(max_length=200, blank=True)
    request_method = models.CharField(max_length=10, blank=True)
    request_url = models.CharField(max_length=2000, blank=True)
    request_body = models.JSONField(null=True, blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="Truncated to WORKFLOW_RESPONSE_BODY_LIMIT.")
    latency_ms = models.FloatField(null=True, blank=True, help_text="Time spent in the HTTP call.")
    error = models.TextField(blank=True)
    # Written as "sent" when the step is claimed, before the request leaves; completed after.
    # A "sent" row whose worker died is closed by the reconciler (or the next claim) as worker_lost.
    outcome = models.CharField(max_length=16, blank=True, choices=AttemptOutcome.choices)
    worker = models.CharField(max_length=200, blank=True, help_text="Worker hostname and pid.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True, help_text="Empty while the try is in flight.")

    class Meta:
        ordering = ["step", "number"]
        indexes = [
            # Run page: attempts of the run's steps, in order.
            models.Index(fields=["step", "number"], name="workflows_attempt_step"),
            # Reconciler: tries in flight (few at any time), to find those whose worker died.
            models.Index(fields=["worker"], name="workflows_attempt_in_flight", condition=Q(outcome="sent")),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of step {self.step_id}"


class RunEvent(models.Model):
    """Something that happened to a run: an operator action or a system decision."""

    class Kind(models.TextChoices):
        STARTED = "started", "Started"
        RETRIED = "retried", "Retried"
        RERUN = "rerun", "Rerun from step"
        INPUT_EDITED = "input_edited", "Retried with edited input"
        CANCELLED = "cancelled", "Cancelled"
        ANSWERED = "answered", "Answered"
        TIMED_OUT = "timed_out", "Wait timed out"
        REQUEUED = "requeued", "Re-enqueued by the reconciler"
        DELIVERY_CAP = "delivery_cap", "Delivery cap reached"
        LATE_REFUSED = "late_refused", "Late completion refused (lease lost)"

    # No index of its own: workflows_event_run (run, at) starts with it.
    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="events", db_index=False)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    actor = models.CharField(max_length=200, help_text="Operator, API key or 'system'.")
    step_name = models.CharField(max_length=100, blank=True)
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "at"]
        indexes = [
            # Run page: the run's events in time order.
            models.Index(fields=["run", "at"], name="workflows_event_run"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} by {self.actor}"
