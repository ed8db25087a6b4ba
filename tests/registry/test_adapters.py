"""Request adapters: rules as data, applied by the ServiceClient; the shipped chat-bug fix."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from berrys_portal.errors import ServiceResponseError
from registry.adapters import adapt_request, adapter_cache_clear
from registry.client import service_client
from registry.models import HealthStatus, RequestAdapterRule, Service
from simulators.process import SimulatorProcess

PC = "PROJECT_COORDINATOR"


@pytest.fixture(autouse=True)
def fresh_rule_cache():
    # Test transactions roll back without signals: never let one test's rules leak into the next.
    adapter_cache_clear()
    yield
    adapter_cache_clear()


def rule(**kw) -> RequestAdapterRule:
    defaults = {"service_type": "PLANNING_SYSTEM", "method": "POST", "endpoint_pattern": "/plans/*",
                "order": 50}
    return RequestAdapterRule.objects.create(**{**defaults, **kw})


def adapt(data, *, service_type="PLANNING_SYSTEM", method="POST", endpoint="/plans/strategic"):
    return adapt_request(service_type=service_type, method=method, endpoint=endpoint, data=data)


@pytest.mark.django_db
def test_the_chat_bug_rule_is_shipped_by_a_migration():
    shipped = RequestAdapterRule.objects.get(service_type=PC, endpoint_pattern="/projects")
    assert (shipped.method, shipped.action, shipped.field, shipped.enabled) == ("POST", "drop", "status", True)
    assert adapt({"name": "New Project", "status": "PLANNING"}, service_type=PC, endpoint="/projects") == {
        "name": "New Project"
    }


@pytest.mark.django_db
def test_each_action_rewrites_the_body_and_leaves_the_callers_dict_alone():
    rule(action="drop", field="secret", order=1)
    rule(action="rename", field="title", value="name", order=2)
    rule(action="default", field="metadata.priority", value="normal", order=3)
    rule(action="map", field="status", value={"PLANNING": "DRAFT"}, order=4)
    original = {"secret": 1, "title": "X", "status": "PLANNING", "metadata": {}}
    adapted = adapt(original)
    assert adapted == {"name": "X", "status": "DRAFT", "metadata": {"priority": "normal"}}
    assert original == {"secret": 1, "title": "X", "status": "PLANNING", "metadata": {}}


@pytest.mark.django_db
def test_default_keeps_a_present_value_and_map_keeps_unmapped_values():
    rule(action="default", field="priority", value="normal")
    rule(action="map", field="status", value={"PLANNING": "DRAFT"})
    assert adapt({"priority": "high", "status": "ACTIVE"}) == {"priority": "high", "status": "ACTIVE"}


@pytest.mark.django_db
def test_rules_apply_in_order():
    rule(action="rename", field="a", value="b", order=2)
    rule(action="rename", field="b", value="c", order=1)
    # order 1 finds no "b" yet; order 2 then renames a → b.
    assert adapt({"a": 1}) == {"b": 1}


@pytest.mark.django_db
def test_only_matching_type_method_and_endpoint_are_rewritten():
    rule(action="drop", field="x", method="POST", endpoint_pattern="/plans/*")
    rule(action="drop", field="y", method="*", endpoint_pattern=r"/plans/(strategic|tactical)",
         pattern_type="regex")
    assert adapt({"x": 1, "y": 2}, method="PUT") == {"x": 1}
    assert adapt({"x": 1, "y": 2}, endpoint="/plans/strategic?draft=1") == {}
    assert adapt({"x": 1, "y": 2}, endpoint="/other") == {"x": 1, "y": 2}
    assert adapt({"x": 1, "y": 2}, service_type="AGENT_ORCHESTRATOR") == {"x": 1, "y": 2}


@pytest.mark.django_db
def test_disabled_rules_and_non_object_bodies_are_left_alone():
    rule(action="drop", field="x", enabled=False)
    assert adapt({"x": 1}) == {"x": 1}
    rule(action="drop", field="x")
    assert adapt([{"x": 1}]) == [{"x": 1}]
    assert adapt(None) is None


@pytest.mark.django_db
def test_a_saved_rule_takes_effect_on_the_next_call_despite_the_cache():
    assert adapt({"x": 1}) == {"x": 1}  # caches "no rules"
    saved = rule(action="drop", field="x")
    assert adapt({"x": 1}) == {}
    saved.enabled = False
    saved.save()
    assert adapt({"x": 1}) == {"x": 1}
    saved.delete()


@pytest.mark.django_db
def test_clean_rejects_bad_patterns_and_values():
    bad = RequestAdapterRule(service_type=PC, endpoint_pattern="(", pattern_type="regex",
                             action="rename", field="a", value=3)
    with pytest.raises(ValidationError) as info:
        bad.full_clean()
    assert set(info.value.message_dict) >= {"endpoint_pattern", "value"}
    with pytest.raises(ValidationError) as info:
        RequestAdapterRule(service_type=PC, endpoint_pattern="projects", action="map", field="s",
                           value="x").full_clean()
    assert set(info.value.message_dict) >= {"endpoint_pattern", "value"}


@pytest.mark.django_db
def test_the_rule_admin_lists_rules_with_order_and_enabled_editable(admin_client):
    response = admin_client.get("/admin/registry/requestadapterrule/")
    assert response.status_code == 200
    assert b"form-0-order" in response.content and b"form-0-enabled" in response.content
    assert b"/projects" in response.content


@pytest.fixture(scope="module")
def project_coordinator():
    stack = SimulatorProcess.start(only=[PC])
    yield stack
    stack.stop()


@pytest.mark.django_db
def test_chat_creation_fails_with_500_without_the_rule_and_succeeds_with_it(project_coordinator):
    Service.objects.create(name="project-coordinator", type=PC, url=project_coordinator.urls[PC],
                           status=HealthStatus.PASSING)
    chat_payload = {"name": "New Project", "description": "via chat", "status": "PLANNING"}
    shipped = RequestAdapterRule.objects.get(service_type=PC, endpoint_pattern="/projects")
    shipped.enabled = False
    shipped.save()
    with pytest.raises(ServiceResponseError) as info:
        service_client.post(service=PC, endpoint="/projects", data=chat_payload)
    assert info.value.status == 500

    shipped.enabled = True
    shipped.save()
    result = service_client.post(service=PC, endpoint="/projects", data=chat_payload)
    assert result.status == 201
    assert result.body["name"] == "New Project" and result.body["status"] == "DRAFT"
    assert "status" not in result.call.request_body


@pytest.mark.django_db
def test_a_rule_saved_by_another_process_is_picked_up_through_the_shared_version(settings):
    from django.core.cache import cache

    from registry.adapters import VERSION_KEY

    settings.ADAPTER_VERSION_CHECK_SECONDS = 0
    assert adapt({"x": 1}) == {"x": 1}  # caches "no rules"
    # bulk_create sends no signal: as if another process had saved the rule.
    RequestAdapterRule.objects.bulk_create([RequestAdapterRule(
        service_type="PLANNING_SYSTEM", method="POST", endpoint_pattern="/plans/*", action="drop", field="x",
    )])
    assert adapt({"x": 1}) == {"x": 1}  # still the cached rules
    cache.set(VERSION_KEY, "bumped-elsewhere", timeout=None)  # what that process's save publishes
    assert adapt({"x": 1}) == {}
