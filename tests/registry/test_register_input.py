"""The plain-Python registration check agrees with ServiceRegisterSerializer on every body it takes,
and takes the bodies services usually send (else it would be dead weight)."""

from __future__ import annotations

import pytest
from django.test.utils import override_settings

from registry.register_input import register_data_fast
from registry.serializers import ServiceRegisterSerializer

pytestmark = pytest.mark.both_dbs

GUIDE = {"name": "planning-system-1", "type": "PLANNING_SYSTEM", "url": "http://127.0.0.1:8000",
         "health_url": "http://127.0.0.1:8000/health", "metadata": {"version": "1.0.0"}}
FULL = dict(
    GUIDE, capabilities=["strategic-planning", "x", "x"], tags=["eu-west", "canary"],
    endpoints=[{"method": "GET", "path": "/plans"}, {"method": "POST", "path": "/plans/strategic"}],
    criticality="critical", check_interval_seconds=30, check_timeout_seconds=2, slow_threshold_ms=500,
    failures_before_critical=3, successes_before_passing=2, ttl_seconds=None, deregister_after_seconds=3600,
)

COMMON = [
    GUIDE,
    FULL,
    {"name": "a", "type": "A", "url": "https://10.1.2.3"},
    dict(GUIDE, health_url=""),
    dict(GUIDE, metadata={}),
    dict(GUIDE, check_timeout_seconds=0.5),
    dict(GUIDE, ttl_seconds=30),
    dict(GUIDE, name="name with inner spaces"),
]

