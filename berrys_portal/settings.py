"""Settings for the Berrys Portal, read from the environment.

The embedded default (no variables set) is a SQLite file and a filesystem
broker under ``var/``, so ``make demo`` runs anywhere. Production sets
``DJANGO_ENV=production`` plus ``DATABASE_URL``, ``REDIS_URL`` and ``SECRET_KEY``.

(About 600 lines, over the ~400 the project aims for: one flat settings module, as Django
reads it; each setting sits beside the comment that says what it bounds and why, and the
production profile (``DJANGO_ENV=production``) is a branch in it rather than a second file.
``settings_test`` and ``settings_watch`` only override it.)
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from berrys_portal.env import (
    env_bind,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_rate,
    env_str,
    parse_database_url,
    sqlite_database,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PORTAL_VAR_DIR", str(BASE_DIR / "var")))

DJANGO_ENV = env_str("DJANGO_ENV", "development")
if DJANGO_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured(f"DJANGO_ENV={DJANGO_ENV!r}: use development, production or test")
PRODUCTION = DJANGO_ENV == "production"

# The development profile (what `make demo` runs) is the only one with DEBUG: its technical
# 404/500 pages show settings and code. Production refuses DEBUG=1 outright.
DEVELOPMENT = DJANGO_ENV == "development"
DEBUG = env_bool("DEBUG", DEVELOPMENT)
if DEBUG and not DEVELOPMENT:
    raise ImproperlyConfigured(
        f"DEBUG=1 is refused under DJANGO_ENV={DJANGO_ENV}: debug pages expose settings and code "
        "(only the development profile may use DEBUG)"
    )
# Public by construction (it is in this file): fine for a laptop, refused in production.
DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-key-never-use-in-production"
if PRODUCTION:
    SECRET_KEY = env_str("SECRET_KEY", required=True)
    if SECRET_KEY == DEVELOPMENT_SECRET_KEY or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured(
            "SECRET_KEY is a development key: production needs its own (e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(64))')"
        )
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters in production")
else:
    SECRET_KEY = env_str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)

PORTAL_PORT = env_int("PORTAL_PORT", 8090, minimum=1)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list(
    "CSRF_TRUSTED_ORIGINS",
    [] if PRODUCTION else [f"http://localhost:{PORTAL_PORT}", f"http://127.0.0.1:{PORTAL_PORT}"],
)

INSTALLED_APPS = [
    # The admin with the portal's site (every action gated by permission, retention shown).
    "berrys_portal.apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "registry",
    "workflows",
    "dashboard",
    "axes",
    "csp",
]

MIDDLEWARE = [
    "berrys_portal.middleware.RequestLimitsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS/JS) straight from gunicorn, right after the
    # security headers and before anything that needs a session or the database.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "berrys_portal.middleware.BodySizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a lock-out raised during login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "berrys_portal.urls"
WSGI_APPLICATION = "berrys_portal.wsgi.application"
# The guide's client posts to /registry/services with no trailing slash; the
# routers accept both forms, so no redirect (which would drop a POST body).
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
CONN_MAX_AGE = env_int("CONN_MAX_AGE", 60, minimum=0)
_database_url = env_str("DATABASE_URL")
DATABASES = {
    "default": (
        parse_database_url(_database_url, base_dir=BASE_DIR, conn_max_age=CONN_MAX_AGE)
        if _database_url
        else sqlite_database(VAR_DIR / "portal.sqlite3")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache and broker ------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
if CELERY_BROKER_URL is None:
    # The embedded default: kombu's filesystem transport needs no server.
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://localhost//"  # a hostname, or kombu warns on every connection
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # kombu keeps its exchange table in "control/" under the working directory unless told.
        "control_folder": str(_broker_dir / "control"),
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # The default 1 s poll adds up to a second per workflow step hop in the demo.
        "polling_interval": env_float("CELERY_FILESYSTEM_POLL_SECONDS", 0.2, minimum=0.01),
    }
elif CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    # RabbitMQ, the durable choice: Celery declares durable queues and sends persistent
    # messages by default; publisher confirms make a publish return only once the broker
    # has the message. Quorum queues (RabbitMQ >= 3.8) replicate it across a cluster and
    # survive a node restart; CELERY_QUEUE_TYPE=classic for an older server. The type is
    # fixed when a queue is first declared: changing it needs the queue deleted.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
    CELERY_TASK_DEFAULT_QUEUE_TYPE = env_str("CELERY_QUEUE_TYPE", "quorum")
    if CELERY_TASK_DEFAULT_QUEUE_TYPE not in ("quorum", "classic"):
        raise ImproperlyConfigured("CELERY_QUEUE_TYPE must be quorum or classic")
    # Queues named per call (the workflow and health queues) are created with the same type.
    CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = CELERY_TASK_DEFAULT_QUEUE_TYPE
    # Quorum queues refuse global QoS; Celery then uses per-consumer prefetch.
    CELERY_WORKER_DETECT_QUORUM_QUEUES = True
    # A retry's countdown on a quorum queue uses RabbitMQ-native delayed delivery, which
    # needs topic exchanges (a queue's own name as the routing key still matches only it).
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
else:
    # Tasks whose countdown exceeds this are re-delivered by Redis; the workflow
    # engine never schedules a countdown longer than it (the reconciler takes over).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60),
    }
CELERY_VISIBILITY_TIMEOUT = CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Health sweeps and workflow steps run on separate queues, served by separate workers
# (Procfile: `worker` and `health`), so a step stuck on a slow service never stops
# monitoring. Step tasks go to WORKFLOW_QUEUE (set per call by the engine).
HEALTH_QUEUE = env_str("HEALTH_QUEUE", "health")
# The outbox's tasks (alerts derived from transition rows, and their delivery: registry.outbox)
# go to OUTBOX_QUEUE, served by the general worker: a slow webhook must not hold up a sweep.
OUTBOX_QUEUE = env_str("OUTBOX_QUEUE", "celery")
CELERY_TASK_ROUTES = {
    "registry.outbox_*": {"queue": OUTBOX_QUEUE},
    "registry.alert_*": {"queue": OUTBOX_QUEUE},
    "registry.*": {"queue": HEALTH_QUEUE},
}
# Celery time limits (soft: the task gets SoftTimeLimitExceeded and records it; hard: the
# pool process is killed). A step's HTTP call has its own total deadline well inside these.
WORKFLOW_STEP_SOFT_TIME_LIMIT = env_int("WORKFLOW_STEP_SOFT_TIME_LIMIT", 45, minimum=1)
WORKFLOW_STEP_TIME_LIMIT = env_int("WORKFLOW_STEP_TIME_LIMIT", 55, minimum=2)
HEALTH_TASK_SOFT_TIME_LIMIT = env_int("HEALTH_TASK_SOFT_TIME_LIMIT", 100, minimum=1)
HEALTH_TASK_TIME_LIMIT = env_int("HEALTH_TASK_TIME_LIMIT", 115, minimum=2)

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth, i18n, static -------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# ``manage.py collectstatic`` copies the static files here; WhiteNoise serves them.
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
if not PRODUCTION:
    # Outside production the files come from the apps (runserver, or WhiteNoise's finders
    # when DEBUG); an empty root only spares WhiteNoise's "No directory" warning.
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
if PRODUCTION:
    # Hashed names (cached forever by browsers) and pre-compressed copies. Needs
    # ``collectstatic`` before the first start: a page naming a file missing from the
    # manifest is an error rather than a silently unstyled admin.
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
LOGIN_URL = "admin:login"

# --- Admin login throttling (django-axes) --------------------------------------------
# Axes' backend first: it refuses a locked-out (username, address) before the password is
# even checked. force_login (the tests) goes through neither.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Lock a (username, client address) pair after this many failed logins in a row ...
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
# ... for this long (or until an operator deletes its row under Axes > Access attempts).
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 30, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# REMOTE_ADDR, or the proxy's X-Forwarded-For entry when TRUST_PROXY_HEADERS is on.
AXES_CLIENT_IP_CALLABLE = "berrys_portal.security.client_ip"
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"
# A wrong password is a normal event; axes logs every one at WARNING otherwise.
AXES_VERBOSE = False

# --- API ----------------------------------------------------------------------
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 256 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_BODY_BYTES, 2_621_440)
# --- Input hardening (berrys_portal.json_input, berrys_portal.middleware) --------------
# JSON bodies nested deeper than this are refused with 400 by the API's parser, before any view.
# Capped well below Python's recursion limit: code walking a body recursively must never crash.
API_MAX_JSON_DEPTH = env_int("API_MAX_JSON_DEPTH", 64, minimum=1)
if API_MAX_JSON_DEPTH > 500:
    raise ImproperlyConfigured(f"API_MAX_JSON_DEPTH={API_MAX_JSON_DEPTH} must be <= 500")
# Request line (method, target, protocol) and header limits, answered by the portal with 414/431 in
# the API's error shape. gunicorn's own limits (berrys_portal/gunicorn_conf.py) sit above these so
# that the portal, not gunicorn's HTML page, answers; gunicorn cannot be told more than 8190 for the line.
API_MAX_REQUEST_LINE_BYTES = env_int("API_MAX_REQUEST_LINE_BYTES", 4094, minimum=256)
API_MAX_HEADER_BYTES = env_int("API_MAX_HEADER_BYTES", 8190, minimum=256)
API_MAX_HEADERS = env_int("API_MAX_HEADERS", 100, minimum=10)
for _name, _value, _gunicorn in (("API_MAX_REQUEST_LINE_BYTES", API_MAX_REQUEST_LINE_BYTES, 8190),
                                 ("API_MAX_HEADER_BYTES", API_MAX_HEADER_BYTES, 16384),
                                 ("API_MAX_HEADERS", API_MAX_HEADERS, 200)):
    if _value >= _gunicorn:
        raise ImproperlyConfigured(
            f"{_name}={_value} must be below gunicorn's limit ({_gunicorn}, gunicorn_conf.py)"
        )
# --- Registry API (registry issue) -----------------------------------------------
# Registered url/health_url hosts must be IP literals inside one of these networks
# (or names resolving only into them) when the list is non-empty. Link-local is always refused.
REGISTRY_ALLOWED_NETWORKS = env_networks("REGISTRY_ALLOWED_NETWORKS")
if PRODUCTION and not REGISTRY_ALLOWED_NETWORKS:
    raise ImproperlyConfigured(
        "REGISTRY_ALLOWED_NETWORKS must be set in production (comma-separated CIDRs the portal "
        "may call, e.g. 10.20.0.0/16): without it any register key could point the portal's health "
        "probes, workflow steps and gateway at any address"
    )
# The egress policy (registry/egress.py): loopback is refused unless a loopback network is
# listed above or this is on (the default outside production, so the simulators work); the
# portal's own listening address (PORTAL_PORT on this host) only with EGRESS_ALLOW_SELF.
EGRESS_ALLOW_LOOPBACK = env_bool("EGRESS_ALLOW_LOOPBACK", not PRODUCTION)
EGRESS_ALLOW_SELF = env_bool("EGRESS_ALLOW_SELF", False)
# Per API key, for POST/PUT/PATCH/DELETE; DRF rate syntax: "<n>/<sec|min|hour|day>".
API_WRITE_THROTTLE_RATE = env_rate("API_WRITE_THROTTLE_RATE", "6000/min")
# ApiKey.last_used_at is written at most this often per key (not on every request).
API_KEY_LAST_USED_INTERVAL_SECONDS = env_int("API_KEY_LAST_USED_INTERVAL_SECONDS", 60, minimum=1)
# Valid keys are cached per process this long: a revocation reaches other processes within it.
API_KEY_CACHE_SECONDS = env_float("API_KEY_CACHE_SECONDS", 5.0, minimum=0)
# --- Identity and least privilege (identity issue) -------------------------------
# Per-key quotas (an ApiKey's max_instances / max_hosts override them): service instances
# a key may own, and distinct hosts (url and health_url) those instances may point at.
REGISTRY_KEY_MAX_INSTANCES = env_int("REGISTRY_KEY_MAX_INSTANCES", 50, minimum=1)
REGISTRY_KEY_MAX_HOSTS = env_int("REGISTRY_KEY_MAX_HOSTS", 10, minimum=1)
# Service types whose NEW instances wait for an operator's approval (admin) before discovery.
REGISTRY_APPROVAL_TYPES = [t.upper() for t in env_list("REGISTRY_APPROVAL_TYPES", [])]
# A heartbeat (or unchanged re-registration) within this many seconds of the recorded one
# writes nothing (for a TTL service, within a tenth of its TTL at most): see registry.services.
REGISTRY_HEARTBEAT_COALESCE_SECONDS = env_float("REGISTRY_HEARTBEAT_COALESCE_SECONDS", 5.0, minimum=0)

# The Consul-compatible read API (/v1/, registry/consul.py): the datacenter and node name it
# reports, and the Consul version whose answers the subset follows.
CONSUL_DATACENTER = env_str("CONSUL_DATACENTER", "dc1")
# Open blocking watches per process of the watch server: per API key (beyond it 429) and
# in all (beyond it 503), both with Retry-After; a watch that answers at once takes no slot.
WATCH_MAX_PER_KEY = env_int("WATCH_MAX_PER_KEY", 256, minimum=1)
WATCH_MAX_OPEN = env_int("WATCH_MAX_OPEN", 10_000, minimum=1)
WATCH_RETRY_AFTER_SECONDS = env_int("WATCH_RETRY_AFTER_SECONDS", 5, minimum=1)
CONSUL_NODE_NAME = env_str("CONSUL_NODE_NAME", "berrys-portal")
CONSUL_API_VERSION = "1.20.0"
# Scopes an operator may mint in the admin; registry:admin additionally needs a superuser.
API_KEY_ADMIN_MINTABLE_SCOPES = env_list(
    "API_KEY_ADMIN_MINTABLE_SCOPES",
    ["registry:read", "registry:write", "runs:read", "workflows", "gateway", "metrics"],
)
# /health's broker probe gives up after this many seconds.
HEALTH_BROKER_TIMEOUT_SECONDS = env_float("HEALTH_BROKER_TIMEOUT_SECONDS", 1.0, minimum=0.05)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["registry.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["registry.auth.HasApiKey"],
    "DEFAULT_PARSER_CLASSES": ["berrys_portal.json_input.PortalJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "berrys_portal.errors.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "berrys_portal.pagination.PortalPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": ["registry.auth.ApiKeyWriteThrottle"],
    "DEFAULT_THROTTLE_RATES": {"write": API_WRITE_THROTTLE_RATE},
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    # Swagger UI and ReDoc from drf-spectacular-sidecar's static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "TITLE": "Berrys Portal API",
    "DESCRIPTION": "Service registry, discovery, health, circuit breakers and workflows.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "PREPROCESSING_HOOKS": ["registry.urls.schema_hide_trailing_slash_twins"],
    # The API-key scheme comes from registry/schema.py (per operation, so /health shows none).
    "ENUM_NAME_OVERRIDES": {
        "HealthStatusEnum": "registry.models.HealthStatus",
        "CriticalityEnum": "registry.models.Criticality",
        "PortalHealthStatusEnum": [("healthy", "healthy"), ("unhealthy", "unhealthy")],
    },
}

# --- Health monitoring and breakers -------------------------------------------
HEALTH_DEFAULT_INTERVAL_SECONDS = env_int("HEALTH_DEFAULT_INTERVAL_SECONDS", 15, minimum=1)
HEALTH_DEFAULT_TIMEOUT_SECONDS = env_float("HEALTH_DEFAULT_TIMEOUT_SECONDS", 5.0, minimum=0.1)
HEALTH_SNAPSHOT_RETENTION_DAYS = env_int("HEALTH_SNAPSHOT_RETENTION_DAYS", 7, minimum=1)
ALERT_WEBHOOK_URLS = env_list("ALERT_WEBHOOK_URLS", [])
ADMINS = [
    (addr.split("@")[0], addr) for addr in env_list("ADMINS", [])
]
# Health sweep, breakers, alerts and the ServiceClient (health issue).
HEALTH_SWEEP_EVERY_SECONDS = env_int("HEALTH_SWEEP_EVERY_SECONDS", 5, minimum=1)
HEALTH_SWEEP_BATCH_SIZE = env_int("HEALTH_SWEEP_BATCH_SIZE", 500, minimum=1)
HEALTH_SWEEP_MAX_IN_FLIGHT = env_int("HEALTH_SWEEP_MAX_IN_FLIGHT", 500, minimum=1)
HEALTH_SWEEP_MAX_QUEUED = env_int("HEALTH_SWEEP_MAX_QUEUED", 20000, minimum=1)
HEALTH_SWEEP_CONCURRENCY = env_int("HEALTH_SWEEP_CONCURRENCY", 64, minimum=1)
HEALTH_SWEEP_SLOW_AFTER_SECONDS = env_float("HEALTH_SWEEP_SLOW_AFTER_SECONDS", 0.25, minimum=0.01)
HEALTH_PROBE_MAX_BODY_BYTES = env_int("HEALTH_PROBE_MAX_BODY_BYTES", 65536, minimum=1024)
# Egress bounds on the sweep (egress issue): registrations outside these are refused with a
# 400 naming the bound, existing rows are clamped when probed; per destination (address and
# port) at most N probes at once, M started per second, Q waiting (more are deferred).
HEALTH_MIN_INTERVAL_SECONDS = env_int("HEALTH_MIN_INTERVAL_SECONDS", 5, minimum=1)
HEALTH_MAX_TIMEOUT_SECONDS = env_float("HEALTH_MAX_TIMEOUT_SECONDS", 10.0, minimum=0.1)
HEALTH_PROBE_PER_DESTINATION_CONCURRENCY = env_int("HEALTH_PROBE_PER_DESTINATION_CONCURRENCY", 8, minimum=1)
HEALTH_PROBE_PER_DESTINATION_RATE = env_float("HEALTH_PROBE_PER_DESTINATION_RATE", 20.0, minimum=0.1)
# The beat sweep waits this long for slow probes once all due services are sent, then
# leaves them to a background writer and releases the sweep lock.
HEALTH_SWEEP_WAIT_SECONDS = env_float("HEALTH_SWEEP_WAIT_SECONDS", 3.0, minimum=0)
# The dashboard warns when the most overdue health check is later than this.
HEALTH_OVERDUE_WARNING_SECONDS = env_int("HEALTH_OVERDUE_WARNING_SECONDS", 60, minimum=1)
HEALTH_PROBE_PER_DESTINATION_QUEUE = env_int("HEALTH_PROBE_PER_DESTINATION_QUEUE", 100, minimum=1)
HEALTH_SWEEP_HELPERS = env_int("HEALTH_SWEEP_HELPERS", 0, minimum=0)
HEALTH_SWEEP_LOCK_SECONDS = env_int("HEALTH_SWEEP_LOCK_SECONDS", 120, minimum=5)
HEALTH_PRUNE_BATCH_SIZE = env_int("HEALTH_PRUNE_BATCH_SIZE", 5000, minimum=100)
BREAKER_REDIS_PREFIX = env_str("BREAKER_REDIS_PREFIX", "berrys:breaker")
# Where breaker state is shared: redis (default with REDIS_URL), database (default
# without: one row per service), or memory (one process only; a store's outage fallback).
BREAKER_STORE = env_str("BREAKER_STORE", "redis" if REDIS_URL else "database")
if BREAKER_STORE not in {"redis", "database", "memory"}:
    raise ImproperlyConfigured(f"BREAKER_STORE={BREAKER_STORE!r}: use redis, database or memory")
if BREAKER_STORE == "redis" and not REDIS_URL:
    raise ImproperlyConfigured("BREAKER_STORE=redis needs REDIS_URL")
# One directly raised alert (breaker_storage_down) per kind and window; alerts derived from
# transition rows are one per status change / breaker episode (registry.outbox).
ALERT_DEDUP_SECONDS = env_int("ALERT_DEDUP_SECONDS", 3600, minimum=0)
ALERT_WEBHOOK_ATTEMPTS = env_int("ALERT_WEBHOOK_ATTEMPTS", 4, minimum=1)
ALERT_WEBHOOK_BACKOFF_SECONDS = env_float("ALERT_WEBHOOK_BACKOFF_SECONDS", 0.5, minimum=0)
ALERT_WEBHOOK_TIMEOUT_SECONDS = env_float("ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.1)
# Delivery rounds of one alert (each round tries every channel not yet accepted), and the wait
# before the next round after a failed one (doubled each round).
ALERT_MAX_ROUNDS = env_int("ALERT_MAX_ROUNDS", 5, minimum=1)
ALERT_REDELIVER_SECONDS = env_int("ALERT_REDELIVER_SECONDS", 120, minimum=1)
# A delivery round's claim lasts its worst case (every webhook, every attempt, timed out) plus
# this margin; a worker that dies mid-round leaves the alert to another once the claim ends.
ALERT_ROUND_MARGIN_SECONDS = env_int("ALERT_ROUND_MARGIN_SECONDS", 60, minimum=1)
# How often beat runs the outbox catch-up (transitions a crash left unprocessed, due alerts).
OUTBOX_CATCH_UP_SECONDS = env_int("OUTBOX_CATCH_UP_SECONDS", 30, minimum=1)
SERVICE_CLIENT_RETRIES = env_int("SERVICE_CLIENT_RETRIES", 2, minimum=0)
SERVICE_CLIENT_BACKOFF_BASE_SECONDS = env_float("SERVICE_CLIENT_BACKOFF_BASE_SECONDS", 0.2, minimum=0)
SERVICE_CLIENT_BACKOFF_CAP_SECONDS = env_float("SERVICE_CLIENT_BACKOFF_CAP_SECONDS", 5.0, minimum=0)
SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS = env_float("SERVICE_CLIENT_DISCOVERY_CACHE_SECONDS", 1.0, minimum=0)
# PostgreSQL: discovery's pick runs as a prepared statement (planning it costs more than
# running it). Turn off behind a pooler that cannot keep prepared statements (PgBouncer
# in transaction mode before 1.21).
DISCOVERY_PREPARED_STATEMENT = env_bool("DISCOVERY_PREPARED_STATEMENT", True)
# Egress bounds (egress issue): a ServiceClient answer larger than this, counted after
# decompression, is an error; the gateway's concurrent calls per process, per API key and
# per target service type beyond these answer 503 with Retry-After.
SERVICE_CLIENT_MAX_BODY_BYTES = env_int("SERVICE_CLIENT_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
GATEWAY_MAX_CONCURRENT = env_int("GATEWAY_MAX_CONCURRENT", 4, minimum=1)
GATEWAY_MAX_CONCURRENT_PER_KEY = env_int("GATEWAY_MAX_CONCURRENT_PER_KEY", 2, minimum=1)
GATEWAY_MAX_CONCURRENT_PER_TARGET = env_int("GATEWAY_MAX_CONCURRENT_PER_TARGET", 2, minimum=1)
GATEWAY_RETRY_AFTER_SECONDS = env_int("GATEWAY_RETRY_AFTER_SECONDS", 1, minimum=1)
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
SERVER_EMAIL = env_str("SERVER_EMAIL", "portal@localhost")

# --- Workflows ----------------------------------------------------------------
WORKFLOW_RESPONSE_BODY_LIMIT = env_int("WORKFLOW_RESPONSE_BODY_LIMIT", 8192, minimum=256)
WORKFLOW_MAX_DELIVERIES = env_int("WORKFLOW_MAX_DELIVERIES", 3, minimum=1)
# Short leases renewed by the running worker's heartbeat: a dead worker's step is re-sent
# within about lease + reconcile period. The heartbeat must beat well inside the lease.
WORKFLOW_STEP_LEASE_SECONDS = env_int("WORKFLOW_STEP_LEASE_SECONDS", 15, minimum=3)
WORKFLOW_HEARTBEAT_SECONDS = env_float("WORKFLOW_HEARTBEAT_SECONDS", WORKFLOW_STEP_LEASE_SECONDS / 3,
                                       minimum=0.2)
if WORKFLOW_HEARTBEAT_SECONDS * 2 > WORKFLOW_STEP_LEASE_SECONDS:
    raise ImproperlyConfigured("WORKFLOW_HEARTBEAT_SECONDS must be at most half of WORKFLOW_STEP_LEASE_SECONDS")
WORKFLOW_PREPARED_STATEMENTS = env_bool("WORKFLOW_PREPARED_STATEMENTS", True)
# A worker that completes a step claims the run's next one in the same statement and runs it
# at once (no message, no second statement), for up to this many seconds per task; then the
# next step gets a message like any other. 0: every step goes through the broker.
WORKFLOW_INLINE_SECONDS = env_float("WORKFLOW_INLINE_SECONDS", 2.0, minimum=0)
WORKFLOW_RECONCILE_GRACE_SECONDS = env_int("WORKFLOW_RECONCILE_GRACE_SECONDS", 30, minimum=1)
# Extra modules holding workflow definitions (the tests' workers use it); see workflows.definitions.
WORKFLOW_DEFINITION_MODULES = env_list("WORKFLOW_DEFINITION_MODULES", [])
# Celery queue for step tasks (tests give each worker its own).
WORKFLOW_QUEUE = env_str("WORKFLOW_QUEUE", "celery")
WORKFLOW_RECONCILE_EVERY_SECONDS = env_int("WORKFLOW_RECONCILE_EVERY_SECONDS", 5, minimum=1)
# Grace for a queued step when the broker holds no message for the queue at all (flushed
# or restarted broker): its message is gone, re-send it at the next pass.
WORKFLOW_RECONCILE_EMPTY_QUEUE_GRACE_SECONDS = env_int("WORKFLOW_RECONCILE_EMPTY_QUEUE_GRACE_SECONDS", 3,
                                                       minimum=1)
# Celery's Django fixup closes the DB connection after EVERY task unless this is set:
# a new PostgreSQL connection per workflow step cost ~40 ms. With it, connections are
# reused (berrys_portal.celery drops broken/old ones before each task, as Django does per request).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, minimum=0)
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {}).update({
    "WorkflowRunStatusEnum": "workflows.models.RunStatus",
    "WorkflowStepStatusEnum": "workflows.models.StepStatus",
})

# --- Retention (berrys_portal.retention) ----------------------------------------------
# Rows older than these are deleted by the "portal: prune rows past retention" beat task.
# Health snapshots follow HEALTH_SNAPSHOT_RETENTION_DAYS (above).
WORKFLOW_RUN_RETENTION_DAYS = env_int("WORKFLOW_RUN_RETENTION_DAYS", 30, minimum=1)
STATUS_CHANGE_RETENTION_DAYS = env_int("STATUS_CHANGE_RETENTION_DAYS", 180, minimum=1)
BREAKER_EVENT_RETENTION_DAYS = env_int("BREAKER_EVENT_RETENTION_DAYS", 90, minimum=1)
ALERT_RETENTION_DAYS = env_int("ALERT_RETENTION_DAYS", 90, minimum=1)
# Rows (or runs, each with its children) deleted per transaction: keeps every lock short.
RETENTION_BATCH_SIZE = env_int("RETENTION_BATCH_SIZE", 500, minimum=1)
RETENTION_PRUNE_EVERY_SECONDS = env_int("RETENTION_PRUNE_EVERY_SECONDS", 3600, minimum=60)

# --- Request adapters (demo issue) --------------------------------------------
# Seconds a process keeps its adapter rules before re-reading them (saves also bump a
# version in the shared cache, which every process with Redis checks on each call).
ADAPTER_CACHE_SECONDS = env_float("ADAPTER_CACHE_SECONDS", 5.0, minimum=0)
# How often a process asks the shared cache whether a rule changed elsewhere.
ADAPTER_VERSION_CHECK_SECONDS = env_float("ADAPTER_VERSION_CHECK_SECONDS", 1.0, minimum=0)

# --- Logging ------------------------------------------------------------------
LOG_FORMAT = env_str("LOG_FORMAT", "text")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use text or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # run_id / step_id / service from berrys_portal.logging.log_context on every line.
    "filters": {
        "context": {"()": "berrys_portal.logging.ContextFilter"},
        "quiet_polls": {"()": "berrys_portal.logging.QuietPollFilter"},
    },
    "formatters": {
        "text": {"()": "berrys_portal.logging.TextFormatter"},
        "json": {"()": "berrys_portal.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        },
        "console_server": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context", "quiet_polls"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # axes logs every login at INFO (its AccessLog table keeps them anyway).
        "axes": {"level": "WARNING"},
        # Idle output: no INFO line per scheduled task (beat's "Sending due task", the
        # worker's "received" / "succeeded"; failures are still logged) nor per heartbeat.
        "celery.beat": {"level": env_str("CELERY_BEAT_LOG_LEVEL", "WARNING")},
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
        "django.server": {"handlers": ["console_server"], "propagate": False},
    },
}

# --- Dashboard, metrics and roles (dashboard issue) ------------------------------
# prometheus-client's multi-process mode: every gunicorn/Celery process writes its
# counters and histograms here; the process manager empties it at start
# (``manage.py metrics_reset``). Must be in the environment before prometheus_client
# is imported, hence os.environ and not only a setting.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "prometheus"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# Scrapers from these networks (CIDR) read /metrics without a key.
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", [])
# Celery workers keep Django's LOGGING (so LOG_FORMAT=json covers the engine's lines).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Dashboard windows.
DASHBOARD_FAILED_RUNS_SHOWN = env_int("DASHBOARD_FAILED_RUNS_SHOWN", 10, minimum=1)

# --- Web hardening ------------------------------------------------------------------
# gunicorn's listen address (berrys_portal/gunicorn_conf.py reads the same variable): loopback
# by default, a TLS-terminating proxy in front. "0.0.0.0:8090" only on purpose.
PORTAL_BIND = env_bind("PORTAL_BIND", f"127.0.0.1:{PORTAL_PORT}")
# Only a proxy we run may say "this came in over HTTPS" (X-Forwarded-Proto) and who the client
# is (X-Forwarded-For, for the login throttle): off, any client could claim either.
TRUST_PROXY_HEADERS = env_bool("TRUST_PROXY_HEADERS", False)
if TRUST_PROXY_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Content-Security-Policy (django-csp 4 format). No inline or third-party script anywhere:
# the admin, the dashboard and Swagger UI (its split view loads its init script from our
# origin) all load scripts from 'self'. Inline styles stay allowed: the dashboard's SVG charts
# and status badges colour elements with style attributes, which no nonce can cover.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, UNSAFE_INLINE],
        # Swagger UI's stylesheet draws its icons from data: URIs.
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        # ReDoc (/api/redoc) builds its search index in a Worker made from a blob: URL of its
        # own (self-hosted) script.
        "worker-src": [SELF, "blob:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"
    # The portal's own health endpoint must answer plain HTTP probes from load
    # balancers inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^health/?$"]
