"""The outbox across real processes: Celery workers on a private queue, a webhook receiver on
loopback counting deliveries, processes killed with SIGKILL.

The guarantee under test (registry.outbox, registry.alerts): every transition's alert is
derived once (a unique key, whichever worker gets there first), and delivered at least once
per channel, never by two workers at the same time; a process that dies after its
transition committed loses nothing.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections import Counter

import pytest
from django.db import transaction
from django.utils import timezone

from registry.models import Alert, HealthStatus, Service, StatusChange
from registry.tasks import alert_deliver_task, outbox_catch_up_task, outbox_process_task
from tests.celery_worker import CeleryWorker
from tests.registry.health_fixtures import run_python, subprocess_env
from tests.registry.loopback import Reply, sequence

pytestmark = [pytest.mark.both_dbs, pytest.mark.slow]


def outbox_worker(queue: str, hook_url: str, log_dir, **env: str) -> CeleryWorker:
    """A ``celery worker`` subprocess consuming only this test's outbox queue."""
    env = {**subprocess_env(), "OUTBOX_QUEUE": queue, "ALERT_WEBHOOK_URLS": hook_url, "ADMINS": "", **env}
    return CeleryWorker(queue, env, log_dir / f"worker-{uuid.uuid4().hex[:6]}.log")


@pytest.fixture
def workers(tmp_path):
    started: list[CeleryWorker] = []
    queue = f"outbox-test-{uuid.uuid4().hex[:8]}"

    def make(hook_url: str, **env: str) -> CeleryWorker:
        worker = outbox_worker(queue, hook_url, tmp_path, **env).start()
        started.append(worker)
        return worker

    make.queue = queue
    yield make
    for worker in started:
        worker.stop()


def _wait_for(condition, timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _turn_critical(services: list[Service]) -> None:
    now = timezone.now()
    for svc in services:
        with transaction.atomic():
            locked = Service.objects.select_for_update().get(pk=svc.pk)
            locked.save(update_fields=locked.flip(HealthStatus.CRITICAL, reason="down", at=now, actor="test"))


def _delivered(hook) -> Counter:
    return Counter(h.headers.get("Idempotency-Key") for h in hook.hits if h.path == "/hook")


def test_alerts_are_deduplicated_across_two_worker_processes(loopback, make_service, workers):
    hook = loopback({"/hook": Reply(204)})
    services = [make_service(status=HealthStatus.PASSING) for _ in range(12)]
    _turn_critical(services)
    assert StatusChange.objects.filter(processed__isnull=True).count() == 12

    workers(hook.url + "/hook")
    workers(hook.url + "/hook")  # two processes, two pool children each
    # Every worker child gets the processing task several times at once, as a burst of
    # on-commit enqueues and the periodic catch-up would give it.
    for _ in range(8):
        outbox_process_task.apply_async(queue=workers.queue)
    outbox_catch_up_task.apply_async(queue=workers.queue)
    _wait_for(lambda: Alert.objects.filter(delivered_at__isnull=False).count() == 12, what="12 deliveries")
    # And every delivery task three more times, across both workers.
    for alert_id in Alert.objects.values_list("id", flat=True):
        for _ in range(3):
            alert_deliver_task.apply_async((alert_id,), queue=workers.queue)
    outbox_catch_up_task.apply_async(queue=workers.queue)
    time.sleep(3)  # let the duplicates run (they must do nothing)

    assert Alert.objects.count() == 12
    delivered = _delivered(hook)
    assert len(delivered) == 12 and set(delivered.values()) == {1}, delivered
    assert StatusChange.objects.filter(processed__isnull=True).count() == 0


def test_a_process_killed_after_its_transition_commits_still_gets_its_alert_out_once(
    loopback, make_service, workers
):
    hook = loopback({"/hook": Reply(204)})
    svc = make_service(status=HealthStatus.PASSING)
    # The child commits the transition and dies before its own on-commit enqueue runs: the
    # hook that kills it was registered first, inside the same transaction.
    child = run_python(
        "import os, signal\n"
        "from django.db import transaction\n"
        "from django.utils import timezone\n"
        "from registry.models import Service\n"
        "with transaction.atomic():\n"
        "    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))\n"
        f"    svc = Service.objects.select_for_update().get(pk={svc.pk})\n"
        "    svc.save(update_fields=svc.flip('critical', reason='down', at=timezone.now(), actor='child'))\n"
        "print('not reached')\n",
        stdout=subprocess.PIPE,
    )
    out, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL and "not reached" not in out
    change = StatusChange.objects.get(service=svc)
    assert change.processed is None and not Alert.objects.exists()

    workers(hook.url + "/hook")
    outbox_catch_up_task.apply_async(queue=workers.queue)  # what beat runs every 30 s
    _wait_for(lambda: Alert.objects.filter(delivered_at__isnull=False).exists(), what="the alert")
    outbox_catch_up_task.apply_async(queue=workers.queue)
    time.sleep(2)
    assert list(_delivered(hook).values()) == [1]
    assert hook.hits[0].body["kind"] == "critical" and hook.hits[0].body["service"]["id"] == svc.pk


def test_a_worker_killed_while_delivering_leaves_the_alert_to_the_next_round(loopback, make_service, workers):
    # The receiver takes the first POST and never answers it; the worker sending it is killed.
    hook = loopback({"/hook": sequence(Reply(hang=True), Reply(204))})
    svc = make_service(status=HealthStatus.PASSING)
    _turn_critical([svc])
    # A short round (one try, 5 s deadline, 1 s margin): the claim of the dead worker's round
    # ends 6 s after it began instead of the production 80 s.
    short = {"ALERT_WEBHOOK_ATTEMPTS": "1", "ALERT_WEBHOOK_TIMEOUT_SECONDS": "5",
             "ALERT_ROUND_MARGIN_SECONDS": "1"}
    first = workers(hook.url + "/hook", **short)
    outbox_process_task.apply_async(queue=workers.queue)
    _wait_for(lambda: hook.count("/hook") == 1, what="the first POST")
    first.kill()
    alert = Alert.objects.get()
    assert alert.delivered_at is None and alert.attempts == 1 and alert.claimed_until > timezone.now()

    workers(hook.url + "/hook", **short)
    # The catch-up finds the alert once the dead round's claim has ended, and sends it again.
    def delivered() -> bool:
        outbox_catch_up_task.apply_async(queue=workers.queue)
        time.sleep(0.5)
        return Alert.objects.filter(delivered_at__isnull=False).exists()

    _wait_for(delivered, timeout=120, what="the second round")
    alert.refresh_from_db()
    assert alert.attempts == 2 and alert.delivered_to == [hook.url + "/hook"]
    # At least once: the receiver saw the alert twice, under one Idempotency-Key, and
    # answered (accepted) it once.
    assert _delivered(hook) == Counter({f"berrys-alert-{alert.pk}": 2})
