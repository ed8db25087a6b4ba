"""Hosts on one machine: network namespaces joined by veth pairs on one bridge, as root.

Shared by the several-hosts tests (``test_several_hosts.py``) and the scale-out bench
(``bench/scaleout.py``). Each host is a namespace ``<prefix><host>`` with one link (``eth0``,
``10.231.0.<n>/24``) to a bridge in ``<prefix>sw``; the prefix keeps concurrent runs apart and
``teardown`` deletes only the namespaces this object made. Processes started with ``spawn`` get
the host's name as their hostname (a UTS namespace), so Celery workers and attempts name their host.
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

ROOT = Path(__file__).resolve().parents[2]
NET = "10.231.0"
HOSTS = {"db": 10, "sim": 20, "w1": 31, "w2": 32, "web1": 41, "web2": 42, "ctl": 50}
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None) \
    if Path("/usr/lib/postgresql").exists() else None


def unavailable(prefix: str) -> str | None:
    """Why namespaces with private servers cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "iproute2 (ip) and util-linux (unshare) are needed"
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        return "PostgreSQL server binaries (initdb, postgres) are not installed"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    probe = f"{prefix}probe"
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

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}mh-"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.namespaces: list[str] = []  # only these are deleted at the end
        self.secret = uuid.uuid4().hex * 2
        self.env = {
            "DJANGO_SETTINGS_MODULE": "berrys_portal.settings", "DEBUG": "0", "PYTHONPATH": str(ROOT),
            "SECRET_KEY": self.secret,  # must match across hosts
            "DATABASE_URL": f"postgres://postgres@{addr('db')}:5432/portal",
            "REDIS_URL": f"redis://{addr('db')}:6379/0",
            "REGISTRY_ALLOWED_NETWORKS": f"{NET}.0/24",
            "ALLOWED_HOSTS": "*", "PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1",
        }

    # --- network ----------------------------------------------------------------------
    def _netns_add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.namespaces.append(ns)

    def build(self, hosts=HOSTS) -> None:
        sw = f"{self.prefix}sw"
        self._netns_add(sw)
        _ip("link", "add", "br0", "type", "bridge", ns=sw)
        _ip("link", "set", "br0", "up", ns=sw)
        for host in hosts:
            ns = self.prefix + host
            self._netns_add(ns)
            _ip("link", "add", f"p-{host}", "type", "veth", "peer", "name", "eth0", "netns", ns, ns=sw)
            _ip("link", "set", f"p-{host}", "master", "br0", "up", ns=sw)
            _ip("addr", "add", f"{addr(host)}/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)

    def link(self, host: str, up: bool) -> None:
        """Cut (or restore) a host's only link, as a pulled cable would."""
        _ip("link", "set", "eth0", "up" if up else "down", ns=self.prefix + host)

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
            ["ip", "netns", "exec", self.prefix + host, *inner, *cmd], cwd=ROOT, env={**self.env, **(env or {})},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self.procs[name]

    def run(self, host: str, *args: str, timeout: float = 120) -> dict:
        """``python -m tests.multihost.node ARGS`` in ``host``; its last JSON line."""
        out = subprocess.run(["ip", "netns", "exec", self.prefix + host, sys.executable, "-m",
                              "tests.multihost.node", *args], cwd=ROOT, env=self.env, capture_output=True,
                             timeout=timeout)
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

    def start_database(self) -> None:
        """Private PostgreSQL (database ``portal``) and Redis on the db host's address."""
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
        subprocess.run(["ip", "netns", "exec", self.prefix + "db", "runuser", "-u", "postgres", "--",
                        str(PG_BIN / "createdb"), "-h", addr("db"), "portal"], check=True, capture_output=True)
