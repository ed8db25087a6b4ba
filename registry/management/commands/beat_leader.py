"""``manage.py beat_leader``: run Celery beat on whichever host holds the beat lock.

Start it on two (or more) hosts instead of ``celery beat``: exactly one runs beat at a
time. The lock is a Redis key with a time-to-live (``BEAT_LEADER_TTL_SECONDS``) that the
leader renews every third of it; a standby takes it over once it expires (the leader's
host died or lost its network), so beat is back within about one TTL. A leader that
fails to renew in time stops its beat at once, before anyone else can take the lock,
so two beats never run for long: at worst one reconcile pass or one sweep is sent twice
in the hand-over, which both tolerate (each claims its work).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

LOCK_KEY = "berrys-portal:beat-leader"
# Renew only if we still hold it (compare-and-set): a leader that was partitioned and
# came back must not extend a lock that another host has taken meanwhile.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class Command(BaseCommand):
    help = "Run Celery beat on the one host holding the beat lock (start it on two hosts for failover)."

    def add_arguments(self, parser):
        parser.add_argument("--ttl", type=float, default=float(os.environ.get("BEAT_LEADER_TTL_SECONDS", 10)),
                            help="Seconds the lock lives without renewal (default 10, BEAT_LEADER_TTL_SECONDS).")
        parser.add_argument("beat_args", nargs="*", help="Extra arguments for celery beat (after --).")

    def handle(self, *args, ttl: float, beat_args: list[str], **options):
        if not settings.REDIS_URL:
            raise CommandError("beat_leader needs REDIS_URL (the lock lives in Redis)")
        if ttl < 3:
            raise CommandError("--ttl must be at least 3 seconds")
        me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        ttl_ms = int(ttl * 1000)
        # Short socket timeouts: a leader cut off from Redis must notice within the TTL.
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=min(2.0, ttl / 4),
                                      socket_connect_timeout=min(2.0, ttl / 4))
        renew, release = client.register_script(_RENEW), client.register_script(_RELEASE)
        stopping = {"now": False}

        def stop(signum, frame):
            stopping["now"] = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        beat: subprocess.Popen | None = None
        self.stdout.write(f"beat_leader {me}: standing by for the lock {LOCK_KEY}")
        try:
            while not stopping["now"]:
                if beat is None:
                    try:
                        won = client.set(LOCK_KEY, me, nx=True, px=ttl_ms)
                    except redis.RedisError:
                        won = False
                    if won:
                        self.stdout.write(f"beat_leader {me}: took the lock; starting beat")
                        beat = self._start_beat(beat_args)
                        renewed_at = time.monotonic()
                    else:
                        time.sleep(min(1.0, ttl / 5))
                    continue
                time.sleep(ttl / 3)
                try:
                    held = renew(keys=[LOCK_KEY], args=[me, ttl_ms]) == 1
                except redis.RedisError:
                    held = False
                if held:
                    renewed_at = time.monotonic()
                # Stop beat before the lock can expire under us (half a TTL after the last renewal).
                lost = not held and time.monotonic() - renewed_at > ttl / 2
                if lost or beat.poll() is not None:
                    why = "lost the lock" if lost else f"beat exited ({beat.returncode})"
                    self.stdout.write(f"beat_leader {me}: {why}; stopping beat, standing by")
                    self._stop_beat(beat)
                    beat = None
        finally:
            if beat is not None:
                self._stop_beat(beat)
                try:
                    release(keys=[LOCK_KEY], args=[me])
                except redis.RedisError:
                    pass

    @staticmethod
    def _start_beat(extra: list[str]) -> subprocess.Popen:
        return subprocess.Popen([
            sys.executable, "-m", "celery", "-A", "berrys_portal", "beat", "--loglevel", "INFO",
            "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "--pidfile=", *extra,
        ])

    @staticmethod
    def _stop_beat(beat: subprocess.Popen) -> None:
        if beat.poll() is None:
            beat.terminate()
            try:
                beat.wait(10)
            except subprocess.TimeoutExpired:
                beat.kill()
                beat.wait(5)
