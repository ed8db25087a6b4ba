"""API input and output serializers for workflow runs and definitions.

Input serializers reject unknown fields with a 400 naming them.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from workflows.models import RunEvent, RunStatus, StepAttempt, StepRun, WorkflowRun


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not declare (a typo must not be silently ignored)."""

    def to_internal_value(self, data: Any) -> Any:
        errors: dict[str, Any] = {}
        if hasattr(data, "keys"):
            allowed = ", ".join(self.fields)
            errors = {name: [f"Unknown field. Allowed: {allowed}."]
                      for name in sorted(set(data.keys()) - set(self.fields))}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **errors}) from None
            raise
        if errors:
            raise serializers.ValidationError(errors)
        return value


class JSONObjectField(serializers.JSONField):
    """A JSON object (dict); lists, strings and numbers are refused."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return value


class RunStartInput(StrictSerializer):
    workflow = serializers.CharField(max_length=100, help_text="Definition name, e.g. project_planning.")
    input = JSONObjectField(required=False, default=dict, help_text="The run's input (a JSON object).")


class RunRetryInput(StrictSerializer):
    from_step = serializers.CharField(
        max_length=100, required=False, help_text="Rerun from this step (default: the failed step)."
    )
    input = JSONObjectField(required=False, help_text="Replace the run's input before retrying.")


class RunSignalInput(StrictSerializer):
    step = serializers.CharField(max_length=100, required=False,
                                 help_text="The waiting step to answer (default: the one waiting).")
    data = JSONObjectField(required=False, default=dict, help_text="The answer, merged into the context.")


class EmptyInput(StrictSerializer):
    pass


class RunListQuery(StrictSerializer):
    workflow = serializers.CharField(required=False)
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    cursor = serializers.CharField(required=False, allow_blank=True)  # read by RunCursorPagination
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)


class AttemptOut(serializers.ModelSerializer):
    class Meta:
        model = StepAttempt
        fields = ["number", "service", "service_name", "request_method", "request_url", "request_body",
                  "response_status", "response_body", "latency_ms", "error", "outcome", "worker",
                  "started_at", "finished_at"]


class StepOut(serializers.ModelSerializer):
    attempts = AttemptOut(many=True, read_only=True)

    class Meta:
        model = StepRun
        fields = ["index", "name", "kind", "service_type", "required", "status", "attempt_count",
                  "output", "error", "next_attempt_at", "deliveries", "generation", "wait_until", "started_at",
                  "finished_at", "attempts"]


class EventOut(serializers.ModelSerializer):
    class Meta:
        model = RunEvent
        fields = ["kind", "actor", "step_name", "details", "at"]


class RunOut(serializers.ModelSerializer):
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = WorkflowRun
        fields = ["id", "workflow", "version", "status", "error", "failed_step", "idempotency_key",
                  "triggered_by", "created_at", "started_at", "finished_at", "duration_seconds"]


class RunDetailOut(RunOut):
    steps = StepOut(many=True, read_only=True)
    events = EventOut(many=True, read_only=True)

    class Meta(RunOut.Meta):
        fields = RunOut.Meta.fields + ["input", "context", "steps", "events"]


class DefinitionStepOut(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["http", "local", "human"])
    service_type = serializers.CharField(allow_null=True)
    method = serializers.CharField(allow_null=True)
    path = serializers.CharField(allow_null=True)
    required = serializers.BooleanField()
    has_fallback = serializers.BooleanField()
    max_attempts = serializers.IntegerField()
    timeout = serializers.FloatField(allow_null=True)
    idempotency_header = serializers.CharField(
        allow_null=True, help_text="Header carrying the step's idempotency key on every call (null: none).")
    delivery = serializers.ChoiceField(
        choices=["exactly once", "at least once", ""],
        help_text="Whether a call repeated after a lost worker is deduplicated by the service.")
    description = serializers.CharField()


class DefinitionOut(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()
    description = serializers.CharField()
    required_inputs = serializers.ListField(child=serializers.CharField())
    required_services = serializers.ListField(child=serializers.CharField())
    optional_services = serializers.ListField(child=serializers.CharField())
    steps = DefinitionStepOut(many=True)
