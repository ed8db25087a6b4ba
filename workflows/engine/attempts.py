"""One try of a step: the call as the ServiceClient recorded it, and the engine's verdict.

The HTTP facts have one type, the client's ``CallInfo`` (what was sent, to which instance,
what came back, how long it took); the engine adds only what is not about the call: when
the try started and ended, its outcome, the error in the guide's words, and the "sent"
``StepAttempt`` row the claim wrote for it. ``attempt_fields`` turns it into that row's
columns for both write paths (the boundary statement and the ORM).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings

from berrys_portal.json_input import text_scrub
from registry.client import CallInfo
from workflows.engine.claims import worker_id


@dataclass
class Attempt:
    started_at: datetime
    # The try's call as the client recorded it; before (or without) an answer from the client,
    # what the step meant to send: method and path.
    call: CallInfo
    attempt_id: int | None  # the "sent" row written by the claim, completed by the decision
    # The body the step built, as the run page shows it (the call's ``request_body`` is the
    # same after the service's request adapter, i.e. what went on the wire).
    payload: Any = None
    finished_at: datetime | None = None
    error: str = ""
    outcome: str = ""


def _truncate(body: Any) -> str:
    if body is None:
        return ""
    text = text_scrub(body) if isinstance(body, str) else json.dumps(body, default=str)
    limit = settings.WORKFLOW_RESPONSE_BODY_LIMIT
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def jsonable(value: Any) -> Any:
    """Request bodies are stored as JSON; anything odd is stored as its text."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def attempt_fields(attempt: Attempt) -> dict[str, Any]:
    """The ``StepAttempt`` columns of a finished try."""
    call = attempt.call
    return dict(
        service_id=call.service_id, service_name=call.service_name[:200], request_method=call.method[:10],
        request_url=call.url[:2000], request_body=attempt.payload, response_status=call.status,
        response_body=_truncate(call.body), latency_ms=call.latency_ms, error=attempt.error,
        outcome=attempt.outcome, worker=worker_id()[:200], started_at=attempt.started_at,
        finished_at=attempt.finished_at,
    )
