"""Structured logging: who (run, step, service) every log line is about.

The engine, the health sweep and the service client wrap their work in
``log_context(run_id=..., step_id=..., service=...)``; ``ContextFilter`` copies
the current values onto every record, and ``JsonFormatter`` (``LOG_FORMAT=json``)
writes one JSON object per line::

    {"time": "...Z", "level": "INFO", "logger": "workflows.engine",
     "message": "step succeeded", "run_id": "…", "step_id": 12, "service": "planning-1"}

Context lives in ``contextvars``, so it follows threads and asyncio tasks
correctly and nested contexts restore the outer values on exit.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("run_id", "step_id", "service")

# Values are never mutated in place (log_context sets a new dict), so one shared
# empty default is safe; None keeps linters happy about a mutable default.
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "berrys_log_context", default=None
)

_UNSET = object()


@contextmanager
def log_context(
    *, run_id: Any = _UNSET, step_id: Any = _UNSET, service: Any = _UNSET
) -> Iterator[None]:
    """Attach run/step/service to every log line written inside the block.

    Only the arguments given are changed; the others keep the outer values.
    ``None`` clears a field for the block.
    """
    current = dict(_context.get() or {})
    for name, value in (("run_id", run_id), ("step_id", step_id), ("service", service)):
        if value is _UNSET:
            continue
        if value is None:
            current.pop(name, None)
        else:
            current[name] = str(value) if name == "run_id" else value
    token = _context.set(current)
    try:
        yield
    finally:
        _context.reset(token)


def log_context_update(**fields: Any) -> None:
    """Add fields to the current context without opening a block.

    Only inside a ``log_context`` block (e.g. the Celery task wraps the call in one
    and the engine adds ``run_id`` once it has loaded the step): leaving that block
    discards these fields too, so nothing leaks into the next task.
    """
    current = dict(_context.get() or {})
    for name, value in fields.items():
        if name not in CONTEXT_FIELDS:
            raise TypeError(f"unknown log context field {name!r}")
        if value is None:
            current.pop(name, None)
        else:
            current[name] = str(value) if name == "run_id" else value
    _context.set(current)


def log_context_get() -> dict[str, Any]:
    """The current context (a copy): for passing to another thread explicitly."""
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # default=str: a log call must never fail because of an odd argument type.
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain format, with the context appended as key=value when present."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(
            f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS
            if getattr(record, name, None) is not None
        )
        return f"{line} [{extra}]" if extra else line


class QuietPollFilter(logging.Filter):
    """Drops the development server's access lines for routine polling that succeeded.

    A heartbeat every 10 s from each service and a client polling a run would
    otherwise be most of an idle demo's output; failed requests still show.
    """

    ROUTINE = ("/heartbeat ", "GET /workflows/runs/", "GET /registry/services")

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if status is None or int(status) >= 400:
            return True
        message = record.getMessage()
        return not any(part in message for part in self.ROUTINE)
