"""ServiceClient: the one way the portal calls another service.

discovery by type → request adapter → circuit breaker → HTTP with a timeout →
retries for transient failures → typed errors. Every call returns (or raises
with) ``CallInfo`` describing what was sent and received, so the workflow engine
can store it as a ``StepAttempt``.

The interface mirrors the integration guide::

    svc = service_discovery.get_service_by_type(ServiceType.PLANNING_SYSTEM)
    result = service_client.post(service=svc, endpoint="/plans/strategic", data={...})

Retries: only transient failures (connection errors, timeouts, 502/503/504)
are retried, with exponential backoff and full jitter
(``uniform(0, min(cap, base * 2**n))``), and only for idempotent methods unless
the caller passes ``idempotent=True``. ``retries=0`` means exactly one try.

Two ways to call: ``request`` (and ``get``/``post``/…) returns a ``CallResult`` or
raises the typed error, which carries ``.call`` (the last try, or None when nothing
was sent) and ``.tries`` (every try) as the integration guide describes; ``call``
returns a ``CallOutcome`` value either way (result or error, with the tries beside
them), for callers that record every try — the workflow engine stores its
``CallInfo`` as the step's attempt.

(About 400 lines: one call path — discovery, breaker, send, retry, errors — kept together
so its order is read in one place.)
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from django.conf import settings

from berrys_portal.errors import (
    CircuitOpenError,
    NoEligibleServiceError,
    PortalError,
    ServiceConnectionError,
    ServiceNotFoundError,
    ServiceResponseError,
)
from registry import egress
from registry.adapters import adapt_request
from registry.breakers import CLOSED, Permit, Snapshot, breaker_for, breaker_snapshots
from registry.discovery import recent_instances, service_candidates, service_pick
from registry.models import Service
from registry.transport import DeadlineExceeded, ResponseTooLarge, call_send

logger = logging.getLogger(__name__)

__all__ = [
    "CallInfo",
    "CallOutcome",
    "CallResult",
    "ServiceClient",
    "ServiceDiscovery",
    "service_client",
    "service_discovery",
    "CircuitOpenError",
    "NoEligibleServiceError",
    "ServiceConnectionError",
    "ServiceNotFoundError",
    "ServiceResponseError",
    "TRANSIENT_STATUSES",
]

WORKER_HOSTNAME = socket.gethostname()
# Not answers a caller can use: interim/upgrade answers and "not modified".
UNFORWARDABLE = frozenset({100, 101, 102, 103, 304})


class UnusableAnswerError(ServiceConnectionError):
    """The service answered with a redirect, an interim/upgrade answer or 304 (502 in the API)."""

    code = "unusable_upstream_answer"


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, egress.EgressDenied):
        return "Refused by the egress policy"
    if isinstance(exc, egress.EgressLookupError):
        return "Name does not resolve"
    if isinstance(exc, DeadlineExceeded | requests.Timeout):
        return "Timeout"
    if isinstance(exc, ResponseTooLarge):
        return "Answer too large"
    return "Connection error"
TRANSIENT_STATUSES = frozenset({502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass
class CallInfo:
    """What one HTTP try sent and received: the one record of an attempt's call, kept by
    the workflow engine as its ``StepAttempt`` (and attached to errors as ``.call``)."""

    method: str
    url: str
    request_body: Any = None
    service_id: int | None = None
    service_name: str = ""
    status: int | None = None
    body: Any = None
    latency_ms: float | None = None
    error: str = ""
    started_at: float = field(default_factory=time.time)
    attempt: int = 1
    trial: bool = False  # this try was the breaker's half-open trial


@dataclass
class CallResult:
    status: int
    body: Any
    latency_ms: float
    service: Service
    call: CallInfo
    tries: list[CallInfo]


@dataclass
class CallOutcome:
    """What ``ServiceClient.call`` did: a result or an error (never both), and the tries."""

    result: CallResult | None
    error: PortalError | None
    call: CallInfo | None  # the last try; None when nothing was sent
    tries: list[CallInfo]


def _failed(error: PortalError, call: CallInfo | None, tries: list[CallInfo],
            cause: BaseException | None = None) -> CallOutcome:
    if cause is not None:
        error.__cause__ = cause
    return CallOutcome(result=None, error=error, call=call, tries=list(tries))


def _attach(error: PortalError, call: CallInfo | None, tries: list[CallInfo]) -> PortalError:
    error.call = call
    error.tries = list(tries)
    return error


class ServiceDiscovery:
    def get_service_by_type(self, service_type: str) -> Service:
        try:
            return service_pick(service_type=service_type)
        except (ServiceNotFoundError, NoEligibleServiceError) as exc:
            raise _attach(exc, None, []) from None


class ServiceClient:
    """Calls a service by type or instance. Thread-safe; one Session per thread.

    ``sleep`` and ``rand`` are injectable so tests can check the retry schedule
    without waiting for it.
    """

    def __init__(
        self,
        *,
        default_timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ):
        self.default_timeout = default_timeout
        self.sleep = sleep
        self.rand = rand
        # Breaker states read with the recent view of the registry: per type, (read at, the
        # view's instance objects, their snapshots). See ``_permit``.
        self._breaker_views: dict[str, tuple[float, list[Service], dict[int, Snapshot]]] = {}

    # --- retry policy -----------------------------------------------------------------

    @staticmethod
    def _settings() -> tuple[int, float, float]:
        return (
            getattr(settings, "SERVICE_CLIENT_RETRIES", 2),
            getattr(settings, "SERVICE_CLIENT_BACKOFF_BASE_SECONDS", 0.2),
            getattr(settings, "SERVICE_CLIENT_BACKOFF_CAP_SECONDS", 5.0),
        )

    def backoff_delay(self, retry_number: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**retry_number))."""
        _, base, cap = self._settings()
        return self.rand() * min(cap, base * (2 ** retry_number))

    # --- instance selection ------------------------------------------------------------

    def _candidates(self, service: Service | str) -> list[Service]:
        """The instance to call first, then the other eligible ones (failover when open)."""
        if isinstance(service, Service):
            return [service]
        return service_candidates(service_type=service,
                                  max_age=settings.SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS)

    def _breaker_view(self, service_type: str, candidates: list[Service], max_age: float) -> dict[int, Snapshot]:
        """The candidates' breaker states, read once per view of the registry (one pipelined
        round trip for all of them), not once per call.

        Tied to the registry view by identity: the view's instance objects are new whenever
        it is read again — after ``max_age``, or at once when this process changed a service,
        a health sweep here wrote, or a call failed — and then so are these states.
        """
        instances = sorted(candidates, key=lambda s: s.pk)
        now = time.monotonic()
        view = self._breaker_views.get(service_type)
        if (view is not None and now - view[0] < max_age and len(view[1]) == len(instances)
                and all(a is b for a, b in zip(view[1], instances, strict=True))):
            return view[2]
        snapshots = breaker_snapshots([s.pk for s in instances])
        self._breaker_views[service_type] = (now, instances, snapshots)
        return snapshots

    def _breaker_view_forget(self, service_type: str) -> None:
        self._breaker_views.pop(service_type, None)

    def _permit(self, candidates: list[Service], *, by_type: bool) -> tuple[Service, Permit] | None:
        """The first candidate whose breaker lets a call through.

        Called by type, a breaker seen closed with no failures counted at most
        ``SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS`` ago (and less than its reset timeout ago)
        lets the call through without asking the store: the same staleness as the client's
        view of the registry — a breaker another process opened within that second is seen
        at the next read, one this process's own calls open is seen at once (a failure
        forgets the view). Every other state asks the store's atomic ``acquire``, so the
        half-open trial stays one at a time: a view younger than the reset timeout cannot
        hide a half-open breaker (closed → open → half-open takes a reset timeout).
        """
        max_age = settings.SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS if by_type else 0
        view = self._breaker_view(candidates[0].type, candidates, max_age) if max_age > 0 else {}
        for instance in candidates:
            breaker = breaker_for(instance)
            seen = view.get(instance.pk)
            if (seen is not None and seen.state == CLOSED and not seen.fail_counter and not seen.trial_held
                    and max_age < breaker.config.reset_timeout):
                return instance, Permit(breaker, clean=True)
            permit = breaker.acquire()
            if permit is not None:
                return instance, permit
        return None

    # --- the call ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        *,
        service: Service | str,
        endpoint: str,
        data: Any = None,
        params: dict | None = None,
        timeout: float | None = None,
        headers: dict | None = None,
        idempotent: bool | None = None,
        retries: int | None = None,
        max_body: int | None = None,
    ) -> CallResult:
        """Call and return the result, or raise its typed error (with ``.call`` and ``.tries``)."""
        outcome = self.call(method, service=service, endpoint=endpoint, data=data, params=params, timeout=timeout,
                            headers=headers, idempotent=idempotent, retries=retries, max_body=max_body)
        if outcome.error is not None:
            raise _attach(outcome.error, outcome.call, outcome.tries)
        return outcome.result

    def call(
        self,
        method: str,
        *,
        service: Service | str,
        endpoint: str,
        data: Any = None,
        params: dict | None = None,
        timeout: float | None = None,
        headers: dict | None = None,
        idempotent: bool | None = None,
        retries: int | None = None,
        max_body: int | None = None,
    ) -> CallOutcome:
        """Call, retrying transient failures; returns what happened as a value (never raises
        the portal's errors: they are ``CallOutcome.error``)."""
        method = method.upper()
        default_retries, _, _ = self._settings()
        retries = default_retries if retries is None else max(0, retries)
        may_retry = idempotent if idempotent is not None else method in IDEMPOTENT_METHODS
        tries: list[CallInfo] = []

        for attempt in range(1, retries + 2):
            try:
                candidates = self._candidates(service)
            except (ServiceNotFoundError, NoEligibleServiceError) as exc:
                return _failed(exc, tries[-1] if tries else None, tries)
            service_type = candidates[0].type
            body = adapt_request(service_type=service_type, method=method, endpoint=endpoint, data=data)

            picked = self._permit(candidates, by_type=not isinstance(service, Service))
            if picked is None:
                recent_instances.forget(service_type)
                self._breaker_view_forget(service_type)
                names = ", ".join(s.name for s in candidates)
                return _failed(CircuitOpenError(f"Circuit breaker open for {names}; the call was not sent"),
                               tries[-1] if tries else None, tries)
            instance, permit = picked
            breaker = permit.breaker
            url = instance.url.rstrip("/") + "/" + endpoint.lstrip("/")
            call = CallInfo(
                method=method, url=url, request_body=body, service_id=instance.pk,
                service_name=instance.name, attempt=attempt, trial=permit.trial,
            )
            tries.append(call)
            call_timeout = timeout or self.default_timeout or breaker.config.call_timeout
            started = time.perf_counter()
            try:
                response = call_send(
                    method, url, json_body=body, params=params, headers=headers,
                    deadline_seconds=call_timeout, max_body=max_body or settings.SERVICE_CLIENT_MAX_BODY_BYTES,
                )
            except (requests.RequestException, egress.EgressDenied, egress.EgressLookupError,
                    DeadlineExceeded, ResponseTooLarge) as exc:
                call.latency_ms = (time.perf_counter() - started) * 1000
                kind = _failure_kind(exc)
                # What callers see names the category and our own words, never bytes from the
                # peer (a requests error can quote a banner: "BadStatusLine('SSH-2.0-…')").
                # The raw error goes to the log only.
                ours = not isinstance(exc, requests.RequestException)
                call.error = f"{kind}: {exc}" if ours else f"{kind}: {type(exc).__name__}"
                logger.warning("%s %s failed: %s: %s: %s (try %d)", method, url, kind, type(exc).__name__,
                               exc, attempt, extra={"service": instance.name})
                breaker.failed(permit, call.error)
                recent_instances.forget(service_type)  # a retry sees the registry as it is now
                self._breaker_view_forget(service_type)
                transient = isinstance(exc, requests.RequestException | DeadlineExceeded)
                if transient and may_retry and attempt <= retries:
                    self.sleep(self.backoff_delay(attempt - 1))
                    continue
                return _failed(
                    ServiceConnectionError(f"Could not reach {instance.name} ({url}): {call.error[0].lower()}"
                                           f"{call.error[1:]}"),
                    call, tries, cause=exc,
                )

            call.latency_ms = (time.perf_counter() - started) * 1000
            call.status = response.status
            call.body = response.decoded()
            # extra= tags the line with the instance (run_id/step_id come from log_context).
            logger.info("%s %s -> HTTP %s in %.0f ms (try %d)", method, url, response.status,
                        call.latency_ms, attempt, extra={"service": instance.name})
            if response.status in UNFORWARDABLE or 300 <= response.status < 400:
                # The service answered (it is up), but nothing a caller can use: interim and
                # upgrade answers, "not modified" to a request that asked for nothing, and
                # redirects — which the portal never follows.
                breaker.succeeded(permit)
                if 300 <= response.status < 400 and response.status != 304:
                    what = f"a redirect (HTTP {response.status} to {response.location_host})"
                else:
                    what = f"HTTP {response.status}"
                call.error = f"unusable answer: {what}"
                return _failed(UnusableAnswerError(
                    f"{instance.name} answered {what} to {method} {endpoint}; the portal does not "
                    "follow redirects or forward interim answers"), call, tries)
            if response.status < 400:
                breaker.succeeded(permit)
                result = CallResult(
                    status=response.status, body=call.body, latency_ms=call.latency_ms,
                    service=instance, call=call, tries=tries,
                )
                return CallOutcome(result=result, error=None, call=call, tries=list(tries))
            call.error = f"HTTP {response.status}"
            if response.status >= 500:
                # The service is failing: counts toward tripping its breaker.
                breaker.failed(permit, call.error)
                recent_instances.forget(service_type)
                self._breaker_view_forget(service_type)
            else:
                # A 4xx is the caller's problem; the service answered, so it is up.
                breaker.succeeded(permit)
            if response.status in TRANSIENT_STATUSES and may_retry and attempt <= retries:
                self.sleep(self.backoff_delay(attempt - 1))
                continue
            return _failed(
                ServiceResponseError(
                    f"{instance.name} answered HTTP {response.status} to {method} {endpoint}",
                    status=response.status, body=call.body,
                ),
                call, tries,
            )
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def get(self, *, service, endpoint, params=None, **kw) -> CallResult:
        return self.request("GET", service=service, endpoint=endpoint, params=params, **kw)

    def post(self, *, service, endpoint, data=None, **kw) -> CallResult:
        return self.request("POST", service=service, endpoint=endpoint, data=data, **kw)

    def put(self, *, service, endpoint, data=None, **kw) -> CallResult:
        return self.request("PUT", service=service, endpoint=endpoint, data=data, **kw)

    def patch(self, *, service, endpoint, data=None, **kw) -> CallResult:
        return self.request("PATCH", service=service, endpoint=endpoint, data=data, **kw)

    def delete(self, *, service, endpoint, **kw) -> CallResult:
        return self.request("DELETE", service=service, endpoint=endpoint, **kw)


service_discovery = ServiceDiscovery()
service_client = ServiceClient()
