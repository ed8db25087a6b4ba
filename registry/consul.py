"""The registry as Consul's catalog and health API answer it (a documented subset, read only).

Mapping (also in the README, "Consul-compatible API"):

- Consul service name = our ``type`` (``PLANNING_SYSTEM``); ``planning-system`` is accepted
  as an alias in paths. ServiceID = our id, as a string.
- Address / Port = the host and port of the service's ``url`` (the scheme's default port
  when it names none). Tags = tags. Meta = the metadata entries whose value is a string
  (Consul's Meta holds only strings; other values are left out, not stringified).
- Node: Consul places every service on a node (an agent). Ours is the host of the url:
  Node = Address = that host, ID a UUID derived from it.
- Checks: one check per probed (health_url) or TTL service, ``service:<id>``, whose
  Status is ours (passing / warning / critical; ``unknown``, never checked, is critical
  as a new Consul check is). Maintenance is Consul's maintenance check,
  ``_service_maintenance:<id>``, critical, with the reason as Notes. A service neither
  probed nor TTL has no check (Consul counts that as passing).
- Services waiting for an operator's approval are not in the catalog (they are not
  discoverable either).
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from registry.models import HealthStatus, Service
from registry.types import TYPE_PATTERN

HEALTH_STATES = ("any", "passing", "warning", "critical")
DEFAULT_MAINTENANCE_NOTES = (
    "Maintenance mode is enabled for this service, but no reason was provided."
)
_ALIAS = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def consul_type(name: str) -> str | None:
    """Our type for a Consul service name (``PLANNING_SYSTEM`` or ``planning-system``), else None."""
    if len(name) <= 64 and TYPE_PATTERN.match(name):
        return name
    if len(name) <= 64 and _ALIAS.match(name):
        return name.upper().replace("-", "_")
    return None


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    return host, port or (443 if parts.scheme == "https" else 80)


def _meta(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict):
        return {}
    return {str(k): v for k, v in metadata.items() if isinstance(v, str)}


def _tags(tags: Any) -> list[str]:
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def _node(service: Service) -> dict[str, Any]:
    host, _ = _host_port(service.url)
    return {
        "ID": str(uuid.uuid5(uuid.NAMESPACE_DNS, host or "unknown")),
        "Node": host,
        "Address": host,
        "Datacenter": settings.CONSUL_DATACENTER,
        "TaggedAddresses": {"lan": host, "wan": host},
        "Meta": {},
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }


def _service_tagged_addresses(host: str, port: int) -> dict[str, dict[str, Any]]:
    family = "ipv6" if ":" in host else "ipv4"
    return {f"lan_{family}": {"Address": host, "Port": port}, f"wan_{family}": {"Address": host, "Port": port}}


def _check_status(service: Service) -> str:
    if service.status in (HealthStatus.PASSING, HealthStatus.WARNING, HealthStatus.CRITICAL):
        return service.status
    return HealthStatus.CRITICAL  # unknown: a new Consul check starts critical


def service_checks(service: Service) -> list[dict[str, Any]]:
    """The Consul health checks of one instance (HealthCheck objects)."""
    host, _ = _host_port(service.url)
    base = {
        "Node": host,
        "ServiceID": str(service.pk),
        "ServiceName": service.type,
        "ServiceTags": _tags(service.tags),
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }
    if service.status == HealthStatus.MAINTENANCE:
        return [{
            "CheckID": f"_service_maintenance:{service.pk}", "Name": "Service Maintenance Mode",
            "Status": HealthStatus.CRITICAL, "Notes": service.status_reason or DEFAULT_MAINTENANCE_NOTES,
            "Output": "", "Type": "maintenance", "Interval": "", "Timeout": "", **base,
        }]
    if service.ttl_seconds:
        kind, interval, timeout = "ttl", "", ""
    elif service.health_url:
        kind = "http"
        interval = f"{service.check_interval_seconds}s"
        timeout = f"{service.check_timeout_seconds:g}s"
    else:
        return []
    status = _check_status(service)
    output = service.status_reason or ("Not checked yet" if service.status == HealthStatus.UNKNOWN else "")
    return [{
        "CheckID": f"service:{service.pk}", "Name": f"Service '{service.type}' check", "Status": status,
        "Notes": "", "Output": output, "Type": kind, "Interval": interval, "Timeout": timeout, **base,
    }]


def _agent_service(service: Service) -> dict[str, Any]:
    host, port = _host_port(service.url)
    return {
        "ID": str(service.pk),
        "Service": service.type,
        "Tags": _tags(service.tags),
        "Address": host,
        "TaggedAddresses": _service_tagged_addresses(host, port),
        "Meta": _meta(service.metadata),
        "Port": port,
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False,
        "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "Connect": {},
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }


def _visible():
    return Service.objects.filter(pending_approval=False)


def _with_tags(queryset, tags: list[str]) -> list[Service]:
    rows = list(queryset.order_by("id"))
    return [s for s in rows if all(t in _tags(s.tags) for t in tags)]


def catalog_services() -> dict[str, list[str]]:
    """``/v1/catalog/services``: every service name with the union of its instances' tags."""
    out: dict[str, list[str]] = {}
    for service_type, tags in _visible().order_by("type", "id").values_list("type", "tags"):
        names = out.setdefault(service_type, [])
        for tag in _tags(tags):
            if tag not in names:
                names.append(tag)
    return out


