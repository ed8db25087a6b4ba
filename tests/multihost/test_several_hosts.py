"""Several hosts, proven: network namespaces joined by veth pairs on one bridge, as root.

Hosts (namespaces ``bp-dur-<run id>-<host>``, addresses in 10.231.0.0/24 inside them only; the
run id keeps concurrent runs apart; each run deletes only the namespaces it made):

    db   10.231.0.10  private PostgreSQL (initdb + postgres) and Redis (the broker) on that address
    sim  10.231.0.20  the five simulated Berrys services (Idempotency-Key honoured)
    w1   10.231.0.31  Celery worker (prefork -c 2) + beat_leader
    w2   10.231.0.32  Celery worker (prefork -c 2) + beat_leader
    web1 10.231.0.41  gunicorn
    web2 10.231.0.42  gunicorn
    ctl  10.231.0.50  the operator: starts runs, reads results

Each host has its own hostname (a UTS namespace), so attempts name the host that ran them.
The namespaces, bridge and private servers are ``tests/multihost/fabric.py`` (shared with
``bench/scaleout.py``).
Skipped, with the reason, where namespaces cannot be made (not root, no ``ip``, no PostgreSQL
server binaries, no redis-server).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.multihost.fabric import Fabric, addr, unavailable

pytestmark = pytest.mark.slow

# Unique per run (several checkouts may run the suite at once): bp-dur-<run>-<host>.
PREFIX = f"bp-dur-{uuid.uuid4().hex[:6]}-"
SIM_PORT, WEB_PORT = 8800, 8890


class Portal(Fabric):
    """The fabric with the portal's processes: simulators, workers, beats, web servers."""

    def __init__(self):
        super().__init__(PREFIX)
        self.env.update({
            "WORKFLOW_QUEUE": "steps",
            "WORKFLOW_STEP_LEASE_SECONDS": "6", "WORKFLOW_RECONCILE_EVERY_SECONDS": "2",
            "WORKFLOW_RECONCILE_GRACE_SECONDS": "10", "BEAT_LEADER_TTL_SECONDS": "6",
            "CELERY_VISIBILITY_TIMEOUT": "60", "LOG_LEVEL": "INFO",
        })

    def start_servers(self) -> None:
        self.start_database()
        self.spawn("sims", "sim", [sys.executable, "-m", "tests.multihost.node", "sims", addr("sim"),
                                   str(SIM_PORT), "400"])
        self.wait_log("sims", '"ready"')
        assert self.run("ctl", "setup", addr("sim"), str(SIM_PORT)) == {"setup": "ok"}

    def start_worker(self, host: str) -> None:
        self.spawn(f"worker-{host}", host, [
            sys.executable, "-m", "celery", "-A", "berrys_portal", "worker", "-P", "prefork", "-c", "2",
            "-Q", "steps,celery,health", "-n", f"steps@{host}", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--loglevel", "INFO"])

    def start_beat(self, host: str) -> None:
        self.spawn(f"beat-{host}", host, [sys.executable, "manage.py", "beat_leader"])

    def start_web(self, host: str) -> None:
        self.spawn(f"web-{host}", host, [
            sys.executable, "-m", "gunicorn", "-b", f"{addr(host)}:{WEB_PORT}", "-w", "1",
            "berrys_portal.wsgi:application"])

    def sim_state(self) -> dict:
        """Effects at the simulators, read from the ctl host over the network."""
        from simulators.services import ALL_SERVICES

        out = {}
        for i, cls in enumerate(ALL_SERVICES):
            got = subprocess.run(["ip", "netns", "exec", PREFIX + "ctl", "curl", "-s", "--max-time", "5",
                                  f"http://{addr('sim')}:{SIM_PORT + i}/_control"], capture_output=True)
            out[cls.slug] = json.loads(got.stdout)
        return out

    def curl_status(self, host: str, path: str, timeout: float = 3) -> int:
        got = subprocess.run(["ip", "netns", "exec", PREFIX + "ctl", "curl", "-s", "-o", "/dev/null", "-w",
                              "%{http_code}", "--max-time", str(timeout), f"http://{addr(host)}:{WEB_PORT}{path}"],
                             capture_output=True)
        return int(got.stdout or 0)


@pytest.fixture(scope="module")
def fabric():
    why = unavailable(PREFIX)
    if why:
        pytest.skip(f"several-hosts tests skipped: {why}")
    if shutil.which("curl") is None:
        pytest.skip("several-hosts tests skipped: curl is not installed")
    fab = Portal()
    try:
        fab.build()
        fab.start_servers()
        for host in ("w1", "w2"):
            fab.start_worker(host)
        for host in ("w1", "w2"):
            fab.wait_log(f"worker-{host}", " ready.")
        fab.start_beat("w1")
        fab.wait_log("beat-w1", "took the lock")
        fab.start_beat("w2")
        yield fab
    finally:
        fab.teardown()


def _settle(fab: Portal, ids: list[str], timeout: float) -> dict:
    ids_file = fab.tmp / f"ids-{uuid.uuid4().hex[:6]}.json"
    ids_file.write_text(json.dumps(ids))
    deadline = time.monotonic() + timeout
    while True:
        got = fab.run("ctl", "report", str(ids_file))
        if got["finished"] == got["expected"]:
            return got
        assert time.monotonic() < deadline, f"not settled in {timeout}s: {got}"
        time.sleep(1)


def _duplicates(state: dict) -> dict[str, int]:
    return {slug: s["duplicate_effects"] for slug, s in state.items()
            if slug != "model-orchestration" and s["duplicate_effects"]}


def test_runs_spread_over_both_worker_hosts(fabric):
    ids = fabric.run("ctl", "start", "12")["ids"]
    got = _settle(fabric, ids, timeout=120)
    assert got["succeeded"] == got["expected"]
    assert set(got["attempts_by_host"]) == {"w1", "w2"}, got  # each host did part of the work
    assert min(got["attempts_by_host"].values()) >= 10, got
    assert got["worker_lost"] == 0 and got["in_flight"] == 0
    assert _duplicates(fabric.sim_state()) == {}


def test_a_worker_host_cut_off_mid_step_its_steps_finish_on_the_other_exactly_once(fabric):
    before = fabric.sim_state()
    assert "took the lock" not in fabric.log("beat-w2")  # one beat: w2 stands by while w1 leads
    ids = fabric.run("ctl", "start", "10")["ids"]
    fabric.wait_log("worker-w1", "POST http://", timeout=30)  # w1 is calling a service
    time.sleep(1.0)
    fabric.link("w1", up=False)  # w1 (and its beat, which held the lock) is gone mid-step
    try:
        got = _settle(fabric, ids, timeout=150)
        assert got["succeeded"] == got["expected"], got
        assert got["worker_lost"] >= 1, got  # w1's tries, closed as "outcome unknown"
        fabric.wait_log("beat-w2", "took the lock", timeout=30)  # beat moved to w2
    finally:
        fabric.link("w1", up=True)
    # w1 comes back: its late completions are refused by the fencing token, not applied.
    deadline = time.monotonic() + 90
    while "late completion refused" not in fabric.log("worker-w1"):
        assert time.monotonic() < deadline, fabric.log("worker-w1")[-4000:]
        time.sleep(1)
    got = _settle(fabric, ids, timeout=30)
    assert got["late_refused"] >= 1 and got["succeeded"] == got["expected"], got
    after = fabric.sim_state()
    assert _duplicates(after) == {}  # effects exactly once at the services that honour the key
    projects = (after["project-coordinator"]["counters"].get("POST /projects", 0)
                - before["project-coordinator"]["counters"].get("POST /projects", 0))
    assert projects >= 10  # every run called it; repeats were answered from the key store
    fabric.wait_log("beat-w1", "lost the lock", timeout=30)  # the old leader stood down


def test_a_web_host_lost_the_other_serves(fabric):
    for host in ("web1", "web2"):
        fabric.start_web(host)
    deadline = time.monotonic() + 60
    while not (fabric.curl_status("web1", "/health") == fabric.curl_status("web2", "/health") == 200):
        assert time.monotonic() < deadline, fabric.log("web-web1")[-2000:] + fabric.log("web-web2")[-2000:]
        time.sleep(0.5)
    fabric.link("web1", up=False)
    try:
        assert fabric.curl_status("web1", "/health", timeout=2) == 0  # gone
        assert fabric.curl_status("web2", "/health") == 200  # the other serves
        assert fabric.curl_status("web2", "/admin/login/") == 200  # same SECRET_KEY, same database
    finally:
        fabric.link("web1", up=True)
