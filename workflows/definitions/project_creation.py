"""The guide's Project Creation workflow: the chat path.

The Web Dashboard's chat creates a project with ``status: "PLANNING"`` in the
body — the field the Project Coordinator rejects with a 500 (the guide's chat
bug). The request adapter shipped with the registry drops it on the way, so the
call succeeds. Then, when the Planning System and Agent Orchestrator are both
available (they are optional here, per the guide's dependency table), the
project is planned by starting a ``project_planning`` run for it.
"""

from __future__ import annotations

from typing import Any

from registry.types import ServiceType
from workflows.definitions import Step, Workflow, register
from workflows.definitions._berrys import BERRYS_RETRY, BERRYS_TIMEOUT


def dashboard_payload(ctx: dict[str, Any]) -> dict[str, Any]:
    """Exactly what the Web Dashboard's chat sends, status included."""
    return {
        "name": ctx["name"],
        "description": ctx.get("description", ""),
        "status": ctx.get("status", "PLANNING"),
    }


def start_planning(ctx: dict[str, Any]) -> dict[str, Any]:
    """Start ``project_planning`` for the new project, if its services are available."""
    # Imported here: the engine imports the definitions package at start-up.
    from berrys_portal.errors import NoEligibleServiceError, ServiceNotFoundError
    from registry.discovery import service_pick
    from workflows.engine import run_start

    unavailable = []
    for service_type in (ServiceType.PLANNING_SYSTEM, ServiceType.AGENT_ORCHESTRATOR):
        try:
            service_pick(service_type=service_type)  # one row, whatever the registry's size
        except (ServiceNotFoundError, NoEligibleServiceError) as exc:
            unavailable.append(exc.message)
    if unavailable:
        return {"planning": {"started": False, "reason": "; ".join(unavailable)}}
    # The key makes a retried step find the run it already started instead of a second one.
    run, _ = run_start(
        workflow="project_planning", input={"project_id": ctx["project_id"]},
        idempotency_key=f"project-creation:{ctx['project_id']}", triggered_by="workflow:project_creation",
    )
    return {"planning": {"started": True, "run_id": str(run.pk)}}


register(Workflow(
    name="project_creation",
    version=1,
    description="Create a project from the dashboard's chat payload, then plan it if the "
    "Planning System and Agent Orchestrator are available.",
    required_inputs=("name",),
    requires=(ServiceType.WEB_DASHBOARD, ServiceType.PROJECT_COORDINATOR),
    optional=(ServiceType.PLANNING_SYSTEM, ServiceType.AGENT_ORCHESTRATOR),
    callers=(ServiceType.WEB_DASHBOARD,),
    steps=[
        Step(
            name="create_project",
            service_type=ServiceType.PROJECT_COORDINATOR,
            method="POST",
            path="/projects",
            build_request=dashboard_payload,
            read_response=lambda ctx, body: {"project_id": body["id"], "project": body},
            retry=BERRYS_RETRY,
            timeout=BERRYS_TIMEOUT,
            description="POST /projects with the dashboard's payload (status: PLANNING).",
        ),
        Step(
            name="start_planning",
            kind="local",
            local=start_planning,
            uses=(ServiceType.PLANNING_SYSTEM, ServiceType.AGENT_ORCHESTRATOR),
            required=False,
            retry=BERRYS_RETRY,
            description="Start project_planning when the Planning System and Agent Orchestrator "
            "are available (optional).",
        ),
    ],
))
