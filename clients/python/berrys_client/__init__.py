"""A client for Berrys services: register with the portal, heartbeat, discover, call.

Async first (the guide's services are async), with a sync twin in ``berrys_client.sync``::

    from berrys_client import ServiceClient, ServiceDiscovery, ServiceType
    from berrys_client import ServiceNotFoundError, ServiceConnectionError

    service_discovery = ServiceDiscovery("http://service-integration:8090", api_key)
    service_client = ServiceClient(service_discovery)
    planning_service = await service_discovery.get_service_by_type(ServiceType.PLANNING_SYSTEM)
    response = await service_client.post(service=planning_service, endpoint="/plans/strategic", data={...})
"""

from berrys_client.breaker import CircuitBreaker, critical_breaker, non_critical_breaker
from berrys_client.client import ServiceClient
from berrys_client.discovery import ServiceDiscovery
from berrys_client.errors import (
    CircuitOpenError,
    ServiceConnectionError,
    ServiceIntegrationError,
    ServiceNotFoundError,
    ServiceResponseError,
)
from berrys_client.registration import ServiceRegistration
from berrys_client.types import ServiceType
from berrys_client.version import USER_AGENT, __version__

__all__ = [
    "CircuitBreaker",
    "CircuitOpenError",
    "ServiceClient",
    "ServiceConnectionError",
    "ServiceDiscovery",
    "ServiceIntegrationError",
    "ServiceNotFoundError",
    "ServiceRegistration",
    "ServiceResponseError",
    "ServiceType",
    "USER_AGENT",
    "__version__",
    "critical_breaker",
    "non_critical_breaker",
]
