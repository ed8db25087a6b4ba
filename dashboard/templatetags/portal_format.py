"""``{{ value|pretty_json }}`` / ``{{ value|compact_json }}``: stored JSON as JSON text, never a Python repr."""

from __future__ import annotations

from django import template

from berrys_portal.formatting import json_compact, json_pretty

register = template.Library()


@register.filter
def pretty_json(value) -> str:
    return json_pretty(value)


@register.filter
def compact_json(value) -> str:
    return json_compact(value)
