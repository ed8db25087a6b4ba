"""Bench-only settings: the portal's settings plus a urlconf that also serves the ceiling view."""

from berrys_portal.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
DEBUG = False
LOGGING["root"]["level"] = "WARNING"  # noqa: F405 - no per-request log lines in the bench
