"""URL helpers shared by the apps."""

from __future__ import annotations

from django.urls import re_path


def slash_optional(pattern: str, view, name: str) -> list:
    """The same view at ``pattern`` and ``pattern/`` (no redirect: a redirected POST loses its body).

    Two routes rather than ``/?`` so the schema can list the slash-less form only
    (``registry.urls.schema_hide_trailing_slash_twins``).
    """
    return [re_path(rf"^{pattern}$", view, name=name), re_path(rf"^{pattern}/$", view)]
