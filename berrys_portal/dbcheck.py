"""One-line explanations for the database problems a new deployment meets first.

A missing database, a server that refuses connections, a wrong password or a
database nobody has migrated all surface as a driver traceback dozens of lines
long. ``manage.py`` and gunicorn's start-up hook turn them into one sentence
that says what to do (``--traceback`` still shows the original).
"""

from __future__ import annotations

import re

_HINT_MIGRATE = ".venv/bin/python manage.py migrate"


def _where() -> tuple[str, str, str, str]:
    """(vendor, name, host:port, user) of the default database, without the password."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    vendor = "SQLite" if "sqlite" in db["ENGINE"] else "PostgreSQL"
    host = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or '5432'}"
    return vendor, str(db["NAME"]), host, str(db.get("USER") or "")


def database_problem(exc: BaseException) -> str | None:
    """The one-line explanation for ``exc`` if it is a known database set-up problem, else None."""
    from django.db.utils import OperationalError, ProgrammingError

    if not isinstance(exc, OperationalError | ProgrammingError):
        return None
    text = " ".join(str(exc).split())
    vendor, name, host, user = _where()
    missing_db = re.search(r'database "([^"]+)" does not exist', text)
    if missing_db:
        user_flag = f" -U {user}" if user else ""
        hostname, port = host.rsplit(":", 1)
        return (f"Database error: the {vendor} database \"{missing_db.group(1)}\" does not exist on {host}. "
                f"Create it (createdb -h {hostname} -p {port}{user_flag} {missing_db.group(1)}), "
                f"then run {_HINT_MIGRATE}.")
    if "Connection refused" in text or "could not connect" in text or "timeout expired" in text:
        return (f"Database error: cannot connect to {vendor} at {host} ({_reason(text)}). "
                "Is the server running, and is DATABASE_URL right?")
    if re.search(r'password authentication failed|no password supplied|role "[^"]+" does not exist', text):
        return (f"Database error: {vendor} at {host} refused user \"{user}\" ({_reason(text)}). "
                "Check the user and password in DATABASE_URL.")
    missing_table = re.search(r'relation "([^"]+)" does not exist|no such table: (\S+)', text)
    if missing_table:
        table = missing_table.group(1) or missing_table.group(2)
        return (f"Database error: the {vendor} database \"{name}\" has no table {table}: "
                f"it has not been migrated. Run {_HINT_MIGRATE}.")
    if text.startswith("connection failed:"):
        return (f"Database error: cannot connect to {vendor} at {host} ({_reason(text)}). "
                "Check DATABASE_URL.")
    return None


def _reason(text: str) -> str:
    """The driver's own reason, without its 'connection to server at … failed:' preamble."""
    reason = re.sub(r"^.*failed:\s*", "", text)
    reason = re.sub(r"^FATAL:\s*", "", reason)
    return reason.split(" Is the server running")[0].strip() or text


def database_check() -> str | None:
    """Connect to the default database and look for Django's migration table.

    Returns the one-line problem, or None when the database answers and has been
    migrated at least once. Closes the connection it opened (the caller may fork).
    """
    from django.db import connection

    try:
        with connection.cursor():
            pass
        if "django_migrations" not in connection.introspection.table_names():
            _vendor, name, _host, _user = _where()
            return (f"Database error: the database \"{name}\" has no tables: it has not been "
                    f"migrated. Run {_HINT_MIGRATE}.")
    except Exception as exc:  # noqa: BLE001 - anything unexplained is re-raised below
        problem = database_problem(exc)
        if problem is None:
            raise
        return problem
    finally:
        connection.close()
    return None
