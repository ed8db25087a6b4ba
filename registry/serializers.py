"""Input and output serializers of the registry API.

Input serializers are strict: an unknown field is a 400 naming it (the
integration guide's model-mismatch lesson: never silently ignored), every size
is bounded, and nothing reaches the database that PostgreSQL would refuse (NUL
characters, lone surrogates, out-of-range integers), so bad input is a 400,
never a 500.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from berrys_portal.json_input import json_string_problem
from registry.models import Criticality, HealthStatus, Service
from registry.types import TYPE_PATTERN
from registry.validators import validate_service_url

MAX_LIST_ITEMS = 100
MAX_ENDPOINTS = 200
MAX_STRING_ITEM = 100
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
INT_MAX = 2_147_483_647  # PostgreSQL integer (PositiveIntegerField) upper bound


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not declare, naming each one."""

    def to_internal_value(self, data):
        unknown: dict[str, list[str]] = {}
        if isinstance(data, dict):
            unknown = {
                name: ["Unknown field: this API does not accept it."]
                for name in sorted(set(data) - set(self.fields))
            }
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            # Report unknown fields together with the other problems, not one round trip each.
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from exc
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class EndpointSerializer(StrictSerializer):
    method = serializers.ChoiceField(choices=HTTP_METHODS, help_text="HTTP method, upper case.")
    path = serializers.RegexField(
        r"^/[^\s]*$", max_length=500, help_text="Path starting with '/', e.g. /plans/strategic."
    )


class _ServiceUrlField(serializers.CharField):
    """An http(s) URL with a host, never link-local (see registry.validators)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 2000)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value == "" and self.allow_blank:
            return value
        if len(value) > self.max_length:  # before parsing: DRF runs max_length after this method
            self.fail("max_length", max_length=self.max_length)
        try:
            return validate_service_url(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc


def _check_json_value(value: Any, depth: int = 0) -> None:
    """PostgreSQL's jsonb refuses NUL and lone surrogates; refuse them here instead (400, not 500)."""
    if depth > MAX_METADATA_DEPTH:
        raise serializers.ValidationError(f"Nested deeper than {MAX_METADATA_DEPTH} levels.")
    if isinstance(value, str):
        # The API's parser already refuses these (berrys_portal.json_input); kept for other callers.
        problem = json_string_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json_value(key, depth + 1)
            _check_json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise serializers.ValidationError("Numbers must be finite.")


@extend_schema_field({"type": "object", "additionalProperties": True, "example": {"version": "1.0.0"}})
class MetadataField(serializers.DictField):
    """A JSON object of at most 16 KiB, e.g. ``{"version": "1.0.0"}``."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        _check_json_value(value)
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            raise serializers.ValidationError(
                f"Metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}."
            )
        return value


def _string_list(help_text: str, *, max_items: int = MAX_LIST_ITEMS) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=MAX_STRING_ITEM, allow_blank=False),
        max_length=max_items,
        required=False,
        help_text=help_text,
    )


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


class ServiceConfigFields(StrictSerializer):
    """The optional fields shared by registration and PATCH."""

    health_url = _ServiceUrlField(
        required=False, allow_blank=True, help_text="Probed by the health sweep; empty: not probed."
    )
    metadata = MetadataField(required=False, help_text='Free-form JSON object, e.g. {"version": "1.0.0"}.')
    capabilities = _string_list("Capability strings, e.g. strategic-planning.")
    endpoints = serializers.ListField(
        child=EndpointSerializer(), max_length=MAX_ENDPOINTS, required=False,
        help_text="The endpoints the service offers: [{method, path}].",
    )
    tags = _string_list("Tags, e.g. eu-west, canary.")
    criticality = serializers.ChoiceField(
        choices=Criticality.choices, required=False, help_text="Selects the circuit-breaker preset."
    )
    check_interval_seconds = serializers.IntegerField(
        min_value=1, max_value=86_400, required=False,
        help_text="Seconds between probes; at least HEALTH_MIN_INTERVAL_SECONDS (default 5).",
    )
    check_timeout_seconds = serializers.FloatField(
        min_value=0.1, max_value=300, required=False,
        help_text="Probe timeout in seconds; at most HEALTH_MAX_TIMEOUT_SECONDS (default 10).",
    )
    slow_threshold_ms = serializers.IntegerField(
        min_value=1, max_value=INT_MAX, required=False, allow_null=True
    )
    failures_before_critical = serializers.IntegerField(min_value=1, max_value=1000, required=False)
    successes_before_passing = serializers.IntegerField(min_value=1, max_value=1000, required=False)
    ttl_seconds = serializers.IntegerField(
        min_value=1, max_value=INT_MAX, required=False, allow_null=True,
        help_text="If set, the service is not probed: it must heartbeat within this many seconds.",
    )
    deregister_after_seconds = serializers.IntegerField(
        min_value=1, max_value=INT_MAX, required=False, allow_null=True,
        help_text="Deregister after this long critical. Empty: never.",
    )

    # The bounds are settings (read per request, so an operator's change needs no code): a
    # registration probing every second with a 300 s timeout could freeze the sweep.
    def validate_check_interval_seconds(self, value):
        bound = settings.HEALTH_MIN_INTERVAL_SECONDS
        if value is not None and value < bound:
            raise serializers.ValidationError(
                f"Must be at least {bound} seconds (HEALTH_MIN_INTERVAL_SECONDS).")
        return value

    def validate_check_timeout_seconds(self, value):
        bound = settings.HEALTH_MAX_TIMEOUT_SECONDS
        if value is not None and value > bound:
            raise serializers.ValidationError(
                f"Must be at most {bound:g} seconds (HEALTH_MAX_TIMEOUT_SECONDS).")
        return value

    def validate_capabilities(self, value):
        return _unique(value)

    def validate_tags(self, value):
        return _unique(value)


class ServiceRegisterSerializer(ServiceConfigFields):
    """``POST /registry/services``: the guide's payload plus the optional fields."""

    name = serializers.RegexField(
        r"^[^\s/\x00-\x1f\x7f][^/\x00-\x1f\x7f]*$", max_length=200,
        help_text="Service name, e.g. planning-system-1.",
        error_messages={"invalid": "Name must not start with a space or contain '/' or control characters."},
    )
    type = serializers.RegexField(
        TYPE_PATTERN.pattern, max_length=64,
        help_text="Service type in UPPER_SNAKE_CASE, e.g. PLANNING_SYSTEM.",
        error_messages={"invalid": "Type must be UPPER_SNAKE_CASE, e.g. PLANNING_SYSTEM."},
    )
    url = _ServiceUrlField(help_text="Base URL calls are sent to, e.g. http://planning:8000.")

    field_order = ("name", "type", "url", "health_url", "metadata")


