"""The guide's Project Planning workflow (the second half of its Project Creation diagram).

get the project → strategic plan → tactical plan with tasks → create the required
agents → assign tasks to agents → (optional) execution preview from Model
Orchestration → update the project with the planning results.

Planning System unavailable: the guide's error-handling example falls back to
a simpler plan generated locally; here both plan steps have that fallback, the
steps are recorded with status ``fallback`` and the plans carry
``"source": "fallback"``, which the project update reports as well.
"""

from __future__ import annotations

from typing import Any

from registry.types import ServiceType
from workflows.definitions import Step, Workflow, register
from workflows.definitions._berrys import BERRYS_RETRY, BERRYS_TIMEOUT


def fallback_strategic_plan(ctx: dict[str, Any]) -> dict[str, Any]:
    """The guide's ``_generate_fallback_plan(project)``: one objective, two phases."""
    project = ctx.get("project") or {}
    name = project.get("name") or ctx["project_id"]
    return {"strategic_plan": {
        "id": None,
        "project_id": ctx["project_id"],
        "objectives": [f"Deliver {name}"],
        "phases": [{"name": "build", "goal": f"Build {name}"}, {"name": "review", "goal": "Review it"}],
        "source": "fallback",
    }}


def fallback_tactical_plan(ctx: dict[str, Any]) -> dict[str, Any]:
    """One generalist task per phase of the strategic plan (real or fallback)."""
    phases = (ctx.get("strategic_plan") or {}).get("phases") or [{"name": "build"}]
    return {"tactical_plan": {
        "id": None,
        "project_id": ctx["project_id"],
        "tasks": [
            {"key": phase["name"], "name": f"{phase['name'].capitalize()} (fallback plan)",
             "role": "generalist", "capability": "text_generation"}
            for phase in phases
        ],
        "required_agents": [{"role": "generalist"}],
        "source": "fallback",
    }}


def planning_results(ctx: dict[str, Any]) -> dict[str, Any]:
    strategic, tactical = ctx["strategic_plan"], ctx["tactical_plan"]
    return {
        "status": "PLANNED",
        "planning": {
            "strategic_plan_id": strategic.get("id"),
            "tactical_plan_id": tactical.get("id"),
            "source": "fallback" if "fallback" in (strategic.get("source"), tactical.get("source"))
            else "planning_system",
            "objectives": strategic.get("objectives", []),
            "agents": [agent["id"] for agent in ctx["agents"]],
            "assignments": ctx["assignments"],
        },
    }


def _http(**kw: Any) -> Step:
    return Step(retry=BERRYS_RETRY, timeout=BERRYS_TIMEOUT, **kw)


register(Workflow(
    name="project_planning",
    version=1,
    description="Plan a project: strategic plan, tactical plan with tasks, agents, assignments; "
    "a locally generated fallback plan when the Planning System is unavailable.",
    required_inputs=("project_id",),
    requires=(ServiceType.PROJECT_COORDINATOR, ServiceType.PLANNING_SYSTEM, ServiceType.AGENT_ORCHESTRATOR),
    optional=(ServiceType.MODEL_ORCHESTRATION,),
    steps=[
        _http(
            name="get_project", service_type=ServiceType.PROJECT_COORDINATOR, method="GET",
            path="/projects/{project_id}",
            read_response=lambda ctx, body: {"project": body},
            description="Get project details.",
        ),
        _http(
            name="strategic_plan", service_type=ServiceType.PLANNING_SYSTEM,
            path="/plans/strategic",
            build_request=lambda ctx: {"project_id": ctx["project_id"], "name": ctx["project"]["name"],
                                       "description": ctx["project"].get("description", "")},
            read_response=lambda ctx, body: {"strategic_plan": body},
            fallback=fallback_strategic_plan,
            description="Generate the strategic plan (fallback: a simple local plan).",
        ),
        _http(
            name="tactical_plan", service_type=ServiceType.PLANNING_SYSTEM,
            path="/plans/tactical",
            build_request=lambda ctx: {"project_id": ctx["project_id"],
                                       "strategic_plan_id": ctx["strategic_plan"]["id"]},
            read_response=lambda ctx, body: {"tactical_plan": body},
            fallback=fallback_tactical_plan,
            description="Generate the tactical plan with tasks (fallback: one task per phase).",
        ),
        _http(
            name="create_agents", service_type=ServiceType.AGENT_ORCHESTRATOR,
            path="/agents",
            build_request=lambda ctx: {"project_id": ctx["project_id"],
                                       "agents": ctx["tactical_plan"]["required_agents"]},
            read_response=lambda ctx, body: {"agents": body["agents"]},
            description="Create the agents the plan needs.",
        ),
        _http(
            name="assign_tasks", service_type=ServiceType.AGENT_ORCHESTRATOR,
            path="/tasks/assign",
            build_request=lambda ctx: {"project_id": ctx["project_id"],
                                       "tasks": ctx["tactical_plan"]["tasks"],
                                       "agent_ids": [agent["id"] for agent in ctx["agents"]]},
            read_response=lambda ctx, body: {"assignments": body["assignments"]},
            description="Assign the plan's tasks to the agents.",
        ),
        _http(
            name="execution_preview", service_type=ServiceType.MODEL_ORCHESTRATION,
            # Model Orchestration cannot dedupe (each call is a fresh model run): at least once.
            service_dedupes=False,
            path="/plans/execution",
            build_request=lambda ctx: {"task_id": ctx["assignments"][0]["task_id"],
                                       "task": ctx["tactical_plan"]["tasks"][0]},
            read_response=lambda ctx, body: {"execution_preview": body},
            required=False,
            description="Ask Model Orchestration how the first task would run (optional).",
        ),
        _http(
            name="update_project", service_type=ServiceType.PROJECT_COORDINATOR, method="PATCH",
            path="/projects/{project_id}",
            build_request=planning_results,
            read_response=lambda ctx, body: {"project": body},
            description="Update the project with the planning results.",
        ),
    ],
))
