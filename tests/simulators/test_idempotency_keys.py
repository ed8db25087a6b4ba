"""The simulators honour Idempotency-Key like a careful service: a repeat gets the first answer."""

from __future__ import annotations

import threading

import pytest
import requests

from simulators.services import ModelOrchestration, ProjectCoordinator


@pytest.fixture
def coordinator():
    svc = ProjectCoordinator()
    svc.start()
    yield svc
    svc.stop()


def _create(svc, key: str | None, name: str = "A") -> requests.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return requests.post(f"{svc.url}/projects", json={"name": name}, headers=headers, timeout=5)


def test_a_repeated_key_returns_the_first_answer_and_creates_one_project(coordinator):
    first, again = _create(coordinator, "run-1:create:1"), _create(coordinator, "run-1:create:1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert len(coordinator.store["projects"]) == 1
    assert coordinator.counters["idempotent replays"] == 1


def test_another_key_or_no_key_is_another_effect(coordinator):
    _create(coordinator, "k1")
    _create(coordinator, "k2")
    _create(coordinator, None)
    _create(coordinator, None)
    assert len(coordinator.store["projects"]) == 4


def test_repeats_arriving_together_make_one_project(coordinator):
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(_create(coordinator, "same").json()["id"]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(answers)) == 1 and len(answers) == 8
    assert len(coordinator.store["projects"]) == 1


def test_a_server_error_is_not_remembered_so_the_retry_acts(coordinator):
    coordinator.set_faults({"error_rate": 1.0})
    assert _create(coordinator, "k").status_code == 500
    coordinator.set_faults({"reset": True})
    assert _create(coordinator, "k").status_code == 201
    assert len(coordinator.store["projects"]) == 1


def test_model_orchestration_does_not_dedupe():
    svc = ModelOrchestration()
    svc.start()
    try:
        for _ in range(2):
            requests.post(f"{svc.url}/executions", json={"task_id": "t", "task": {}},
                          headers={"Idempotency-Key": "k"}, timeout=5)
        assert svc.counters.get("idempotent replays") is None
        assert svc.counters["POST /executions"] == 2
    finally:
        svc.stop()
