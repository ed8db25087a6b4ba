"""Workflow definitions: durable multi-step operations across services, declared in code.

A definition says *what* a workflow does; the engine (``workflows.engine``) runs it:
one Celery task per step attempt, every state change persisted in PostgreSQL, retries,
fallbacks and operator actions included. Definition modules live in this package (one
module per workflow, e.g. ``workflows/definitions/project_planning.py``) and call
``register(...)`` at import time; the registry imports them on first use.

Example::

    from registry.types import ServiceType
    from workflows.definitions import HumanSpec, RetryPolicy, Step, Workflow, register

    register(Workflow(
        name="project_planning",            # lower_snake_case, unique
        version=1,                          # a run pins (name, version)
        description="Plan a project: strategic plan, tactical plan, agents.",
        required_inputs=("project_id",),    # missing keys -> 400 naming them
        steps=[
            Step(
                name="get_project",
                service_type=ServiceType.PROJECT_COORDINATOR,
                method="GET",
                path="/projects/{project_id}",           # formatted from the context
                read_response=lambda ctx, body: {"project": body},
            ),
            Step(
                name="strategic_plan",
                service_type=ServiceType.PLANNING_SYSTEM,
                path="/plans/strategic",                 # method defaults to POST
                build_request=lambda ctx: {"project_id": ctx["project_id"]},
                read_response=lambda ctx, body: {"strategic_plan": body},
                required=False,                          # optional service
                fallback=lambda ctx: {"strategic_plan": {"phases": [], "fallback": True}},
                retry=RetryPolicy(max_attempts=4, initial_delay=0.5, backoff=2, max_delay=10),
                timeout=5.0,                             # per HTTP try, seconds
            ),
            Step(name="summarise", kind="local",
                 local=lambda ctx: {"summary": f"{len(ctx['strategic_plan']['phases'])} phases"}),
            Step(name="approve", kind="human",
                 human=HumanSpec(prompt="Approve the plan?", timeout=3600, on_timeout="fail")),
        ],
    ))

The context
    A run's context is a dict: the run's input, then each finished step's output merged
    in step order (later keys win). Every callable receives it read-only; treat it as
    immutable. Values must be JSON-serialisable (they are stored in PostgreSQL).

Step fields
    ``name``            unique within the workflow (letters, digits, ``_``, ``-``).
    ``kind``            ``"http"`` (default): call a service through ``registry.client``;
                        ``"local"``: run ``local(ctx) -> dict | None`` in the worker;
                        ``"human"``: wait for an answer (admin or ``POST .../signal``).
    ``service_type``    http: the service TYPE to discover (``PLANNING_SYSTEM``).
    ``method``/``path`` http: method (default POST) and a path template,
                        ``str.format``-ed from the context (``"/projects/{project_id}"``).
    ``build_request``   http: ``callable(ctx) -> body`` (JSON); default: no body.
    ``read_response``   ``callable(ctx, body) -> dict | None`` merged into the context;
                        default ``{step.name: body}``. For human steps it receives the
                        answer's data.
    ``required``        ``False`` makes the step optional: when it cannot complete it is
                        skipped (status ``skipped``) and the run goes on.
    ``fallback``        ``callable(ctx) -> dict | None``: when the step cannot complete
                        (service not found, none eligible, breaker open, retries spent,
                        a non-retryable error) its output replaces the response (status
                        ``fallback``). Returning ``None`` means "no fallback after all".
                        Without a usable fallback a required step fails the run with a
                        message in the guide's wording, e.g.
                        ``Step strategic_plan: Service not found: No service of type PLANNING_SYSTEM found``.
    ``retry``           ``RetryPolicy(max_attempts, initial_delay, backoff, max_delay,
                        non_retryable)``; each try is a persisted ``StepAttempt``. Service
                        not found / none eligible / breaker open are never retried (they
                        go straight to fallback / skip / fail). Use ``NO_RETRY`` for one try.
    ``timeout``         http: seconds per try (default: the client's).
    ``local``           local: ``callable(ctx) -> dict | None``; an exception is a failed
                        attempt (retried per ``retry``).
    ``human``           human: ``HumanSpec(prompt, timeout=None, on_timeout="fail" |
                        "skip" | "continue", default_answer={})``.

Registry
    ``register(workflow, replace=False)``, ``get(name, version=None)`` (latest by default;
    raises ``UnknownWorkflow``), ``all()`` (latest of each), ``all_versions()``,
    ``unregister(name, version=None)`` (tests).
"""

from __future__ import annotations

from workflows.definitions.base import (
    NO_RETRY,
    Context,
    DefinitionError,
    HumanSpec,
    Output,
    RetryPolicy,
    Step,
    Workflow,
)
from workflows.definitions.registry import (
    UnknownWorkflow,
    all,  # noqa: A004
    all_versions,
    autodiscover,
    get,
    register,
    unregister,
)

__all__ = [
    "NO_RETRY",
    "Context",
    "DefinitionError",
    "HumanSpec",
    "Output",
    "RetryPolicy",
    "Step",
    "UnknownWorkflow",
    "Workflow",
    "all",
    "all_versions",
    "autodiscover",
    "get",
    "register",
    "unregister",
]
