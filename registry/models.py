"""The registry's tables: service instances, API keys, health history, breaker history.

``Service`` rows change state only through the methods and service functions in
this app (``registry.services``, ``registry.health``), which lock the row and
record transitions as ``StatusChange`` / ``BreakerEvent`` rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import connection, models
from django.db.models import F, Q

from registry.types import TYPE_PATTERN


class Criticality(models.TextChoices):
    CRITICAL = "critical", "Critical"
    NON_CRITICAL = "non_critical", "Non-critical"


class HealthStatus(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    PASSING = "passing", "Passing"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"
    MAINTENANCE = "maintenance", "Maintenance"


# Discovery order: a lower rank is preferred. Critical and maintenance are never eligible.
DISCOVERY_RANK = {HealthStatus.PASSING: 0, HealthStatus.WARNING: 1, HealthStatus.UNKNOWN: 2}


class Service(models.Model):
    """One registered instance of a service. Identity is (name, url)."""

    name = models.CharField(max_length=200, help_text="Service name, e.g. planning-system-1.")
    type = models.CharField(
        max_length=64,
        validators=[RegexValidator(TYPE_PATTERN, "Type must be UPPER_SNAKE_CASE, e.g. PLANNING_SYSTEM.")],
        help_text="Service type (UPPER_SNAKE), e.g. PLANNING_SYSTEM.",
    )
    url = models.URLField(max_length=2000, verbose_name="URL", help_text="Base URL calls are sent to.")
    health_url = models.URLField(
        max_length=2000, blank=True, verbose_name="health URL", help_text="Probed by the health sweep."
    )
    metadata = models.JSONField(default=dict, blank=True, help_text="Free-form, e.g. {\"version\": \"1.0.0\"}.")
    capabilities = models.JSONField(default=list, blank=True, help_text="List of capability strings.")
    endpoints = models.JSONField(default=list, blank=True, help_text="List of {method, path}.")
    tags = models.JSONField(default=list, blank=True, help_text="List of tag strings.")
    criticality = models.CharField(
        max_length=16, choices=Criticality.choices, default=Criticality.NON_CRITICAL,
        help_text="Selects the circuit-breaker preset.",
    )

    status = models.CharField(max_length=16, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN)
    status_reason = models.CharField(max_length=500, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)

    registered_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)

    # Health-check configuration (Consul-style).
    check_interval_seconds = models.PositiveIntegerField(
        default=15, validators=[MinValueValidator(1)], help_text="Seconds between health probes."
    )
    check_timeout_seconds = models.FloatField(
        default=5.0, validators=[MinValueValidator(0.1)], help_text="Probe timeout in seconds."
    )
    slow_threshold_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="A 2xx probe slower than this counts as warning. Empty: never."
    )
    failures_before_critical = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1)])
    successes_before_passing = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    ttl_seconds = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="TTL (s)",
        help_text="If set, the service is not probed: it must heartbeat within this many seconds.",
    )
    deregister_after_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Deregister after this long critical. Empty: never."
    )

    # Health-check state, written by the sweep.
    last_checked_at = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField(null=True, blank=True, db_index=False)
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_successes = models.PositiveIntegerField(default=0)
    critical_since = models.DateTimeField(null=True, blank=True)
    last_latency_ms = models.FloatField(null=True, blank=True)

    # Circuit-breaker overrides; empty means the criticality preset.
    breaker_fail_max = models.PositiveIntegerField(null=True, blank=True)
    breaker_reset_timeout_seconds = models.FloatField(null=True, blank=True)
    breaker_call_timeout_seconds = models.FloatField(null=True, blank=True)

    # Identity: the key that registered the instance. Only it (or a registry:admin key,
    # or an operator) may change it; ownership moves only by an operator's action.
    owner = models.ForeignKey(
        # PROTECT: deleting a key must not silently free its services (revoke keys instead).
        "registry.ApiKey", null=True, blank=True, on_delete=models.PROTECT, related_name="services",
        help_text="The API key that registered it. Empty: only operators and registry:admin keys may change it.",
    )
    pending_approval = models.BooleanField(
        default=False,
        help_text="A new instance of a type in REGISTRY_APPROVAL_TYPES: not discovered until an operator approves it.",
    )

    # Written only by the database triggers of migration 0008 (see registry.watch): the
    # registry index at which the row was created / last changed in a way readers see.
    create_index = models.BigIntegerField(default=0, editable=False)
    modify_index = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["type", "name"]
        constraints = [
            models.UniqueConstraint(fields=["name", "url"], name="registry_service_identity"),
        ]
        indexes = [
            # GET /discovery/{type}: eligible instances of a type.
            models.Index(fields=["type", "status"], name="registry_service_type_status"),
            # service_pick / ServiceClient: the next eligible instance after the rotation cursor
            # (registry.discovery._PickQuery): one seek per tier whatever the registry's size.
            models.Index(
                fields=["type", "status", "id"], name="registry_service_pick",
                condition=Q(pending_approval=False),
            ),
            # Health sweep: probed services that are due, in the claim's order (never checked
            # first, then by due time, then id), so a claim reads its batch off the index
            # instead of scanning and sorting every due row (registry.health_loop._claim).
            models.Index(
                F("next_check_at").asc(nulls_first=True), "id", name="registry_service_due",
                condition=Q(ttl_seconds__isnull=True),
            ),
            # Admin filter "critical now" and list by status.
            models.Index(fields=["status", "type"], name="registry_service_status"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"

    # --- Transitions: the one rule for a status change ---------------------------------

    @staticmethod
    def flip_changed_at(*, old: str, new: str, at: datetime, previous: datetime | None) -> datetime | None:
        """``status_changed_at`` after a transition from ``old`` to ``new`` at ``at``."""
        return at if new != old else previous

    def flip(self, new: str, *, reason: str, at: datetime, actor: str = "") -> list[str]:
        """Set this service's status and record the transition; returns the fields to save.

        The caller holds the row lock and saves the returned fields in the same transaction.
        The ``StatusChange`` row is written only for a real change (``StatusChange.record``,
        the only writer of those rows). The health sweep's set-based UPDATE of many
        services applies the same rule (``flip_changed_at``, then ``StatusChange.record``).
        """
        reason = reason[:500]
        if self.status != new:
            StatusChange.record([StatusFlip(
                service_id=self.pk, service_name=self.name, service_type=self.type,
                old=self.status, new=new, reason=reason, at=at, actor=actor,
            )])
        self.status_changed_at = self.flip_changed_at(old=self.status, new=new, at=at,
                                                      previous=self.status_changed_at)
        self.status = new
        self.status_reason = reason
        return ["status", "status_reason", "status_changed_at"]


class ApiKey(models.Model):
    """A hashed API key with scopes and limits. The plain key is shown once, at creation.

    Scopes and what they allow are described in ``registry.scopes`` (and the
    README's scopes table); the old names (read, register, workflows, gateway)
    are accepted as aliases when a key is created.
    """

    class Scope(models.TextChoices):
        REGISTRY_READ = "registry:read", "registry:read — list services, discover"
        REGISTRY_WRITE = "registry:write", "registry:write — register and manage its own services"
        REGISTRY_ADMIN = "registry:admin", "registry:admin — manage every service"
        RUNS_READ = "runs:read", "runs:read — read its own runs"
        RUNS_READ_ALL = "runs:read:all", "runs:read:all — read every run"
        WORKFLOWS = "workflows", "workflows — start runs and act on its own"
        WORKFLOWS_OPERATE = "workflows:operate", "workflows:operate — act on every run"
        GATEWAY = "gateway", "gateway — call services through the gateway (allow-list)"
        METRICS = "metrics", "metrics — Prometheus scrape and HTTP service discovery"

    name = models.CharField(max_length=100, help_text="Who uses this key, e.g. planning-system.")
    prefix = models.CharField(max_length=12, editable=False, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, help_text="See the README's scopes table.")
    service_types = models.JSONField(
        default=list, blank=True,
        help_text="Service types this key may register, e.g. [\"PLANNING_SYSTEM\"]. Empty: any type.",
    )
    name_patterns = models.JSONField(
        default=list, blank=True,
        help_text="Glob patterns the names it registers must match, e.g. [\"planning-*\"]. Empty: any name.",
    )
    gateway_allow = models.JSONField(
        default=list, blank=True,
        help_text="Gateway allow-list: TYPE:METHOD entries, * for any, e.g. "
        "[\"AGENT_ORCHESTRATOR:POST\", \"PROJECT_COORDINATOR:*\"]. Empty: no gateway call.",
    )
    max_instances = models.PositiveIntegerField(
        null=True, blank=True, help_text="Services this key may own. Empty: REGISTRY_KEY_MAX_INSTANCES."
    )
    max_hosts = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Distinct hosts its services may point at. Empty: REGISTRY_KEY_MAX_HOSTS.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEvent(models.Model):
    """Who did what to which key or service, and when (read-only in the admin).

    Written by the service functions themselves (``registry.audit.audit_record``),
    so every way in — API, admin, management command — leaves the same trace.
    """

    class Action(models.TextChoices):
        KEY_CREATED = "key_created", "API key created"
        KEY_REVOKED = "key_revoked", "API key revoked"
        OWNER_CHANGED = "owner_changed", "Service owner changed"
        SERVICE_APPROVED = "service_approved", "Service approved"
        QUOTA_REFUSED = "quota_refused", "Quota refusal"

    at = models.DateTimeField()
    actor = models.CharField(max_length=200, help_text="Operator, API key (apikey:name) or command.")
    action = models.CharField(max_length=32, choices=Action.choices)
    target = models.CharField(max_length=300, help_text="The key or service acted on.")
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # Admin list: newest first, optionally filtered by action.
            models.Index(fields=["-at"], name="registry_audit_at"),
            models.Index(fields=["action", "-at"], name="registry_audit_action"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.target}"


class HealthSnapshot(models.Model):
    """The result of one health probe (or TTL evaluation)."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="snapshots")
    checked_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=HealthStatus.choices)
    http_status = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-checked_at"]
        indexes = [
            # Service page: latest snapshots of one service; latency chart.
            models.Index(fields=["service", "-checked_at"], name="registry_snapshot_latest"),
            # Retention pruning: oldest first.
            models.Index(fields=["checked_at"], name="registry_snapshot_age"),
        ]

    def __str__(self) -> str:
        return f"{self.status} at {self.checked_at:%Y-%m-%d %H:%M:%S}"


