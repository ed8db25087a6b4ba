"""How the operator pages show stored JSON: indented JSON text, never a Python repr."""

from __future__ import annotations

import json
from typing import Any

from django.forms.fields import InvalidJSONInput
from django.utils.html import format_html
from django.utils.safestring import SafeString

from berrys_portal.json_input import CheckedJSONFormField


def json_pretty(value: Any) -> str:
    """``value`` as indented JSON. A string holding JSON (a stored response body) is
    re-indented; any other string is returned as it is; ``None`` is ``""``."""
    if value is None:
        return ""
    if isinstance(value, str | bytes):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        try:
            value = json.loads(text)
        except ValueError:
            return text
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def json_compact(value: Any) -> str:
    """``value`` as one line of JSON (for a preview); ``None`` is ``""``."""
    return "" if value is None else json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def json_block(value: Any, *, css_class: str = "bp-json") -> SafeString:
    """A ``<pre>`` holding ``json_pretty(value)`` (escaped), for admin readonly fields."""
    return format_html('<pre class="{}">{}</pre>', css_class, json_pretty(value))


class PrettyJSONField(CheckedJSONFormField):
    """The admin's JSON form field (the API's JSON input rule, berrys_portal.json_input) whose
    textarea starts with indented JSON (Django's is one line)."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value  # the operator's own text, shown back with its error
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)