def catalog_service(*, service_type: str | None, tags: list[str]) -> list[dict[str, Any]]:
    """``/v1/catalog/service/{name}``: CatalogService objects (empty for an unknown name)."""
    if service_type is None:
        return []
    out = []
    for service in _with_tags(_visible().filter(type=service_type), tags):
        node, svc = _node(service), _agent_service(service)
        out.append({
            "ID": node["ID"], "Node": node["Node"], "Address": node["Address"],
            "Datacenter": node["Datacenter"], "TaggedAddresses": node["TaggedAddresses"],
            "NodeMeta": node["Meta"], "ServiceKind": "", "ServiceID": svc["ID"],
            "ServiceName": svc["Service"], "ServiceTags": svc["Tags"], "ServiceAddress": svc["Address"],
            "ServiceTaggedAddresses": svc["TaggedAddresses"], "ServiceWeights": svc["Weights"],
            "ServiceMeta": svc["Meta"], "ServicePort": svc["Port"], "ServiceEnableTagOverride": False,
            "ServiceProxy": svc["Proxy"], "ServiceConnect": {},
            "CreateIndex": service.create_index, "ModifyIndex": service.modify_index,
        })
    return out


def health_service(*, service_type: str | None, tags: list[str], passing: bool) -> list[dict[str, Any]]:
    """``/v1/health/service/{name}``: ServiceEntry objects; ``passing`` keeps only all-passing ones."""
    if service_type is None:
        return []
    out = []
    for service in _with_tags(_visible().filter(type=service_type), tags):
        checks = service_checks(service)
        if passing and any(c["Status"] != HealthStatus.PASSING for c in checks):
            continue
        out.append({"Node": _node(service), "Service": _agent_service(service), "Checks": checks})
    return out


def health_state(*, state: str) -> list[dict[str, Any]]:
    """``/v1/health/state/{state}``: every check in that state (``any``: all of them)."""
    out = []
    for service in _visible().order_by("id"):
        out.extend(c for c in service_checks(service) if state == "any" or c["Status"] == state)
    return out


def agent_self() -> dict[str, Any]:
    """``/v1/agent/self``: the parts clients read (Prometheus reads ``Config.Datacenter``)."""
    node = settings.CONSUL_NODE_NAME
    return {
        "Config": {
            "Datacenter": settings.CONSUL_DATACENTER,
            "PrimaryDatacenter": settings.CONSUL_DATACENTER,
            "NodeName": node,
            "NodeID": str(uuid.uuid5(uuid.NAMESPACE_DNS, node)),
            "Revision": "berrys-portal",
            "Server": True,
            "Version": settings.CONSUL_API_VERSION,
            "BuildDate": "",
        },
        "Member": {"Name": node, "Addr": "127.0.0.1", "Port": 8301, "Tags": {"dc": settings.CONSUL_DATACENTER,
                   "role": "consul"}, "Status": 1},
        "Meta": {},
        "Stats": {},
        "DebugConfig": {},
    }
