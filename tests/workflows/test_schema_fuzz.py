"""Schemathesis on the workflow API's operations: zero 5xx, zero answers that break the schema.

The registry's operations are fuzzed in tests/registry/test_schema_fuzz.py; the same
live schema, checks and bounds (25 examples per operation) apply here. Runs started by
the fuzzer never execute: the test transaction is never committed, so their first
step's message (sent on commit) is never sent.
"""

from __future__ import annotations

import pytest
import schemathesis

from registry.auth import api_key_create
from tests.registry.test_schema_fuzz import CHECKS, FUZZ_SETTINGS, live_schema  # noqa: F401 - the fixture
from workflows.engine import run_start

schema = schemathesis.from_pytest_fixture("live_schema").include(path_regex=r"^/workflows")


@pytest.fixture
def api_key(db) -> str:
    for i in range(2):  # real runs, so some generated ids can be found
        run_start(workflow="project_creation", input={"name": f"fuzz-{i}", "description": "d"},
                  triggered_by="fuzzer")
    _, plain = api_key_create(name="fuzzer", scopes=["read", "workflows"])
    return plain


@schema.parametrize()
@FUZZ_SETTINGS
def test_the_workflow_api_honours_its_schema(case, api_key):
    case.call_and_validate(headers={"Authorization": f"Token {api_key}"}, checks=CHECKS)
