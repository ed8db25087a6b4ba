"""Breaker history and alerts: the rows the outbox works from (``registry.outbox``).

``BreakerEvent`` rows are written by ``registry.breaker_events``; ``Alert`` rows are derived
from them and from ``StatusChange`` rows by the outbox task, and delivered by
``registry.alerts``. Re-exported by ``registry.models``.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half-open", "Half-open"


class BreakerEvent(models.Model):
    """A circuit-breaker transition for one service."""

    service = models.ForeignKey(
        "registry.Service", null=True, blank=True, on_delete=models.SET_NULL, related_name="breaker_events"
    )
    service_name = models.CharField(max_length=200)
    old_state = models.CharField(max_length=16, choices=BreakerState.choices)
    new_state = models.CharField(max_length=16, choices=BreakerState.choices)
    at = models.DateTimeField()
    last_error = models.TextField(blank=True)
    actor = models.CharField(max_length=150, blank=True, help_text="Operator, for manual resets.")
    processed = models.DateTimeField(
        null=True, blank=True,
        help_text="When the outbox task derived this event's alert (empty: not yet; see registry.outbox).",
    )

    class Meta:
        ordering = ["-at"]
        indexes = [
            models.Index(fields=["service", "-at"], name="registry_breakerevent_latest"),
            # The outbox task's claim: events not processed yet, oldest first.
            models.Index(fields=["id"], name="registry_breakerevent_todo", condition=Q(processed__isnull=True)),
            # Dashboard: breaker trips in the last 24 h.
            models.Index(fields=["new_state", "-at"], name="registry_breakerevent_trips"),
            # Retention pruning (berrys_portal.retention): oldest first.
            models.Index(fields=["at"], name="registry_breakerevent_age"),
        ]

    def __str__(self) -> str:
        return f"{self.service_name}: breaker {self.old_state} → {self.new_state}"


class AlertKind(models.TextChoices):
    CRITICAL = "critical", "Service turned critical"
    RECOVERED = "recovered", "Service recovered"
    BREAKER_TRIP = "breaker_trip", "Circuit breaker opened"
    BREAKER_STORAGE_DOWN = "breaker_storage_down", "Breaker state store unreachable"


class Alert(models.Model):
    """One notification for the alert channels (webhooks, ADMINS e-mail): the delivery row.

    Derived from a ``StatusChange`` or ``BreakerEvent`` row by the outbox task
    (``registry.outbox``), or raised directly (``registry.alerts.alert_raise``).
    ``dedup_key`` is unique: de-duplication across every worker is this constraint
    (one alert per status change; one per breaker episode; one per kind and window
    for direct alerts). A delivery round claims the row by moving ``claimed_until``.
    """

    service = models.ForeignKey(
        "registry.Service", null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    service_name = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    message = models.TextField()
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True, help_text="Every channel accepted it.")
    attempts = models.PositiveIntegerField(default=0, help_text="Delivery rounds tried.")
    last_error = models.TextField(blank=True)
    dedup_key = models.CharField(
        max_length=200, null=True, blank=True, unique=True,
        help_text="What this alert is about (status-change:<id>, breaker-trip:<service>:<event id>, …): "
                  "one alert per key, whichever worker gets there first.",
    )
    claimed_until = models.DateTimeField(
        null=True, blank=True,
        help_text="No delivery round starts before this: the lease of the round in progress, "
                  "or the wait before the next round after a failed one.",
    )
    delivered_to = models.JSONField(default=list, blank=True, help_text="Channels that accepted it.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # De-duplication: the latest alert of one service (any kind, or one kind).
            models.Index(fields=["service", "-created_at"], name="registry_alert_latest"),
            # Re-delivery sweep: alerts not yet delivered.
            models.Index(
                fields=["created_at"], name="registry_alert_undelivered",
                condition=Q(delivered_at__isnull=True),
            ),
            # Retention pruning (berrys_portal.retention): oldest first.
            models.Index(fields=["created_at"], name="registry_alert_age"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.service_name}"
