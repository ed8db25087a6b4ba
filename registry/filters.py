"""Filters of ``GET /registry/services`` (and the admin's), on PostgreSQL and SQLite.

The one vendor branch (a JSON list holding every given tag or capability) is forced, not
chosen for speed: Django's JSONField ``contains`` lookup is not supported on SQLite, and
``json_each`` exists only there. PostgreSQL uses ``jsonb @>`` (the lookup Django offers,
and the form a GIN index would serve if one is ever added; none is today). No bench figure
is claimed for it. Both branches run in the suite (``test_services_api``'s tag and
capability tests are marked ``both_dbs``).
"""

from __future__ import annotations

from django.db import connection
from django.db.models import QuerySet


def _json_list_contains_all(queryset: QuerySet, field: str, values: list[str]) -> QuerySet:
    """Rows whose JSON list ``field`` holds every one of ``values`` (ANDed)."""
    if not values:
        return queryset
    if connection.vendor == "postgresql":
        return queryset.filter(**{f"{field}__contains": list(values)})  # jsonb @>
    # SQLite has no JSON containment lookup in Django; json_each is its equivalent.
    table = queryset.model._meta.db_table
    for value in values:
        queryset = queryset.extra(  # noqa: S610 - fixed SQL, the value is a parameter
            where=[f'EXISTS (SELECT 1 FROM json_each("{table}"."{field}") WHERE json_each.value = %s)'],
            params=[value],
        )
    return queryset


def service_filter(
    queryset: QuerySet,
    *,
    type: str | None = None,  # noqa: A002 - the API's parameter name
    status: str | None = None,
    name: str | None = None,
    tag: list[str] | None = None,
    capability: list[str] | None = None,
    **_pagination,
) -> QuerySet:
    if type:
        queryset = queryset.filter(type=type)
    if status:
        queryset = queryset.filter(status=status)
    if name:
        queryset = queryset.filter(name__icontains=name)
    queryset = _json_list_contains_all(queryset, "tags", tag or [])
    return _json_list_contains_all(queryset, "capabilities", capability or [])
