"""The request adapters' rules (``registry.adapters``). Re-exported by ``registry.models``."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

from registry.types import TYPE_PATTERN


class RequestAdapterRule(models.Model):
    """One rewrite of a request body on its way to a service (the guide's "use adapters").

    Rules matching a call (service type, method, endpoint pattern) apply in
    ``order``; ``registry.adapters.adapt_request`` runs them inside the ServiceClient.
    """

    class Action(models.TextChoices):
        DROP = "drop", "Drop the field"
        RENAME = "rename", "Rename the field (value: new name)"
        DEFAULT = "default", "Set a default when absent (value: the default)"
        MAP = "map", "Map the field's value (value: {old: new})"

    class Method(models.TextChoices):
        ANY = "*", "Any method"
        GET = "GET", "GET"
        POST = "POST", "POST"
        PUT = "PUT", "PUT"
        PATCH = "PATCH", "PATCH"
        DELETE = "DELETE", "DELETE"

    class PatternType(models.TextChoices):
        GLOB = "glob", "Glob (* matches within and across segments)"
        REGEX = "regex", "Regular expression (full match)"

    service_type = models.CharField(
        max_length=64,
        validators=[RegexValidator(TYPE_PATTERN, "Type must be UPPER_SNAKE_CASE, e.g. PROJECT_COORDINATOR.")],
        help_text="Target service type, e.g. PROJECT_COORDINATOR.",
    )
    method = models.CharField(max_length=8, choices=Method.choices, default=Method.ANY)
    endpoint_pattern = models.CharField(
        max_length=500, help_text="Path of the call, e.g. /projects or /projects/*."
    )
    pattern_type = models.CharField(max_length=8, choices=PatternType.choices, default=PatternType.GLOB)
    order = models.PositiveIntegerField(default=100, help_text="Lower runs first.")
    action = models.CharField(max_length=8, choices=Action.choices)
    field = models.CharField(
        max_length=200, help_text="Body field; dots reach into nested objects (metadata.version)."
    )
    value = models.JSONField(
        null=True, blank=True,
        help_text='rename: the new name ("project_status"); default: any JSON value; '
        'map: an object {"PLANNING": "DRAFT"}; drop: leave empty.',
    )
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=300, blank=True, help_text="Why this rule exists.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "request adapter rule"
        ordering = ["service_type", "order", "id"]
        indexes = [
            # adapt_request's cache refresh: the enabled rules, by target type, in order.
            models.Index(fields=["enabled", "service_type", "order"], name="registry_adapter_rules"),
        ]

    def __str__(self) -> str:
        return f"{self.service_type} {self.method} {self.endpoint_pattern}: {self.action} {self.field}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        errors: dict[str, str] = {}
        from registry.patterns import PatternError, pattern_compile

        is_glob = self.pattern_type != self.PatternType.REGEX
        if is_glob and not self.endpoint_pattern.startswith(("/", "*")):
            errors["endpoint_pattern"] = "A glob pattern starts with / (or *)."
        else:
            try:
                pattern_compile(self.endpoint_pattern, glob=is_glob)
            except PatternError as exc:
                errors["endpoint_pattern"] = (
                    f"Not a pattern RE2 can match in linear time ({exc}). Use RE2 syntax: "
                    "backreferences and lookaround are not supported."
                )
        if self.action == self.Action.RENAME and not (isinstance(self.value, str) and self.value.strip()):
            errors["value"] = "rename needs the new field name as a JSON string, e.g. \"project_status\"."
        elif self.action == self.Action.MAP and not isinstance(self.value, dict):
            errors["value"] = 'map needs a JSON object, e.g. {"PLANNING": "DRAFT"}.'
        if errors:
            raise ValidationError(errors)
