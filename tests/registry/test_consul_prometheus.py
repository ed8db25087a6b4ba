"""Prometheus' Consul service discovery, replayed on the wire against /v1/.

Debian builds its prometheus without Consul SD, so this test does what
``discovery/consul/consul.go`` does with Consul's Go API client: ``agent/self``
for the datacenter, then blocking ``catalog/services`` and one blocking
``health/service/{name}`` loop per service, each with ``?dc``, ``?stale``,
``?index``, ``?wait=<ms>ms`` and ``X-Consul-Token``; the Go client's
``parseQueryMeta`` (X-Consul-Index and X-Consul-LastContact must parse as
unsigned integers, X-Consul-KnownLeader compared with "true"); Go's JSON decoder
(a string where the struct has an int is an error); and the ``__meta_consul_*``
labels Prometheus builds from the answers, health from Consul's
``HealthChecks.AggregatedStatus``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from registry.auth import api_key_create
from registry.models import HealthStatus, Service

pytestmark = [pytest.mark.both_dbs, pytest.mark.usefixtures("fresh_index_feed")]

WAIT = "3000ms"  # Prometheus waits 30000ms (its watchTimeout); shorter here so teardown is quick
REFRESH = 0.3  # Prometheus' refresh_interval (30 s by default): the pause between two watch calls

STR, INT, BOOL = "string", "int", "bool"
STRMAP = {"map": STR}
NODE = {"ID": STR, "Node": STR, "Address": STR, "Datacenter": STR, "TaggedAddresses": STRMAP,
        "Meta": STRMAP, "CreateIndex": INT, "ModifyIndex": INT}
AGENT_SERVICE = {
    "ID": STR, "Service": STR, "Tags": {"list": STR}, "Port": INT, "Address": STR,
    "TaggedAddresses": {"map": {"Address": STR, "Port": INT}}, "Weights": {"Passing": INT, "Warning": INT},
    "EnableTagOverride": BOOL, "Meta": STRMAP, "CreateIndex": INT, "ModifyIndex": INT,
}
HEALTH_CHECK = {
    "Node": STR, "CheckID": STR, "Name": STR, "Status": STR, "Notes": STR, "Output": STR, "ServiceID": STR,
    "ServiceName": STR, "ServiceTags": {"list": STR}, "Type": STR, "Interval": STR, "Timeout": STR,
    "ExposedPort": INT, "CreateIndex": INT, "ModifyIndex": INT,
}
SERVICE_ENTRY = {"Node": NODE, "Service": AGENT_SERVICE, "Checks": {"list": HEALTH_CHECK}}


def go_decode(value: Any, schema: Any, where: str = "$") -> None:
    """Fail where Go's encoding/json would fail to decode ``value`` into the struct ``schema``.

    null decodes into anything (a zero value); unknown fields are ignored, as in Go.
    """
    if value is None:
        return
    if schema == STR:
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
    elif schema == INT:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an integer"
    elif schema == BOOL:
        assert isinstance(value, bool), f"{where}: {value!r} is not a bool"
    elif isinstance(schema, dict) and "map" in schema:
        assert isinstance(value, dict), f"{where}: not an object"
        for k, v in value.items():
            go_decode(v, schema["map"], f"{where}.{k}")
    elif isinstance(schema, dict) and "list" in schema:
        assert isinstance(value, list), f"{where}: not an array"
        for i, v in enumerate(value):
            go_decode(v, schema["list"], f"{where}[{i}]")
    else:
        assert isinstance(value, dict), f"{where}: not an object"
        for k, sub in schema.items():
            go_decode(value.get(k), sub, f"{where}.{k}")


def aggregated_status(checks: list[dict]) -> str:
    """Consul api's ``HealthChecks.AggregatedStatus``."""
    warning = critical = maintenance = False
    for check in checks:
        if check["CheckID"] == "_node_maintenance" or check["CheckID"].startswith("_service_maintenance:"):
            maintenance = True
            continue
        status = check["Status"]
        if status == "passing":
            continue
        if status == "warning":
            warning = True
        elif status == "critical":
            critical = True
        else:
            return ""
    if maintenance:
        return "maintenance"
    if critical:
        return "critical"
    if warning:
        return "warning"
    return "passing"


