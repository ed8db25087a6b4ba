"""The definitions API: validation, retry maths, the registry."""

from __future__ import annotations

import pytest

from berrys_portal.errors import ServiceConnectionError, ServiceResponseError
from workflows import definitions
from workflows.definitions import DefinitionError, HumanSpec, RetryPolicy, Step, Workflow


def _wf(name="defs_sample", version=1, **kw):
    return Workflow(
        name=name,
        version=version,
        steps=[
            Step(name="a", service_type="PROJECT_COORDINATOR", method="get", path="/projects/{project_id}"),
            Step(name="b", service_type="PLANNING_SYSTEM", path="/plans", required=False),
            Step(name="c", kind="local", local=lambda ctx: {"c": 1}),
        ],
        **kw,
    )


def test_it_lists_required_and_optional_services():
    wf = _wf()
    assert wf.required_services == ["PROJECT_COORDINATOR"]
    assert wf.optional_services == ["PLANNING_SYSTEM"]
    assert wf.steps[0].method == "GET"
    assert wf.describe()["steps"][1]["required"] is False


def test_it_renders_path_templates_from_the_context_and_names_missing_keys():
    step = _wf().steps[0]
    assert step.render_path({"project_id": "p-1"}) == "/projects/p-1"
    with pytest.raises(KeyError, match="project_id"):
        step.render_path({})


def test_it_rejects_malformed_steps():
    with pytest.raises(DefinitionError, match="service_type"):
        Step(name="x", path="/x")
    with pytest.raises(DefinitionError, match="local"):
        Step(name="x", kind="local")
    with pytest.raises(DefinitionError, match="HumanSpec"):
        Step(name="x", kind="human")
    with pytest.raises(DefinitionError, match="duplicate"):
        Workflow(name="dup", version=1, steps=[Step(name="x", kind="local", local=dict)] * 2)
    with pytest.raises(DefinitionError, match="on_timeout"):
        HumanSpec(prompt="?", on_timeout="explode")


def test_retry_delays_grow_by_the_backoff_and_stop_at_the_max():
    policy = RetryPolicy(max_attempts=5, initial_delay=0.5, backoff=3, max_delay=4)
    assert [policy.delay_after(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4, 4]


def test_client_errors_and_listed_errors_are_not_retried():
    policy = RetryPolicy(non_retryable=(ServiceConnectionError, 503))
    assert not policy.is_retryable(ServiceResponseError(status=400), 400)
    assert policy.is_retryable(ServiceResponseError(status=429), 429)
    assert not policy.is_retryable(ServiceResponseError(status=503), 503)
    assert not policy.is_retryable(ServiceConnectionError("x"))
    assert RetryPolicy().is_retryable(ServiceResponseError(status=502), 502)


def test_the_registry_returns_the_latest_version_unless_one_is_asked_for():
    definitions.register(_wf(version=1))
    definitions.register(_wf(version=2))
    try:
        assert definitions.get("defs_sample").version == 2
        assert definitions.get("defs_sample", 1).version == 1
        assert "defs_sample" in [w.name for w in definitions.all()]
        with pytest.raises(DefinitionError, match="already registered"):
            definitions.register(_wf(version=2))
        with pytest.raises(definitions.UnknownWorkflow, match="nope"):
            definitions.get("nope")
    finally:
        definitions.unregister("defs_sample")