# Each differs from a valid body in one way the serializer may treat differently (coerce,
# trim, refuse): the fast check must either agree exactly or step aside.
UNUSUAL = [
    {},
    [],
    "text",
    None,
    {"name": "x"},
    dict(GUIDE, extra=1),
    dict(GUIDE, name=" padded"),
    dict(GUIDE, name="trailing "),
    dict(GUIDE, name="a/b"),
    dict(GUIDE, name=""),
    dict(GUIDE, name=123),
    dict(GUIDE, name="x" * 201),
    dict(GUIDE, name="nul\x00"),
    dict(GUIDE, type="lower"),
    dict(GUIDE, type="PLANNING_SYSTEM\n"),
    dict(GUIDE, type=None),
    dict(GUIDE, url=""),
    dict(GUIDE, url=" http://127.0.0.1:8000"),
    dict(GUIDE, url="ftp://127.0.0.1"),
    dict(GUIDE, url="http://169.254.169.254/latest"),
    dict(GUIDE, url="http://user:pw@127.0.0.1"),
    dict(GUIDE, url="http://127.0.0.1:8000/" + "x" * 2000),
    dict(GUIDE, url=["http://127.0.0.1"]),
    dict(GUIDE, health_url=None),
    dict(GUIDE, health_url="   "),
    dict(GUIDE, health_url="http://0.0.0.0/health"),
    dict(GUIDE, metadata=None),
    dict(GUIDE, metadata=[]),
    dict(GUIDE, metadata={"k": "v" * 17000}),
    dict(GUIDE, metadata={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": 1}}}}}}}}}}),
    dict(GUIDE, tags="a"),
    dict(GUIDE, tags=["a", ""]),
    dict(GUIDE, tags=["a", " b"]),
    dict(GUIDE, tags=[1, 2]),
    dict(GUIDE, tags=["x" * 101]),
    dict(GUIDE, tags=["t"] * 101),
    dict(GUIDE, tags=[["nested"]]),
    dict(GUIDE, capabilities=None),
    dict(GUIDE, endpoints=[{"method": "get", "path": "/x"}]),
    dict(GUIDE, endpoints=[{"method": "GET"}]),
    dict(GUIDE, endpoints=[{"method": "GET", "path": "/x", "extra": 1}]),
    dict(GUIDE, endpoints=[{"method": ["GET"], "path": "/x"}]),
    dict(GUIDE, endpoints=[{"method": "GET", "path": "x"}]),
    dict(GUIDE, endpoints=[{"method": "GET", "path": "/a b"}]),
    dict(GUIDE, endpoints=[{"method": "GET", "path": " /x"}]),
    dict(GUIDE, endpoints=["GET /x"]),
    dict(GUIDE, endpoints={"method": "GET", "path": "/x"}),
    dict(GUIDE, criticality="CRITICAL"),
    dict(GUIDE, criticality=["critical"]),
    dict(GUIDE, criticality=""),
    dict(GUIDE, check_interval_seconds="30"),
    dict(GUIDE, check_interval_seconds=30.0),
    dict(GUIDE, check_interval_seconds=True),
    dict(GUIDE, check_interval_seconds=0),
    dict(GUIDE, check_interval_seconds=1),
    dict(GUIDE, check_interval_seconds=86_401),
    dict(GUIDE, check_interval_seconds=None),
    dict(GUIDE, check_timeout_seconds="2"),
    dict(GUIDE, check_timeout_seconds=0.05),
    dict(GUIDE, check_timeout_seconds=11),
    dict(GUIDE, check_timeout_seconds=True),
    dict(GUIDE, check_timeout_seconds=None),
    dict(GUIDE, slow_threshold_ms=2**31),
    dict(GUIDE, slow_threshold_ms=-1),
    dict(GUIDE, ttl_seconds=0),
    dict(GUIDE, failures_before_critical=None),
    dict(GUIDE, failures_before_critical=1001),
    dict(GUIDE, deregister_after_seconds=10**400),
]


def _serializer(body):
    serializer = ServiceRegisterSerializer(data=body)
    return serializer.validated_data if serializer.is_valid() else None


@pytest.mark.parametrize("body", COMMON, ids=range(len(COMMON)))
def test_it_takes_the_usual_bodies_and_returns_what_the_serializer_would(body, settings):
    settings.HEALTH_MIN_INTERVAL_SECONDS = 5
    settings.HEALTH_MAX_TIMEOUT_SECONDS = 10
    fast = register_data_fast(body)
    assert fast is not None
    expected = _serializer(body)
    assert fast == dict(expected)
    assert [type(v) for v in fast.values()] == [type(expected[k]) for k in fast]


@pytest.mark.parametrize("body", UNUSUAL, ids=range(len(UNUSUAL)))
def test_on_anything_else_it_agrees_or_steps_aside(body, settings):
    settings.HEALTH_MIN_INTERVAL_SECONDS = 5
    settings.HEALTH_MAX_TIMEOUT_SECONDS = 10
    fast = register_data_fast(body)
    expected = _serializer(body)
    if fast is not None:
        assert expected is not None and fast == dict(expected)
    if expected is None:
        assert fast is None


def test_the_settings_bounds_are_read_per_call(settings):
    body = dict(GUIDE, check_interval_seconds=5, check_timeout_seconds=8)
    settings.HEALTH_MIN_INTERVAL_SECONDS = 5
    settings.HEALTH_MAX_TIMEOUT_SECONDS = 10
    assert register_data_fast(body) is not None
    settings.HEALTH_MIN_INTERVAL_SECONDS = 10
    assert register_data_fast(body) is None and _serializer(body) is None
    settings.HEALTH_MIN_INTERVAL_SECONDS = 5
    settings.HEALTH_MAX_TIMEOUT_SECONDS = 5
    assert register_data_fast(body) is None and _serializer(body) is None


def test_an_accepted_literal_url_is_refused_once_the_policy_changes():
    body = dict(GUIDE, url="http://127.0.0.1:8123", health_url="")
    with override_settings(EGRESS_ALLOW_LOOPBACK=True, REGISTRY_ALLOWED_NETWORKS=[]):
        assert register_data_fast(body) is not None
        assert register_data_fast(body) is not None  # remembered
    with override_settings(EGRESS_ALLOW_LOOPBACK=False, REGISTRY_ALLOWED_NETWORKS=[]):
        assert register_data_fast(body) is None
        assert _serializer(body) is None


def test_an_invalid_body_gets_the_serializers_400_naming_the_field(register_client):
    response = register_client.post("/registry/services", dict(GUIDE, tags=["a", ""], bogus=1), format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"tags.1", "bogus"}