def sanitize(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


class ConsulSD:
    """The Consul SD loop: one thread for the catalog, one per service, target groups by service."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        self.session = requests.Session()
        self.groups: dict[str, list[dict[str, str]]] = {}
        self.dc = ""
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.watched: set[str] = set()
        self.threads: list[threading.Thread] = []

    def _spawn(self, *args) -> None:
        thread = threading.Thread(target=self._loop, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        self.session.close()

    def _get(self, path: str, index: int) -> tuple[Any, int]:
        params = {"dc": self.dc, "stale": ""}
        if index:
            params.update(index=str(index), wait=WAIT)
        response = self.session.get(self.base + path, params=params, headers={"X-Consul-Token": self.token},
                                    timeout=60)
        assert response.status_code == 200, response.text
        # The Go client's parseQueryMeta.
        last_index = int(response.headers["X-Consul-Index"])
        assert last_index >= 0 and response.headers["X-Consul-Index"].isdigit()
        assert response.headers["X-Consul-LastContact"].isdigit()
        assert response.headers["X-Consul-KnownLeader"] == "true"
        return response.json(), last_index

    def start(self) -> None:
        response = self.session.get(self.base + "/v1/agent/self", headers={"X-Consul-Token": self.token},
                                    timeout=10)
        info = response.json()
        # Go decodes agent/self into map[string]map[string]interface{}: every top-level value an object.
        assert all(isinstance(v, dict) or v is None for v in info.values())
        self.dc = info["Config"]["Datacenter"]
        assert isinstance(self.dc, str)
        self._spawn(self._watch_services)

    def _loop(self, step, *args) -> None:
        last = [0]
        while not self.stop.is_set():
            try:
                step(last, *args)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(exc))
                return
            self.stop.wait(REFRESH)

    def _watch_services(self, last: list[int]) -> None:
        services, index = self._get("/v1/catalog/services", last[0])
        if index == last[0]:
            return
        last[0] = index
        go_decode(services, {"map": {"list": STR}})
        for name in services:
            if name not in self.watched:
                self.watched.add(name)
                self._spawn(self._watch_service, name)

    def _watch_service(self, last: list[int], name: str) -> None:
        entries, index = self._get(f"/v1/health/service/{name}", last[0])
        if index == last[0]:
            return
        last[0] = index
        go_decode(entries, {"list": SERVICE_ENTRY})
        targets = []
        for entry in entries:
            node, svc = entry["Node"], entry["Service"]
            host = svc["Address"] or node["Address"]
            labels = {
                "__address__": f"[{host}]:{svc['Port']}" if ":" in host else f"{host}:{svc['Port']}",
                "__meta_consul_address": node["Address"], "__meta_consul_node": node["Node"],
                "__meta_consul_tags": "," + ",".join(svc["Tags"] or []) + ",",
                "__meta_consul_service_address": svc["Address"],
                "__meta_consul_service_port": str(svc["Port"]), "__meta_consul_service_id": svc["ID"],
                "__meta_consul_health": aggregated_status(entry["Checks"] or []),
                "__meta_consul_service": name, "__meta_consul_dc": self.dc,
            }
            labels.update({f"__meta_consul_metadata_{sanitize(k)}": v for k, v in (node["Meta"] or {}).items()})
            labels.update({f"__meta_consul_service_metadata_{sanitize(k)}": v
                           for k, v in (svc["Meta"] or {}).items()})
            labels.update({f"__meta_consul_tagged_address_{sanitize(k)}": v
                           for k, v in (node["TaggedAddresses"] or {}).items()})
            targets.append(labels)
        self.groups[name] = targets


def _wait_for(predicate, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError("not seen in time")


def test_prometheus_consul_sd_discovers_every_service_and_sees_one_turn_critical(live_server, transactional_db):
    planner = Service.objects.create(
        name="planner-1", type="PLANNING_SYSTEM", url="http://127.0.0.1:8911", health_url="http://127.0.0.1:8911/h",
        tags=["primary"], metadata={"version": "1.0.0", "replicas": 2, "team-name": "plans"},
        status=HealthStatus.PASSING,
    )
    Service.objects.create(name="planner-2", type="PLANNING_SYSTEM", url="http://[::1]:8912",
                           health_url="http://[::1]:8912/h", status=HealthStatus.WARNING)
    coordinator = Service.objects.create(name="coordinator", type="PROJECT_COORDINATOR", url="http://localhost:8913",
                                         ttl_seconds=30, status=HealthStatus.MAINTENANCE, status_reason="upgrade")
    _, token = api_key_create(name="prometheus", scopes=["metrics"])

    sd = ConsulSD(live_server.url, token)
    sd.start()
    try:
        _wait_for(lambda: len(sd.groups) == 2 and len(sd.groups.get("PLANNING_SYSTEM", [])) == 2, 10)
        assert not sd.errors
        first, second = sd.groups["PLANNING_SYSTEM"]
        assert first == {
            "__address__": "127.0.0.1:8911", "__meta_consul_address": "127.0.0.1", "__meta_consul_node": "127.0.0.1",
            "__meta_consul_tags": ",primary,", "__meta_consul_service_address": "127.0.0.1",
            "__meta_consul_service_port": "8911", "__meta_consul_service_id": str(planner.pk),
            "__meta_consul_health": "passing", "__meta_consul_service": "PLANNING_SYSTEM",
            "__meta_consul_dc": "dc1", "__meta_consul_service_metadata_version": "1.0.0",
            "__meta_consul_service_metadata_team_name": "plans",
            "__meta_consul_tagged_address_lan": "127.0.0.1", "__meta_consul_tagged_address_wan": "127.0.0.1",
        }
        assert (second["__address__"], second["__meta_consul_health"], second["__meta_consul_tags"]) == (
            "[::1]:8912", "warning", ",,")
        [coord] = sd.groups["PROJECT_COORDINATOR"]
        assert (coord["__meta_consul_health"], coord["__meta_consul_service_id"]) == ("maintenance",
                                                                                     str(coordinator.pk))

        Service.objects.filter(pk=planner.pk).update(status=HealthStatus.CRITICAL)
        seen_after = _wait_for(lambda: sd.groups["PLANNING_SYSTEM"][0]["__meta_consul_health"] == "critical",
                               REFRESH + 3)
        assert seen_after < REFRESH + 1.5  # the blocking query wakes on the change

        Service.objects.create(name="tools", type="TOOL_INTEGRATION", url="http://127.0.0.1:8914",
                               status=HealthStatus.PASSING)
        _wait_for(lambda: "TOOL_INTEGRATION" in sd.groups, REFRESH + 3)
        # No check (neither probed nor TTL): Consul counts that as passing.
        assert sd.groups["TOOL_INTEGRATION"][0]["__meta_consul_health"] == "passing"
        assert not sd.errors
    finally:
        sd.close()
