"""Test-only workflow definitions, registered on import.

The test process imports this module; its Celery workers import it through the
``WORKFLOW_DEFINITION_MODULES`` setting. Never shipped in ``workflows/definitions/``.
"""

from __future__ import annotations

import os
import signal

from workflows.definitions import HumanSpec, RetryPolicy, Step, Workflow, register

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.2, backoff=2.0, max_delay=1.0)


def _fallback_plan(ctx):
    return {"plan": {"phases": ["fallback"], "fallback": True}}


DEMO = Workflow(
    name="test_demo",
    version=1,
    description="Three steps: create a project, plan it (optional, with fallback), assign agents.",
    required_inputs=("name",),
    steps=[
        Step(
            name="create_project",
            service_type="PROJECT_COORDINATOR",
            path="/projects",
            build_request=lambda ctx: {"name": ctx["name"]},
            read_response=lambda ctx, body: {"project_id": body["id"]},
            retry=FAST_RETRY,
            timeout=5.0,
        ),
        Step(
            name="plan",
            service_type="PLANNING_SYSTEM",
            path="/plans/strategic/{project_id}",
            build_request=lambda ctx: {"project_id": ctx["project_id"]},
            read_response=lambda ctx, body: {"plan": body},
            required=False,
            fallback=_fallback_plan,
            retry=FAST_RETRY,
            timeout=5.0,
        ),
        Step(
            name="assign_agents",
            service_type="AGENT_ORCHESTRATOR",
            path="/agents",
            build_request=lambda ctx: {"project_id": ctx["project_id"], "plan": ctx["plan"]},
            read_response=lambda ctx, body: {"agents": body},
            retry=FAST_RETRY,
            timeout=5.0,
        ),
    ],
)

# An optional step with no fallback: skipped when its service is unavailable.
SKIPPY = Workflow(
    name="test_skippy",
    version=1,
    steps=[
        Step(name="first", kind="local", local=lambda ctx: {"first": 1}),
        Step(name="notify", service_type="TOOL_INTEGRATION", path="/notify", required=False,
             retry=FAST_RETRY, timeout=5.0),
        Step(name="last", kind="local", local=lambda ctx: {"last": ctx["first"] + 1}),
    ],
)

HUMAN = Workflow(
    name="test_human",
    version=1,
    steps=[
        Step(name="prepare", kind="local", local=lambda ctx: {"prepared": True}),
        Step(name="approve", kind="human", human=HumanSpec(prompt="Approve?", timeout=600)),
        Step(name="finish", kind="local", local=lambda ctx: {"done": ctx["approve"]["ok"]}),
    ],
)


def _kill_my_worker(ctx):
    os.kill(os.getpid(), signal.SIGKILL)


# A step that kills the worker process every time it runs.
KILLER = Workflow(
    name="test_killer",
    version=1,
    steps=[Step(name="boom", kind="local", local=_kill_my_worker)],
)

# A retry delay longer than the broker's visibility timeout (the tests set it to 60 s).
SLOW_RETRY = Workflow(
    name="test_slow_retry",
    version=1,
    steps=[Step(name="call", service_type="PLANNING_SYSTEM", path="/slow",
                retry=RetryPolicy(max_attempts=2, initial_delay=120, max_delay=120), timeout=5.0)],
)

# The egress tests: one GET to a hostile upstream, its path from the input, no retry.
EGRESS_CALL = Workflow(
    name="test_egress_call",
    version=1,
    steps=[Step(name="call", service_type="HOSTILE_UPSTREAM", path="/{route}", method="GET",
                retry=RetryPolicy(max_attempts=1), timeout=float(os.environ.get("EGRESS_STEP_TIMEOUT", "1.5")))],
    required_inputs=("route",),
)

# Idempotency keys: the default header, a renamed one, none at all, and a service marked
# as unable to dedupe (the step still sends the key: it costs nothing and may help).
KEYS = Workflow(
    name="test_keys",
    version=1,
    steps=[
        Step(name="default", service_type="PROJECT_COORDINATOR", path="/k/default", timeout=5.0),
        Step(name="renamed", service_type="PROJECT_COORDINATOR", path="/k/renamed", timeout=5.0,
             idempotency_header="X-Request-Key"),
        Step(name="off", service_type="PROJECT_COORDINATOR", path="/k/off", timeout=5.0,
             idempotency_header=None),
        Step(name="no_dedupe", service_type="PROJECT_COORDINATOR", path="/k/no-dedupe", timeout=5.0,
             service_dedupes=False),
    ],
)

# One step that takes longer than the test worker's 5 s lease: the heartbeat must keep it.
LONG_STEP = Workflow(
    name="test_long_step",
    version=1,
    steps=[Step(name="slow", service_type="PLANNING_SYSTEM", path="/long", timeout=20.0,
                retry=RetryPolicy(max_attempts=1))],
)

ALL = [DEMO, SKIPPY, HUMAN, KILLER, SLOW_RETRY, EGRESS_CALL, KEYS, LONG_STEP]

for _wf in ALL:
    register(_wf, replace=True)
