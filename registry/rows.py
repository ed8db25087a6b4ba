"""Service rows read and written by fixed SQL text: the write and discovery hot paths.

The ORM compiles a query on every call: ``Service.objects.filter(name=…, url=…).first()``
cost 0.90 ms of CPU against 0.17 ms for the same SELECT through a cursor, and an ORM
``update()`` of one column 0.60 ms against 0.26 ms (one process, 3,000 calls each, on the
shared 2-core machine under load; docs/benchmarks.md, "At scale", run 4).
A re-registration, a heartbeat and a discovery pick each do one such read, so the text
is built once per process from the model's metadata and each call only binds values.

Portable: the same text runs on PostgreSQL and SQLite through Django's cursor (so query
capture in tests and debug still records it), and values pass through the same
converters the ORM applies (``connection.ops.get_db_converters`` and the fields' own, e.g.
JSON text to objects, SQLite's datetimes), so a row built here equals the ORM's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import connections, router

from registry.models import Service

_FIELDS = Service._meta.concrete_fields
_ATTNAMES = [f.attname for f in _FIELDS]
TABLE = Service._meta.db_table
COLUMNS = ", ".join(f'"{TABLE}"."{f.column}"' for f in _FIELDS)

# (vendor, alias) -> [(index, [converters], expression)]
_converters: dict[tuple[str, str], list] = {}


def _converters_for(alias: str) -> list:
    connection = connections[alias]
    cache_key = (connection.vendor, alias)
    found = _converters.get(cache_key)
    if found is None:
        found = []
        for index, field in enumerate(_FIELDS):
            column = field.get_col(TABLE)
            convs = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            if convs:
                found.append((index, convs, column))
        _converters[cache_key] = found
    return found


def services_from_rows(alias: str, rows: Sequence[Sequence], *, skip: int = 0) -> list[Service]:
    """Model instances from rows whose columns ``skip:`` are ``COLUMNS`` in order."""
    connection = connections[alias]
    converters = _converters_for(alias)
    out = []
    for row in rows:
        values = list(row[skip:]) if skip else list(row)
        for index, convs, column in converters:
            value = values[index]
            for convert in convs:
                value = convert(value, column, connection)
            values[index] = value
        out.append(Service.from_db(alias, _ATTNAMES, values))
    return out


_BY_PK = f'SELECT {COLUMNS} FROM "{TABLE}" WHERE "{TABLE}"."id" = %s'
_BY_IDENTITY = f'SELECT {COLUMNS} FROM "{TABLE}" WHERE "{TABLE}"."name" = %s AND "{TABLE}"."url" = %s'
_HEARTBEAT = f'UPDATE "{TABLE}" SET "last_heartbeat_at" = %s WHERE "{TABLE}"."id" = %s'


def _one(sql: str, params: list) -> Service | None:
    alias = router.db_for_read(Service)
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return services_from_rows(alias, rows)[0] if rows else None


def service_by_pk(pk: int) -> Service | None:
    """The service with this id, or None: one primary-key read."""
    return _one(_BY_PK, [pk])


def service_by_identity(name: str, url: str) -> Service | None:
    """The service registered as (name, url), or None: one read on the identity's unique index."""
    return _one(_BY_IDENTITY, [name, url])


def service_heartbeat_set(pk: int, at: datetime) -> bool:
    """``UPDATE … SET last_heartbeat_at`` of one row, nothing else (False: the row is gone).

    The one column it sets is in no index and no watched column (migration 0008), so on
    PostgreSQL the update can stay on the row's page (a HOT update, no index entries).
    """
    alias = router.db_for_write(Service)
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(_HEARTBEAT, [connection.ops.adapt_datetimefield_value(at), pk])
        return cursor.rowcount > 0
