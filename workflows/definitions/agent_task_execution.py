"""The guide's Agent Task Execution workflow.

get the task (AO) → execution plan (MO) → discover tools (TI, optional) →
execute the task with the tools (MO) → update the task status (AO). With Tool
Integration unavailable the discovery step is skipped and the task is executed
without tools, as the guide's dependency table allows.
"""

from __future__ import annotations

from typing import Any

from registry.types import ServiceType
from workflows.definitions import Step, Workflow, register
from workflows.definitions._berrys import BERRYS_RETRY, BERRYS_TIMEOUT


def read_execution_plan(ctx: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    # The tools query needs a flat context key: path templates cannot index into lists.
    capabilities = body.get("required_capabilities") or []
    return {"execution_plan": body, "capabilities": ",".join(capabilities)}


def execution_request(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"task_id": ctx["task_id"], "plan_id": ctx["execution_plan"]["id"],
            "tools": ctx.get("tools", [])}


def _http(**kw: Any) -> Step:
    return Step(retry=BERRYS_RETRY, timeout=BERRYS_TIMEOUT, **kw)


register(Workflow(
    name="agent_task_execution",
    version=1,
    description="Execute an agent's task: execution plan, tools (optional), execution, task update.",
    required_inputs=("task_id",),
    requires=(ServiceType.AGENT_ORCHESTRATOR, ServiceType.MODEL_ORCHESTRATION),
    optional=(ServiceType.TOOL_INTEGRATION,),
    steps=[
        _http(
            name="get_task", service_type=ServiceType.AGENT_ORCHESTRATOR, method="GET",
            path="/tasks/{task_id}",
            read_response=lambda ctx, body: {"task": body},
            description="Get task details.",
        ),
        _http(
            name="execution_plan", service_type=ServiceType.MODEL_ORCHESTRATION,
            # Model Orchestration cannot dedupe (each call is a fresh model run): at least once.
            service_dedupes=False,
            path="/plans/execution",
            build_request=lambda ctx: {"task_id": ctx["task_id"], "task": ctx["task"]},
            read_response=read_execution_plan,
            description="Generate the task's execution plan.",
        ),
        _http(
            name="discover_tools", service_type=ServiceType.TOOL_INTEGRATION, method="GET",
            path="/tools?capability={capabilities}",
            read_response=lambda ctx, body: {"tools": body.get("tools", [])},
            required=False,
            description="Discover the tools the plan needs (optional: skipped → no tools).",
        ),
        _http(
            name="execute_task", service_type=ServiceType.MODEL_ORCHESTRATION,
            # Model Orchestration cannot dedupe (each call is a fresh model run): at least once.
            service_dedupes=False,
            path="/executions",
            build_request=execution_request,
            read_response=lambda ctx, body: {"execution": body},
            description="Execute the task with the tools found.",
        ),
        _http(
            name="update_task", service_type=ServiceType.AGENT_ORCHESTRATOR, method="PATCH",
            path="/tasks/{task_id}",
            build_request=lambda ctx: {"status": "COMPLETED", "result": ctx["execution"]["result"]},
            read_response=lambda ctx, body: {"task": body},
            description="Update the task status with the result.",
        ),
    ],
))
