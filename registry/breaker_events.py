"""Breaker transitions as ``BreakerEvent`` rows, written by the process that made them.

Written before the breaker call returns: inside the caller's transaction when it has
one; the health sweep collects a group's events and writes them in one statement.
Each write has the outbox task (``registry.outbox``) process the rows after commit,
which derives the breaker-trip alert. No thread holds a queued event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from django.db import DatabaseError, IntegrityError, transaction

from registry.breaker_rules import Transition
from registry.models import BreakerEvent, Service
from registry.outbox import outbox_kick

logger = logging.getLogger(__name__)

_collecting = threading.local()


@contextmanager
def breaker_events_collect() -> Iterator[list[BreakerEvent]]:
    """Hold back the event rows of the transitions made inside, for the caller to write in one
    statement (``breaker_events_write``): the health sweep does, once per group of results."""
    events: list[BreakerEvent] = []
    outer = getattr(_collecting, "events", None)
    _collecting.events = events
    try:
        yield events
    finally:
        _collecting.events = outer


def breaker_events_write(events: list[BreakerEvent]) -> None:
    """Write event rows in one statement and have the outbox process them after commit.

    Inside the caller's transaction when it has one. A service deleted meanwhile keeps its
    events by name (the link is cleared, as deletion does to older events).
    """
    if not events:
        return
    for attempt in range(2):
        live = set(Service.objects.filter(pk__in={e.service_id for e in events if e.service_id})
                   .values_list("pk", flat=True))
        for event in events:
            if event.service_id not in live:
                event.service_id = None
        try:
            with transaction.atomic():
                BreakerEvent.objects.bulk_create(events)
                outbox_kick()
            return
        except IntegrityError:
            if attempt:
                raise


def event_record(service_id: int, service_name: str, t: Transition, actor: str = "") -> None:
    if t.old == t.new:
        return
    logger.info("breaker %s (%s): %s -> %s %s", service_name, service_id, t.old, t.new, t.error)
    event = BreakerEvent(service_id=service_id, service_name=service_name, old_state=t.old, new_state=t.new,
                         at=datetime.now(UTC), last_error=t.error[:5000], actor=actor[:150])
    held = getattr(_collecting, "events", None)
    if held is not None:
        held.append(event)
        return
    try:
        breaker_events_write([event])
    except DatabaseError:  # recording must never take the caller down; the transition stands
        logger.exception("Could not record breaker transition of service %s", service_id)
