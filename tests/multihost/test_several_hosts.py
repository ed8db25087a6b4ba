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
Skipped, with the reason, where namespaces cannot be made (not root, no ``ip``, no PostgreSQL
server binaries, no redis-server).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Unique per run (several checkouts may run the suite at once): bp-dur-<run>-<host>.
PREFIX = f"bp-dur-{uuid.uuid4().hex[:6]}-"
NET = "10.231.0"
HOSTS = {"db": 10, "sim": 20, "w1": 31, "w2": 32, "web1": 41, "web2": 42, "ctl": 50}
SIM_PORT, WEB_PORT = 8800, 8890
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None) \
    if Path("/usr/lib/postgresql").exists() else None


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "iproute2 (ip) and util-linux (unshare) are needed"
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        return "PostgreSQL server binaries (initdb, postgres) are not installed"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    probe = f"{PREFIX}probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True)


def addr(host: str) -> str:
    return f"{NET}.{HOSTS[host]}"


class Fabric:
    """The namespaces, the bridge and the processes running in them."""

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="bp-dur-mh-"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.namespaces: list[str] = []  # only these are deleted at the end
        self.secret = uuid.uuid4().hex * 2
        self.env = {
            "DJANGO_SETTINGS_MODULE": "berrys_portal.settings", "DEBUG": "0", "PYTHONPATH": str(ROOT),
            "SECRET_KEY": self.secret,  # must match across hosts
            "DATABASE_URL": f"postgres://postgres@{addr('db')}:5432/portal",
            "REDIS_URL": f"redis://{addr('db')}:6379/0",
            "REGISTRY_ALLOWED_NETWORKS": f"{NET}.0/24",
            "ALLOWED_HOSTS": "*", "WORKFLOW_QUEUE": "steps",
            "WORKFLOW_STEP_LEASE_SECONDS": "6", "WORKFLOW_RECONCILE_EVERY_SECONDS": "2",
            "WORKFLOW_RECONCILE_GRACE_SECONDS": "10", "BEAT_LEADER_TTL_SECONDS": "6",
            "CELERY_VISIBILITY_TIMEOUT": "60", "LOG_LEVEL": "INFO", "PATH": os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
        }

    # --- network ----------------------------------------------------------------------
    def _netns_add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.namespaces.append(ns)

    def build(self) -> None:
        self._netns_add(f"{PREFIX}sw")
        _ip("link", "add", "br0", "type", "bridge", ns=f"{PREFIX}sw")
        _ip("link", "set", "br0", "up", ns=f"{PREFIX}sw")
        for host in HOSTS:
            ns = PREFIX + host
            self._netns_add(ns)
            _ip("link", "add", f"p-{host}", "type", "veth", "peer", "name", "eth0", "netns", ns,
                ns=f"{PREFIX}sw")
            _ip("link", "set", f"p-{host}", "master", "br0", "up", ns=f"{PREFIX}sw")
            _ip("addr", "add", f"{addr(host)}/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)

    def link(self, host: str, up: bool) -> None:
        """Cut (or restore) a host's only link, as a pulled cable would."""
        _ip("link", "set", "eth0", "up" if up else "down", ns=PREFIX + host)

    def teardown(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- processes ----------------------------------------------------------------------
    def spawn(self, name: str, host: str, cmd: list[str], user: str | None = None, env: dict | None = None):
        """``cmd`` in ``host``'s namespace, with ``host`` as its hostname, logging to tmp/name.log."""
        inner = ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$@"', "sh"]
        if user:
            inner += ["runuser", "-u", user, "--"]
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            ["ip", "netns", "exec", PREFIX + host, *inner, *cmd], cwd=ROOT, env={**self.env, **(env or {})},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self.procs[name]

    def run(self, host: str, *args: str, timeout: float = 120) -> dict:
        """``python -m tests.multihost.node ARGS`` in ``host``; its last JSON line."""
        out = subprocess.run(["ip", "netns", "exec", PREFIX + host, sys.executable, "-m", "tests.multihost.node",
                              *args], cwd=ROOT, env=self.env, capture_output=True, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"node {args} failed:\n{out.stderr.decode()[-3000:]}")
        return json.loads(out.stdout.decode().strip().splitlines()[-1])

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: no {text!r} after {timeout}s:\n{self.log(name)[-3000:]}")
            time.sleep(0.2)

    def start_servers(self) -> None:
        pg = self.tmp / "pg"
        pg.mkdir()
        os.chown(self.tmp, pwd.getpwnam("postgres").pw_uid, -1)
        os.chown(pg, pwd.getpwnam("postgres").pw_uid, -1)
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(pg), "-A", "trust",
                        "--no-sync", "-U", "postgres"], check=True, capture_output=True)
        with open(pg / "pg_hba.conf", "a") as f:
            f.write(f"host all all {NET}.0/24 trust\n")
        # A dead client's session (and its locks) is noticed within seconds, not hours.
        self.spawn("postgres", "db", [str(PG_BIN / "postgres"), "-D", str(pg), "-k", str(pg), "-h", addr("db"),
                                      "-p", "5432", "-c", "fsync=off", "-c", "max_connections=200",
                                      "-c", "tcp_keepalives_idle=2", "-c", "tcp_keepalives_interval=1",
                                      "-c", "tcp_keepalives_count=3"], user="postgres")
        self.spawn("redis", "db", ["redis-server", "--bind", addr("db"), "--port", "6379", "--save", "",
                                   "--appendonly", "no", "--protected-mode", "no", "--dir", str(self.tmp)])
        self.wait_log("postgres", "ready to accept connections")
        self.wait_log("redis", "Ready to accept connections")
        subprocess.run(["ip", "netns", "exec", PREFIX + "db", "runuser", "-u", "postgres", "--",
                        str(PG_BIN / "createdb"), "-h", addr("db"), "portal"], check=True, capture_output=True)
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
    why = _unavailable()
    if why:
        pytest.skip(f"several-hosts tests skipped: {why}")
    if shutil.which("curl") is None:
        pytest.skip("several-hosts tests skipped: curl is not installed")
    fab = Fabric()
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


def _settle(fab: Fabric, ids: list[str], timeout: float) -> dict:
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
