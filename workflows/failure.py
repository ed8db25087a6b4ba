"""What an operator reads first on a failed run: the step, the service, the status, and why.

The engine's ``WorkflowRun.error`` names the step and the HTTP status; the cause in
the service's own words sits in the last attempt's response body. This module pulls
it out (a JSON ``error`` / ``detail`` / ``message``, else the body's first line) so
the run page can lead with it. Read-only: nothing here changes a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from workflows.models import RunStatus, StepAttempt, StepRun, StepStatus, WorkflowRun

# Keys services put their error text under, most specific first: the guide's
# Project Coordinator answers {"detail": "Internal Server Error", "error": "<the cause>"}.
_ERROR_KEYS = ("error", "detail", "message", "error_message", "reason")
CAUSE_MAX_CHARS = 500


@dataclass(frozen=True)
class FailureHeadline:
    step: str
    service: str  # the instance called, else the step's service type
    http_status: int | None
    request: str  # "POST /projects", or "" when nothing was sent
    cause: str  # the service's own words, else the engine's error
    attempts: int


def service_error_text(body: str | None, *, status: int | None = None) -> str:
    """The error a service put in its answer: JSON ``error``/``detail``/``message``, else the first line.

    A value that only repeats the status's reason phrase ("Internal Server Error") is
    passed over for a more specific one next to it.
    """
    text = (body or "").strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        found = _messages(data)
        phrase = _phrase(status)
        specific = [m for m in found if m.lower() != phrase]
        if specific or found:
            return _cut("; ".join(dict.fromkeys(specific or found)))
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return _cut(first)


def _messages(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in _ERROR_KEYS:
        value = data.get(key)
        if isinstance(value, dict):  # {"error": {"message": "…", "code": …}}
            out += _messages(value)
        elif isinstance(value, list):
            out += [str(v) for v in value if isinstance(v, str | int | float) and str(v).strip()]
        elif isinstance(value, str | int | float) and str(value).strip() and not isinstance(value, bool):
            out.append(str(value).strip())
    return out


def _phrase(status: int | None) -> str:
    try:
        return HTTPStatus(status).phrase.lower() if status else ""
    except ValueError:
        return ""


def _cut(text: str) -> str:
    return text if len(text) <= CAUSE_MAX_CHARS else text[: CAUSE_MAX_CHARS - 1] + "…"


def failure_headline(*, run: WorkflowRun, steps: Iterable[StepRun]) -> FailureHeadline | None:
    """The failed run's headline, from its failed step's last attempt (attempts prefetched or not)."""
    if run.status != RunStatus.FAILED:
        return None
    steps = list(steps)
    step = next((s for s in steps if s.name == run.failed_step), None) or next(
        (s for s in steps if s.status == StepStatus.FAILED), None)
    if step is None:
        return FailureHeadline(step=run.failed_step, service="", http_status=None, request="",
                               cause=run.error, attempts=0)
    attempts: list[StepAttempt] = sorted(step.attempts.all(), key=lambda a: a.number)
    last = attempts[-1] if attempts else None
    if last is None:
        return FailureHeadline(step=step.name, service=step.service_type, http_status=None, request="",
                               cause=step.error or run.error, attempts=0)
    cause = service_error_text(last.response_body, status=last.response_status) if last.response_status else ""
    request = ""
    if last.request_method:
        request = f"{last.request_method} {urlsplit(last.request_url).path or last.request_url}"
    return FailureHeadline(
        step=step.name, service=last.service_name or step.service_type, http_status=last.response_status,
        request=request, cause=cause or last.error or step.error or run.error, attempts=len(attempts),
    )
