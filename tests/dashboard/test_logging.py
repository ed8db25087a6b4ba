"""Structured logs: JSON lines carrying run_id, step_id and service from log_context."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from berrys_portal.logging import ContextFilter, JsonFormatter, TextFormatter, log_context


@pytest.fixture
def capture():
    # Start from an empty context whatever ran before in this thread.
    from berrys_portal import logging as portal_logging

    token = portal_logging._context.set(None)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.structured")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    portal_logging._context.reset(token)


def test_each_line_is_one_json_object_with_time_level_logger_and_message(capture):
    logger, lines = capture
    logger.info("hello %s", "world")
    (entry,) = lines()
    assert entry["message"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "tests.structured"
    assert entry["time"].endswith("Z")
    assert "run_id" not in entry


def test_it_adds_run_step_and_service_inside_a_context_and_restores_outer_values(capture):
    logger, lines = capture
    with log_context(run_id="r-1", step_id=7):
        logger.info("step started")
        with log_context(service="planning-1"):
            logger.info("calling")
        with log_context(step_id=None):
            logger.info("run level")
        logger.info("step done")
    logger.info("outside")
    got = [(e["message"], e.get("run_id"), e.get("step_id"), e.get("service")) for e in lines()]
    assert got == [
        ("step started", "r-1", 7, None),
        ("calling", "r-1", 7, "planning-1"),
        ("run level", "r-1", None, None),
        ("step done", "r-1", 7, None),
        ("outside", None, None, None),
    ]


def test_contexts_of_concurrent_threads_do_not_leak_into_each_other(capture):
    logger, lines = capture
    barrier = threading.Barrier(2)

    def work(run_id: str) -> None:
        with log_context(run_id=run_id):
            barrier.wait()
            logger.info("in %s", run_id)

    threads = [threading.Thread(target=work, args=(r,)) for r in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((e["message"], e["run_id"]) for e in lines()) == [("in a", "a"), ("in b", "b")]


def test_exceptions_are_kept_inside_the_json_line(capture):
    logger, lines = capture
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (entry,) = lines()
    assert "ValueError: boom" in entry["exc_info"]


def test_the_text_format_appends_the_context(capture):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
    with log_context(run_id="r-9", service="svc"):
        ContextFilter().filter(record)
    assert TextFormatter().format(record).endswith("msg [run_id=r-9 service=svc]")


def test_settings_use_the_json_formatter_when_log_format_is_json():
    import subprocess
    import sys

    code = (
        "import django, logging; django.setup(); "
        "from berrys_portal.logging import log_context\n"
        "with log_context(run_id='abc', step_id=3, service='svc-1'):\n"
        "    logging.getLogger('workflows.engine').warning('through settings')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={**__import__("os").environ, "LOG_FORMAT": "json",
             "DJANGO_SETTINGS_MODULE": "berrys_portal.settings_test"},
    )
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stderr.strip().splitlines()[-1])
    assert entry == {**entry, "logger": "workflows.engine", "message": "through settings",
                     "run_id": "abc", "step_id": 3, "service": "svc-1", "level": "WARNING"}


@pytest.mark.slow
def test_the_worker_writes_json_lines_tagged_with_run_step_and_service(engine, flaky_services):
    from tests.dashboard.conftest import wait_for_run
    from workflows.engine import run_start

    flaky_services.flaky.ok = False
    run, _ = run_start(workflow="test_demo", input={"name": "Logs"}, triggered_by="test")
    run = wait_for_run(run.pk)
    step_ids = {s.name: s.pk for s in run.steps.all()}

    import time

    def read() -> list[dict]:
        lines = []
        for raw in engine.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue  # celery's banner is not a log record
        return lines

    # The worker logs "run failed" just after committing it: wait for the line.
    deadline = time.monotonic() + 15
    while True:
        lines = read()
        mine = [e for e in lines if e.get("run_id") == str(run.pk)]
        engine_lines = [e for e in mine if e["logger"] == "workflows.engine"]
        if engine_lines or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    client_lines = [e for e in mine if e["logger"] == "registry.client"]
    assert client_lines and engine_lines
    # Every client line names the step and the instance it called.
    assert {e["step_id"] for e in client_lines} == set(step_ids.values())
    assert {e["service"] for e in client_lines} == {
        "project_coordinator-1", "planning_system-1", "agent_orchestrator-1"
    }
    assert any("HTTP 500" in e["message"] and e["step_id"] == step_ids["assign_agents"] for e in client_lines)
    # The engine's "run failed" line carries the run and the failed step.
    assert any("failed" in e["message"] and e["step_id"] == step_ids["assign_agents"] for e in engine_lines)
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in lines)
