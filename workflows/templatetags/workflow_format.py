"""``{{ attempt|service_error }}``: the error text a service put in its answer (workflows.failure)."""

from __future__ import annotations

from django import template

from workflows.failure import service_error_text

register = template.Library()


@register.filter
def service_error(attempt) -> str:
    if not attempt.response_status or attempt.response_status < 400:
        return ""
    return service_error_text(attempt.response_body, status=attempt.response_status)
