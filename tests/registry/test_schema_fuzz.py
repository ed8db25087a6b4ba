"""Schemathesis against the live /api/schema: zero 5xx and zero responses that break the schema.

Bounded (25 examples per operation) so it stays part of the normal suite.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from registry.auth import api_key_create
from registry.models import HealthStatus, Service

CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance)


@pytest.fixture
def live_schema(db):
    # As Django's test client does: keep the test transaction's connection open across
    # requests served by the real WSGI handler (it would otherwise close it after each one).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield schemathesis.from_wsgi("/api/schema?format=json", get_wsgi_application())
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


# This file covers the registry's operations; other apps fuzz their own paths.
schema = schemathesis.from_pytest_fixture("live_schema").include(path_regex=r"^/(registry|discovery|health)")


@pytest.fixture
def api_key(db) -> str:
    for i in range(1, 4):  # low ids, so some generated paths hit a real row
        Service.objects.create(name=f"fuzz-{i}", type="PLANNING_SYSTEM", url=f"http://127.0.0.1:70{i}",
                               status=HealthStatus.PASSING, tags=["a"], capabilities=["b"])
    _, plain = api_key_create(name="fuzzer", scopes=["read", "register"])
    return plain


# Shared with tests/workflows/test_schema_fuzz.py: bounded, repeatable runs.
FUZZ_SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@schema.parametrize()
@FUZZ_SETTINGS
def test_the_api_honours_its_schema(case, api_key):
    case.call_and_validate(headers={"Authorization": f"Token {api_key}"}, checks=CHECKS)
