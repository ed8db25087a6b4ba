"""The five Berrys core services, simulated with small in-memory stores.

Each class is one service type from the integration guide with the endpoints
the guide's workflows call. Payloads are deliberately simple but consistent
across services, so a workflow can carry ids from one service to the next.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from simulators.core import HttpError, Request, SimulatedService


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise HttpError(422, "Body must be a JSON object")
    return body


def _require(body: dict[str, Any], *names: str) -> None:
    missing = [name for name in names if body.get(name) in (None, "")]
    if missing:
        raise HttpError(422, f"Missing field(s): {', '.join(missing)}")


class ProjectCoordinator(SimulatedService):
    """Projects. Validates ``POST /projects`` strictly, like the real one.

    The real ``ProjectCreateRequest`` has no ``status`` field and the service
    turns the validation failure into a 500: the guide's chat bug. We answer
    500 for any unexpected field, so only a request adapter can fix the call.
    """

    service_type = "PROJECT_COORDINATOR"
    slug = "project-coordinator"
    capabilities = ("projects",)
    CREATE_FIELDS = frozenset({"name", "description", "metadata", "owner"})
    UPDATE_FIELDS = frozenset({
        "name", "description", "metadata", "status", "plan", "agents", "assignments",
        "planning", "notifications",
    })

    def setup_routes(self) -> None:
        self.store = {"projects": {}}
        self.route("POST", "/projects", self.create_project)
        self.route("GET", "/projects/{project_id}", self.get_project)
        self.route("PATCH", "/projects/{project_id}", self.update_project)

    def create_project(self, request: Request) -> tuple[int, Any]:
        body = _object(request.body)
        unexpected = sorted(set(body) - self.CREATE_FIELDS)
        if unexpected:
            # What the real service's unhandled validation error looks like to a caller.
            return 500, {"detail": "Internal Server Error",
                         "error": f"ProjectCreateRequest got unexpected field(s): {', '.join(unexpected)}"}
        _require(body, "name")
        project = {
            "id": self.new_id("proj"),
            "name": body["name"],
            "description": body.get("description", ""),
            "metadata": body.get("metadata", {}),
            "owner": body.get("owner"),
            "status": "DRAFT",
            "created_at": _now(),
            "updated_at": _now(),
        }
        with self.lock:
            self.store["projects"][project["id"]] = project
        return 201, copy.deepcopy(project)

    def _project(self, request: Request) -> dict[str, Any]:
        project = self.store["projects"].get(request.match["project_id"])
        if project is None:
            raise HttpError(404, f"Project {request.match['project_id']} not found")
        return project

    def get_project(self, request: Request) -> tuple[int, Any]:
        with self.lock:
            return 200, copy.deepcopy(self._project(request))

    def update_project(self, request: Request) -> tuple[int, Any]:
        body = _object(request.body)
        unexpected = sorted(set(body) - self.UPDATE_FIELDS)
        if unexpected:
            raise HttpError(422, f"Unexpected field(s): {', '.join(unexpected)}")
        with self.lock:
            project = self._project(request)
            if "notifications" in body:
                project.setdefault("notifications", []).extend(body.pop("notifications") or [])
            project.update(body)
            project["updated_at"] = _now()
            return 200, copy.deepcopy(project)


class PlanningSystem(SimulatedService):
    """Strategic and tactical plans, derived deterministically from the project."""

    service_type = "PLANNING_SYSTEM"
    slug = "planning-system"
    capabilities = ("strategic_planning", "tactical_planning")

    def setup_routes(self) -> None:
        self.store = {"strategic": {}, "tactical": {}}
        self.route("POST", "/plans/strategic", self.strategic)
        self.route("POST", "/plans/tactical", self.tactical)

    def strategic(self, request: Request) -> tuple[int, Any]:
        body = _object(request.body)
        _require(body, "project_id")
        name = body.get("name") or body["project_id"]
        plan = {
            "id": self.new_id("splan"),
            "project_id": body["project_id"],
            "objectives": [f"Define the scope of {name}", f"Deliver {name}"],
            "phases": [
                {"name": "research", "goal": "Understand the problem"},
                {"name": "build", "goal": "Produce the deliverable"},
            ],
            "source": "planning_system",
        }
        with self.lock:
            self.store["strategic"][plan["id"]] = plan
        return 201, copy.deepcopy(plan)

    def tactical(self, request: Request) -> tuple[int, Any]:
        body = _object(request.body)
        _require(body, "project_id", "strategic_plan_id")
        with self.lock:
            strategic = self.store["strategic"].get(body["strategic_plan_id"])
        if strategic is None:
            raise HttpError(404, f"Strategic plan {body['strategic_plan_id']} not found")
        tasks = [
            {"key": "research", "name": "Research the domain", "role": "researcher",
             "capability": "web_search"},
            {"key": "draft", "name": "Draft the deliverable", "role": "writer",
             "capability": "text_generation"},
            {"key": "review", "name": "Review the deliverable", "role": "reviewer",
             "capability": "text_generation"},
        ]
        plan = {
            "id": self.new_id("tplan"),
            "project_id": body["project_id"],
            "strategic_plan_id": strategic["id"],
            "tasks": tasks,
            "required_agents": [{"role": role} for role in ("researcher", "writer", "reviewer")],
            "source": "planning_system",
        }
        with self.lock:
            self.store["tactical"][plan["id"]] = plan
        return 201, copy.deepcopy(plan)


class AgentOrchestrator(SimulatedService):
    """Agents, tasks, assignments, and the questions agents ask humans."""

    service_type = "AGENT_ORCHESTRATOR"
    slug = "agent-orchestrator"
    capabilities = ("agents", "tasks", "questions")
    TASK_STATUSES = frozenset({"PENDING", "ASSIGNED", "IN_PROGRESS", "COMPLETED", "FAILED"})

    def setup_routes(self) -> None:
        self.store = {"agents": {}, "tasks": {}, "questions": {}}
        self.route("POST", "/agents", self.create_agents)
        self.route("POST", "/tasks", self.create_task)
        self.route("POST", "/tasks/assign", self.assign_tasks)
        self.route("GET", "/tasks/{task_id}", self.get_task)
        self.route("PATCH", "/tasks/{task_id}", self.update_task)
        self.route("POST", "/questions", self.ask)
        self.route("POST", "/answers", self.answer)

    def _new_agent(self, project_id: str | None, spec: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(spec, dict) or not spec.get("role"):
            raise HttpError(422, "Each agent needs a role")
        agent = {"id": self.new_id("agent"), "project_id": project_id, "role": spec["role"],
                 "name": spec.get("name") or f"{spec['role']}-agent", "status": "IDLE"}
        self.store["agents"][agent["id"]] = agent
        return agent

    def create_agents(self, request: Request) -> tuple[int, Any]:
        """One agent (``{"role": ...}``) or several (``{"agents": [{"role": ...}, ...]}``)."""
        body = _object(request.body)
        with self.lock:
            if "agents" in body:
                if not isinstance(body["agents"], list) or not body["agents"]:
                    raise HttpError(422, "agents must be a non-empty list")
                agents = [self._new_agent(body.get("project_id"), spec) for spec in body["agents"]]
                return 201, {"agents": copy.deepcopy(agents)}
            return 201, copy.deepcopy(self._new_agent(body.get("project_id"), body))

    def _new_task(self, spec: dict[str, Any], project_id: str | None) -> dict[str, Any]:
        if not isinstance(spec, dict) or not spec.get("name"):
            raise HttpError(422, "Each task needs a name")
        task = {
            "id": self.new_id("task"), "project_id": project_id, "name": spec["name"],
            "description": spec.get("description", ""), "role": spec.get("role"),
            "capability": spec.get("capability"), "agent_id": None, "status": "PENDING",
            "result": None, "updated_at": _now(),
        }
        self.store["tasks"][task["id"]] = task
        return task

    def create_task(self, request: Request) -> tuple[int, Any]:
        body = _object(request.body)
        with self.lock:
            return 201, copy.deepcopy(self._new_task(body, body.get("project_id")))

    def assign_tasks(self, request: Request) -> tuple[int, Any]:
        """Create the plan's tasks and give each to an agent of its role (round robin otherwise)."""
        body = _object(request.body)
        _require(body, "tasks", "agent_ids")
        if not isinstance(body["tasks"], list) or not isinstance(body["agent_ids"], list):
            raise HttpError(422, "tasks and agent_ids must be lists")
        with self.lock:
            agents = [self.store["agents"].get(agent_id) for agent_id in body["agent_ids"]]
            if not agents or any(agent is None for agent in agents):
                raise HttpError(422, "agent_ids must name existing agents")
            assignments = []
            for index, spec in enumerate(body["tasks"]):
                task = self._new_task(spec, body.get("project_id"))
                same_role = [a for a in agents if a["role"] == task["role"]]
                agent = (same_role or agents)[index % len(same_role or agents)]
                task.update(agent_id=agent["id"], status="ASSIGNED")
                assignments.append({"task_id": task["id"], "agent_id": agent["id"],
                                    "task": task["name"]})
        return 201, {"assignments": assignments}

    def _task(self, request: Request) -> dict[str, Any]:
        task = self.store["tasks"].get(request.match["task_id"])
        if task is None:
            raise HttpError(404, f"Task {request.match['task_id']} not found")
        return task

    def get_task(self, request: Request) -> tuple[int, Any]:
        with self.lock:
            return 200, copy.deepcopy(self._task(request))

    def update_task(self, request: Request) -> tuple[int, Any]:
        body = _object(request.body)
        unexpected = sorted(set(body) - {"status", "result", "agent_id"})
        if unexpected:
            raise HttpError(422, f"Unexpected field(s): {', '.join(unexpected)}")
        if "status" in body and body["status"] not in self.TASK_STATUSES:
            raise HttpError(422, f"status must be one of {', '.join(sorted(self.TASK_STATUSES))}")
        with self.lock:
            task = self._task(request)
            task.update(body)
            task["updated_at"] = _now()
            return 200, copy.deepcopy(task)

    def ask(self, request: Request) -> tuple[int, Any]:
        body = _object(request.body)
        _require(body, "agent_id", "question")
        question = {"id": self.new_id("q"), "agent_id": body["agent_id"],
                    "task_id": body.get("task_id"), "question": body["question"],
                    "status": "OPEN", "answer": None, "asked_at": _now()}
        with self.lock:
            self.store["questions"][question["id"]] = question
        return 201, copy.deepcopy(question)

    def answer(self, request: Request) -> tuple[int, Any]:
        body = _object(request.body)
        _require(body, "question_id", "answer")
        with self.lock:
            question = self.store["questions"].get(body["question_id"])
            if question is None:
                raise HttpError(404, f"Question {body['question_id']} not found")
            question.update(status="ANSWERED", answer=body["answer"],
                            answered_by=body.get("answered_by"), answered_at=_now())
            return 200, copy.deepcopy(question)


