"""What bench/scaleout.py reads off the machine while a batch runs: CPU seconds by process
(/proc), how busy the machine is (/proc/stat), PostgreSQL's WAL counters (pg_stat_wal) and, on
request, what the database's backends wait on (pg_stat_activity). Linux and PostgreSQL 14+."""

from __future__ import annotations

import os
import threading
import time


def cpu_of(markers: dict[str, str], pids: dict[str, int] | None = None) -> dict[int, tuple[str, float]]:
    """CPU seconds used so far, by process: those whose command line holds a marker and those
    ``pids`` names, each with its label (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    by_pid = {pid: label for label, pid in (pids or {}).items()}
    out: dict[int, tuple[str, float]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        label = by_pid.get(int(pid)) or next((k for k, m in markers.items() if m in cmd), None)
        if label:
            out[int(pid)] = (label, (int(fields[11]) + int(fields[12])) / tick)
    return out


def busy() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def wal() -> tuple[int, int, int, int]:
    """The server's WAL so far: (bytes, syncs, full-page images, MultiXacts) — every database's,
    the batch's own and the rest (pg_stat_wal, PostgreSQL 14+). A MultiXact is made when two
    transactions lock one row at once: the sign of a row every worker's steps share."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, wal_sync, wal_fpi, mxid_age('1'::xid) "
                       "FROM pg_stat_wal")
        return tuple(int(v) for v in cursor.fetchone())


def cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by label between two ``cpu_of`` readings (a process that ended meanwhile is not counted)."""
    out: dict[str, float] = {}
    for pid, (label, used) in after.items():
        out[label] = out.get(label, 0.0) + used - before.get(pid, (label, 0.0))[1]
    return out


class LockSampler:
    """Samples pg_stat_activity every 20 ms while armed: how often a backend of this database waits on a lock.

    The question it answers: do two worker processes queue behind each other in PostgreSQL
    (row locks on claims, a serialising statement)?
    """

    def __init__(self):
        import psycopg
        from django.conf import settings

        db = settings.DATABASES["default"]
        self.conn = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"],
                                    password=db.get("PASSWORD"), dbname=db["NAME"], autocommit=True)
        self.label: str | None = None
        self.samples: dict[str, list[int]] = {}  # label -> [samples, samples with a lock wait]
        self.waits: dict[str, int] = {}  # "label: statement" -> times seen waiting
        self.states: dict[str, dict[str, int]] = {}  # label -> backend state -> times seen
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            label = self.label
            if label:
                rows = self.conn.execute(
                    "SELECT left(query, 60), wait_event_type, state, wait_event FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
                got = self.samples.setdefault(label, [0, 0])
                got[0] += 1
                got[1] += any(kind == "Lock" for _, kind, _, _ in rows)
                states = self.states.setdefault(label, {})
                for query, kind, state, event in rows:
                    if kind == "Lock":
                        key = f"{label}: {query}"
                        self.waits[key] = self.waits.get(key, 0) + 1
                    # What the backends do: on CPU (active, no wait), waiting (on what), or idle
                    # (waiting for their client: the worker's Python, its HTTP call, the broker).
                    what = f"{state}: {kind}/{event}" if kind and state == "active" else (
                        "active: on CPU" if state == "active" else state)
                    states[what] = states.get(what, 0) + 1
            time.sleep(0.02)