@dataclass(frozen=True)
class StatusFlip:
    """One status transition, as ``StatusChange.record`` writes it."""

    service_id: int | None
    service_name: str
    service_type: str
    old: str
    new: str
    reason: str
    at: datetime
    actor: str = ""


class StatusChange(models.Model):
    """A service's status flip (uptime and history come from these).

    Kept STATUS_CHANGE_RETENTION_DAYS, except each service's latest, which is kept whatever its age.
    """

    DEREGISTERED = "deregistered"

    service = models.ForeignKey(
        Service, null=True, blank=True, on_delete=models.SET_NULL, related_name="status_changes"
    )
    service_name = models.CharField(max_length=200)
    service_type = models.CharField(max_length=64)
    old_status = models.CharField(max_length=16)
    new_status = models.CharField(max_length=16)
    reason = models.CharField(max_length=500, blank=True)
    actor = models.CharField(
        max_length=200, blank=True, default="",
        help_text="Who or what made the change: apikey:<name>, a username, or the health job "
                  "(health-sweep, health-ttl, health-deregister).",
    )
    at = models.DateTimeField()
    processed = models.DateTimeField(
        null=True, blank=True,
        help_text="When the outbox task derived this change's alert (empty: not yet; see registry.outbox).",
    )

    class Meta:
        ordering = ["-at"]
        indexes = [
            # Uptime and history of one service; "flapping" filter (changes in the last hour).
            models.Index(fields=["service", "-at"], name="registry_statuschange_latest"),
            # Dashboard: recent changes across all services.
            models.Index(fields=["-at"], name="registry_statuschange_at"),
            # The outbox task's claim: changes not processed yet, oldest first.
            models.Index(fields=["id"], name="registry_statuschange_todo", condition=Q(processed__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.service_name}: {self.old_status} → {self.new_status}"

    @classmethod
    def record(cls, flips: Iterable[StatusFlip]) -> int:
        """Write the transitions that change something, in one statement; returns how many.

        The only place ``StatusChange`` rows are written (tests/portal/test_architecture.py
        fails on any other): ``Service.flip`` for one service, the health sweep for a batch.
        """
        values = [(f.service_id, f.service_name, f.service_type, f.old, f.new, f.reason[:500], f.actor[:200], f.at)
                  for f in flips if f.new != f.old]
        if not values:
            return 0
        if connection.vendor == "postgresql":
            # COPY, no model instances: a scenario B sweep (bench/health.py) writes 10,000
            # transitions. In groups of 1,000, medians of 5: COPY 0.057 s, instances +
            # bulk_create 0.287 s (5.1×; 2026-12-01 18:21 UTC, load average 3.0).
            with connection.cursor() as cursor, cursor.cursor.copy(
                f"COPY {cls._meta.db_table} ({', '.join(cls._RECORD_COLUMNS)}) FROM STDIN"
            ) as copy:
                for row in values:
                    copy.write_row(row)
        else:
            rows = [cls(**dict(zip(cls._RECORD_COLUMNS, row, strict=True))) for row in values]
            cls.objects.bulk_create(rows)
        from registry.outbox import outbox_kick  # late: the outbox reads these models

        outbox_kick()  # alerts follow from the rows, delivered by a task after commit
        return len(values)

    _RECORD_COLUMNS = ("service_id", "service_name", "service_type", "old_status", "new_status", "reason",
                       "actor", "at")


# The breakers' database store (used when REDIS_URL is unset); its own module to keep this one short.
# The request adapters' rules (registry.adapters); their own module for the same reason.
from registry.models_adapters import RequestAdapterRule  # noqa: E402,F401
from registry.models_breaker import BreakerStore  # noqa: E402,F401

# Breaker history and alerts (the outbox's rows); their own module to keep this one short.
from registry.models_events import Alert, AlertKind, BreakerEvent, BreakerState  # noqa: E402,F401


class RegistryIndex(models.Model):
    """One row (id 1): the registry's change counter, Consul's ``X-Consul-Index``.

    Moved only by database triggers (migration 0008), at commit, when a service row
    changes in a way an API reader sees (not on a probe that changes nothing); see
    ``registry.watch``.
    """

    value = models.BigIntegerField(default=1)

    class Meta:
        verbose_name = "registry index"

    def __str__(self) -> str:
        return str(self.value)


class TypeIndex(models.Model):
    """The registry index of the last change to any instance of one type (deletions included)."""

    type = models.CharField(max_length=64, unique=True)
    value = models.BigIntegerField()

    class Meta:
        verbose_name = "type index"

    def __str__(self) -> str:
        return f"{self.type}: {self.value}"