class ModelOrchestration(SimulatedService):
    """Execution plans and (pretend) model executions."""

    service_type = "MODEL_ORCHESTRATION"
    slug = "model-orchestration"
    capabilities = ("execution_planning", "task_execution")
    # Like many model gateways, it does not dedupe: the steps calling it say "at least once".
    honours_idempotency_key = False

    def setup_routes(self) -> None:
        self.store = {"plans": {}, "executions": {}}
        self.route("POST", "/plans/execution", self.plan)
        self.route("POST", "/executions", self.execute)

    def plan(self, request: Request) -> tuple[int, Any]:
        body = _object(request.body)
        _require(body, "task_id")
        task = body.get("task") or {}
        capability = task.get("capability") or "text_generation"
        plan = {
            "id": self.new_id("xplan"),
            "task_id": body["task_id"],
            "steps": [f"Understand: {task.get('name', body['task_id'])}", "Use tools", "Answer"],
            "required_capabilities": [capability],
        }
        with self.lock:
            self.store["plans"][plan["id"]] = plan
        return 201, copy.deepcopy(plan)

    def execute(self, request: Request) -> tuple[int, Any]:
        body = _object(request.body)
        _require(body, "task_id")
        tools = body.get("tools") or []
        if not isinstance(tools, list):
            raise HttpError(422, "tools must be a list")
        names = [tool.get("name") if isinstance(tool, dict) else str(tool) for tool in tools]
        execution = {
            "id": self.new_id("exec"),
            "task_id": body["task_id"],
            "plan_id": body.get("plan_id"),
            "status": "COMPLETED",
            "tools_used": names,
            "result": (f"Task {body['task_id']} done with {', '.join(names)}" if names
                       else f"Task {body['task_id']} done without tools"),
        }
        with self.lock:
            self.store["executions"][execution["id"]] = execution
        return 201, copy.deepcopy(execution)


class ToolIntegration(SimulatedService):
    """A fixed catalogue of tools, searchable by capability."""

    service_type = "TOOL_INTEGRATION"
    slug = "tool-integration"
    capabilities = ("tool_discovery",)
    CATALOGUE = (
        {"name": "web-search", "capability": "web_search"},
        {"name": "news-search", "capability": "web_search"},
        {"name": "summariser", "capability": "text_generation"},
        {"name": "code-runner", "capability": "code_execution"},
    )

    def setup_routes(self) -> None:
        self.store = {"tools": list(self.CATALOGUE)}
        self.route("GET", "/tools", self.tools)

    def tools(self, request: Request) -> tuple[int, Any]:
        wanted = {c for value in request.params.get("capability", []) for c in value.split(",") if c}
        tools = [t for t in self.CATALOGUE if not wanted or t["capability"] in wanted]
        return 200, {"tools": copy.deepcopy(tools)}


ALL_SERVICES: tuple[type[SimulatedService], ...] = (
    ProjectCoordinator, PlanningSystem, AgentOrchestrator, ModelOrchestration, ToolIntegration,
)
BY_TYPE = {cls.service_type: cls for cls in ALL_SERVICES}