class ServiceUpdateSerializer(ServiceConfigFields):
    """``PATCH /registry/services/{id}``: any optional field; name and url are the identity."""

    type = serializers.RegexField(
        TYPE_PATTERN.pattern, max_length=64, required=False,
        error_messages={"invalid": "Type must be UPPER_SNAKE_CASE, e.g. PLANNING_SYSTEM."},
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            identity = sorted({"name", "url"} & set(data))
            if identity:
                raise serializers.ValidationError(
                    {
                        name: ["Part of the service's identity (name, url): register the new "
                               "instance and deregister this one instead."]
                        for name in identity
                    }
                )
        return super().to_internal_value(data)


class MaintenanceSerializer(StrictSerializer):
    enabled = serializers.BooleanField(help_text="true: enter maintenance; false: leave it.")
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ServiceListQuerySerializer(StrictSerializer):
    """Query parameters of ``GET /registry/services`` (tag and capability may repeat: ANDed)."""

    type = serializers.RegexField(TYPE_PATTERN.pattern, max_length=64, required=False)
    status = serializers.ChoiceField(choices=HealthStatus.choices, required=False)
    name = serializers.CharField(max_length=200, required=False)
    tag = serializers.ListField(
        child=serializers.CharField(max_length=MAX_STRING_ITEM), required=False, max_length=20
    )
    capability = serializers.ListField(
        child=serializers.CharField(max_length=MAX_STRING_ITEM), required=False, max_length=20
    )
    page = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False)
    page_size = serializers.IntegerField(min_value=1, max_value=500, required=False)
    # A blocking watch (registry.watch): parsed by the view, not filters.
    index = serializers.CharField(max_length=20, required=False)
    wait = serializers.CharField(max_length=32, required=False)


class ServiceSerializer(serializers.ModelSerializer):
    """A registered instance, as every endpoint returns it."""

    url = serializers.CharField(read_only=True)
    health_url = serializers.CharField(read_only=True, help_text="Empty: not probed.")
    endpoints = EndpointSerializer(many=True, read_only=True)
    metadata = serializers.DictField(read_only=True)
    capabilities = serializers.ListField(child=serializers.CharField(), read_only=True)
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Service
        fields = (
            "id", "name", "type", "url", "health_url", "metadata", "capabilities", "endpoints", "tags",
            "criticality", "status", "status_reason", "status_changed_at",
            "registered_at", "updated_at", "last_heartbeat_at", "last_checked_at",
            "check_interval_seconds", "check_timeout_seconds", "slow_threshold_ms",
            "failures_before_critical", "successes_before_passing", "ttl_seconds",
            "deregister_after_seconds", "pending_approval",
        )
        read_only_fields = fields

    def get_fields(self) -> dict[str, serializers.Field]:
        # ModelSerializer rebuilds its fields from the model on every instantiation (~1 ms
        # here, the larger part of serializing one row); every endpoint and the discovery hot
        # path build this one. Build once per class and hand each instance its own copy
        # (fields are bound to their serializer, so they cannot be shared).
        prototype = type(self).__dict__.get("_fields_prototype")
        if prototype is None:
            prototype = super().get_fields()
            type(self)._fields_prototype = prototype
        return copy.deepcopy(prototype)


class DiscoveryListSerializer(serializers.Serializer):
    type = serializers.CharField()
    count = serializers.IntegerField(help_text="Eligible instances in all pages.")
    next = serializers.URLField(allow_null=True, help_text="The next page, or null.")
    previous = serializers.URLField(allow_null=True, help_text="The previous page, or null.")
    services = ServiceSerializer(many=True, help_text="This page's instances, best tier first.")


class PortalHealthSerializer(serializers.Serializer):
    """The integration guide's health format."""

    status = serializers.ChoiceField(choices=("healthy", "unhealthy"))
    database = serializers.BooleanField()
    cache = serializers.BooleanField()
    broker = serializers.BooleanField()
    dependencies = serializers.BooleanField(
        help_text="True when every infrastructure dependency (database, cache, broker) answers."
    )
    timestamp = serializers.DateTimeField()


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API."""

    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False,
        help_text="Per-field messages (validation errors only).",
    )
