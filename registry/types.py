"""The Berrys service types, as named in the integration guide.

Types are free-form UPPER_SNAKE strings; these are the ones the system ships.
"""

from __future__ import annotations

import re

TYPE_PATTERN = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")


class ServiceType:
    WEB_DASHBOARD = "WEB_DASHBOARD"
    API_GATEWAY = "API_GATEWAY"
    SERVICE_INTEGRATION = "SERVICE_INTEGRATION"
    PROJECT_COORDINATOR = "PROJECT_COORDINATOR"
    AGENT_ORCHESTRATOR = "AGENT_ORCHESTRATOR"
    MODEL_ORCHESTRATION = "MODEL_ORCHESTRATION"
    PLANNING_SYSTEM = "PLANNING_SYSTEM"
    TOOL_INTEGRATION = "TOOL_INTEGRATION"

    ALL = (
        WEB_DASHBOARD,
        API_GATEWAY,
        SERVICE_INTEGRATION,
        PROJECT_COORDINATOR,
        AGENT_ORCHESTRATOR,
        MODEL_ORCHESTRATION,
        PLANNING_SYSTEM,
        TOOL_INTEGRATION,
    )
