"""The guide's Human Interaction workflow.

An agent asks a question (AO) → the run waits for an operator's answer (in the
admin, or ``POST /workflows/runs/{id}/signal``) → the answer goes to the agent
(AO) → the project is notified (PC, optional).
"""

from __future__ import annotations

import json
from typing import Any

from django.utils import timezone

from registry.types import ServiceType
from workflows.definitions import HumanSpec, Step, Workflow, register
from workflows.definitions._berrys import BERRYS_RETRY, BERRYS_TIMEOUT

ANSWER_TIMEOUT_SECONDS = 7 * 24 * 3600


def read_answer(ctx: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``{"answer": "text"}``; any other shape is passed on as its JSON text, never refused."""
    answer = data.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        answer = json.dumps(data, sort_keys=True)
    return {"answer": answer.strip(), "answered_with": data}


def notification(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"notifications": [{
        "kind": "question_answered", "agent_id": ctx["agent_id"], "question": ctx["question"],
        "answer": ctx["answer"], "at": timezone.now().isoformat(),
    }]}


def _http(**kw: Any) -> Step:
    return Step(retry=BERRYS_RETRY, timeout=BERRYS_TIMEOUT, **kw)


register(Workflow(
    name="human_interaction",
    version=1,
    description="An agent asks a question; an operator answers it; the agent gets the answer "
    "and the project is notified.",
    required_inputs=("agent_id", "question", "project_id"),
    requires=(ServiceType.AGENT_ORCHESTRATOR, ServiceType.WEB_DASHBOARD),
    optional=(ServiceType.PROJECT_COORDINATOR,),
    callers=(ServiceType.WEB_DASHBOARD,),
    steps=[
        _http(
            name="ask_question", service_type=ServiceType.AGENT_ORCHESTRATOR,
            path="/questions",
            build_request=lambda ctx: {"agent_id": ctx["agent_id"], "task_id": ctx.get("task_id"),
                                       "question": ctx["question"]},
            read_response=lambda ctx, body: {"question_id": body["id"]},
            description="Record the agent's question.",
        ),
        Step(
            name="wait_for_answer",
            kind="human",
            human=HumanSpec(
                prompt='An agent is waiting: read "question" in the run\'s context and answer '
                'with {"answer": "..."}.',
                timeout=ANSWER_TIMEOUT_SECONDS,
                on_timeout="fail",
            ),
            read_response=read_answer,
        ),
        _http(
            name="send_answer", service_type=ServiceType.AGENT_ORCHESTRATOR,
            path="/answers",
            build_request=lambda ctx: {"question_id": ctx["question_id"], "answer": ctx["answer"]},
            read_response=lambda ctx, body: {"delivered": body["status"] == "ANSWERED"},
            description="Give the answer to the agent.",
        ),
        _http(
            name="notify_project", service_type=ServiceType.PROJECT_COORDINATOR, method="PATCH",
            path="/projects/{project_id}",
            build_request=notification,
            read_response=lambda ctx, body: {"project_notified": True},
            required=False,
            description="Tell the Project Coordinator (optional).",
        ),
    ],
))
