"""Gatehouse settings, read from the environment; the defaults give the embedded setup (SQLite, filesystem broker).

`DATABASE_URL` switches to PostgreSQL and `REDIS_URL` to Redis (Celery broker, cache, throttling). Production is the
default: secrets must come from the environment (nothing is generated on disk), DEBUG is off, cookies are secure.
Development is the explicit opt-in, `GATEHOUSE_ENV=development` (the Makefile's targets and the test suite set it):
secrets kept under var/, DEBUG on, loopback systems reachable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from core.env import env_bool, env_choice, env_int, env_list, env_seconds, env_str
from core.logs import log_format

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("GATEHOUSE_VAR_DIR", str(BASE_DIR / "var")))

GATEHOUSE_ENV = env_choice("GATEHOUSE_ENV", "production", ("development", "production"))
PRODUCTION = GATEHOUSE_ENV == "production"
DEBUG = env_bool("GATEHOUSE_DEBUG", default=not PRODUCTION)


def _local_secret(name: str, make: Callable[[], str]) -> str:
    """A development-only secret kept under var/, so restarts keep sessions and decryptable credentials."""
    if PRODUCTION:
        raise ImproperlyConfigured(
            f"{name} must be set when GATEHOUSE_ENV=production (the default). For local work, set "
            "GATEHOUSE_ENV=development: secrets are then generated under var/."
        )
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / f"{name.lower()}.txt"
    if not path.exists():
        # Written aside, then linked into place, which fails if another process got there first: processes starting
        # together (the demo's, the suite's parallel workers) all read one whole secret, never an empty or second one.
        fd, draft = tempfile.mkstemp(dir=VAR_DIR, prefix=f".{name.lower()}.")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(make())
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            os.unlink(draft)
    return path.read_text().strip()


SECRET_KEY = env_str("GATEHOUSE_SECRET_KEY") or _local_secret("GATEHOUSE_SECRET_KEY", lambda: secrets.token_urlsafe(50))


def _credential_keys() -> list[str]:
    """Fernet keys for the credential vault, newest first; older keys only decrypt (key rotation)."""
    keys = env_list("GATEHOUSE_CREDENTIAL_KEYS") or [
        _local_secret("GATEHOUSE_CREDENTIAL_KEYS", lambda: Fernet.generate_key().decode())
    ]
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(
                f"GATEHOUSE_CREDENTIAL_KEYS: key {position} is not a Fernet key "
                "(32 url-safe base64-encoded bytes; make one with `python -c 'from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())'`)."
            ) from exc
    return keys


GATEHOUSE_CREDENTIAL_KEYS = _credential_keys()

# Signs the audit chain's checkpoints (HMAC-SHA256). Kept outside the database: whoever can rewrite the audit table
# must not also be able to sign a matching checkpoint. Development derives one from SECRET_KEY; production requires it.
GATEHOUSE_AUDIT_DIGEST_KEY = env_str("GATEHOUSE_AUDIT_DIGEST_KEY") or (
    _local_secret("GATEHOUSE_AUDIT_DIGEST_KEY", str)
    if PRODUCTION
    else hashlib.sha256(f"gatehouse-audit-digest:{SECRET_KEY}".encode()).hexdigest()
)

ALLOWED_HOSTS = env_list("GATEHOUSE_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("GATEHOUSE_CSRF_TRUSTED_ORIGINS")


def _port(name: str) -> int | None:
    """A TCP port from the environment; None when it is not set."""
    port = env_int(name, 0, minimum=1) or None
    if port is not None and port > 65535:
        raise ImproperlyConfigured(f"{name}={port} is not valid: expected a port number from 1 to 65535.")
    return port


# Where the demo serves: `make run` starts the web process and the sample CRMs on these ports (the Makefile sets them
# to 8000, 8100 and 8101 unless told otherwise). seed_demo points the sample systems at the CRM ports; when a port is
# not set, it uses the default for a system it creates and leaves one that exists where it is
# (console/demo_connections.py).
GATEHOUSE_WEB_PORT = _port("GATEHOUSE_WEB_PORT")
GATEHOUSE_CRM_PORT = _port("GATEHOUSE_CRM_PORT")
GATEHOUSE_CRM_STAGING_PORT = _port("GATEHOUSE_CRM_STAGING_PORT")
# Links in e-mails and the MCP issuer: where people and agents reach Gatehouse (the demo's web port by default).
BASE_URL = env_str("GATEHOUSE_BASE_URL", f"http://127.0.0.1:{GATEHOUSE_WEB_PORT or 8000}")

INSTALLED_APPS = [
    "gatehouse.apps.GatehouseAdminConfig",  # django.contrib.admin, with the role dashboard as its home page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here: the API docs work offline
    "simple_history",
    "axes",  # admin sign-in lockout after repeated wrong passwords
    "governance",
    "connectors",
    "approvals",
    "audit",
    "webhooks",  # outbound webhooks: subscriptions, the deliveries' outbox (registers with the trail at start)
    "console",  # the people's pages and commands that are not a model's admin (dashboards, demo seeding)
    "gatehouse.apps.GatehouseConfig",  # the project shell: its system checks
]

MIDDLEWARE = [
    "gatehouse.middleware.RequestIdMiddleware",
    "console.metrics.RequestMetricsMiddleware",  # latency histogram and access line, inside the request id
    "gatehouse.middleware.DatabaseUnavailableMiddleware",  # a lost database connection → 503, not a 500
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "gatehouse.middleware.SignInMiddleware",  # how the session's person signed in, named in their audit events
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lockout into its 429 page
]

ROOT_URLCONF = "gatehouse.urls"
WSGI_APPLICATION = "gatehouse.wsgi.application"
ASGI_APPLICATION = "gatehouse.asgi.application"

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

# --- Database ---------------------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    if not DATABASE_URL.startswith(("postgres://", "postgresql://")):
        raise ImproperlyConfigured("DATABASE_URL must be a postgresql:// URL (the embedded default is SQLite).")
    # Persistent connections: a new connection per request cut throughput threefold (PERFORMANCE.md).
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=600, conn_health_checks=True)}
    # Under ASGI each request runs in a thread of its own, so a persistent connection (kept per thread) is never
    # reused and piles up until PostgreSQL refuses clients (bench/reliability.py: ~100 connections at 10 agents).
    # The ASGI entry point (governance/asgi.py) sets a pool size instead: each request borrows one of that many
    # connections and gives it back at its end (Django's advice for ASGI). Workers and commands keep one each.
    DB_POOL_SIZE = env_int("GATEHOUSE_DB_POOL_SIZE", 0, minimum=0)
    if DB_POOL_SIZE:
        # CONN_HEALTH_CHECKS stays on: Django then has the pool check a connection before lending it.
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, DB_POOL_SIZE),
            "max_size": DB_POOL_SIZE,
            "timeout": 10,  # a request waits this long for a free connection, then answers 503
        }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "gatehouse.sqlite3"),
            # A file, not memory: the suite's web and worker processes share the test database.
            "TEST": {"NAME": str(VAR_DIR / "test-gatehouse.sqlite3")},
            "OPTIONS": {
                # IMMEDIATE: writers queue on the lock instead of failing with "database is locked" mid-transaction.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
if env_str("GATEHOUSE_DB_NAME"):
    # Points a process at another database of the same server (the suite's web and worker processes use it).
    DATABASES["default"]["NAME"] = env_str("GATEHOUSE_DB_NAME")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache, Celery ---------------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured("REDIS_URL must be a redis:// or rediss:// URL.")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_TASK_SOFT_TIME_LIMIT = env_int("GATEHOUSE_TASK_SOFT_TIME_LIMIT", 60, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("GATEHOUSE_TASK_TIME_LIMIT", 90, minimum=2)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured("GATEHOUSE_TASK_TIME_LIMIT must be larger than GATEHOUSE_TASK_SOFT_TIME_LIMIT.")
# The filesystem broker's URL names its (unused) host: without one, kombu warns "No hostname was supplied" in every
# process that connects.
CELERY_BROKER_URL = REDIS_URL or "filesystem://localhost//"
_BROKER_DIR = Path(env_str("GATEHOUSE_BROKER_DIR", str(VAR_DIR / "broker")))
CELERY_TASK_DEFAULT_QUEUE = env_str("GATEHOUSE_CELERY_QUEUE", "celery")
# Redis only: a task not acknowledged this many seconds after its delivery is delivered again (acks_late), even while
# its first run goes on. It must outlast the hard time limit (a system check warns otherwise): the second delivery
# is suppressed and counted (Proposal.duplicate_deliveries), but it is wasted work.
GATEHOUSE_BROKER_VISIBILITY_TIMEOUT = env_int(
    "GATEHOUSE_BROKER_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT * 4, minimum=1
)
if REDIS_URL:
    # Short socket timeouts: with Redis down, publishing fails fast and the outbox keeps the work for the sweeper.
    # Workers look for messages past the visibility timeout every quarter of it (1-10 s), each time: kombu's own
    # default looks every 10th time of every 10 s, so a message could come back up to 100 s late.
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        "visibility_timeout": GATEHOUSE_BROKER_VISIBILITY_TIMEOUT,
        "unacked_restore_interval": max(1, min(10, GATEHOUSE_BROKER_VISIBILITY_TIMEOUT // 4)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 0.5,
        "socket_timeout": 2,
        "max_retries": 0,
    }
    CELERY_BROKER_CONNECTION_TIMEOUT = 0.5
else:
    for sub in ("queue", "processed", "control"):
        (_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
# Celery's Django fixup closes every database connection before and after each task unless told to reuse them; a new
# PostgreSQL connection per task cost more than the task itself. Reused here for up to this many tasks, and dropped
# sooner when broken or older than CONN_MAX_AGE (gatehouse/celery.py checks them around each task as Django does
# around a request).
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker whose broker went away keeps reconnecting (2 s apart, growing to 30 s) for as long as it takes, instead of
# exiting after Celery's default 100 tries (about 46 minutes); the outbox keeps the work meanwhile.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TASK_ALWAYS_EAGER = env_bool("GATEHOUSE_TASKS_EAGER", default=False)
# What a task prints goes to the worker's own output as it is, not through its logger as a WARNING line per write:
# the demo's console e-mail backend prints each mail the workers send (a new proposal's request to decide among them).
CELERY_WORKER_REDIRECT_STDOUTS = False
# Tool pinning: how often each MCP system's live tool list is compared with the definitions its actions pinned
# (connectors/mcp/pinning.py). Writes verify their own tool at call time too; this catches the rest and tells the owner.
GATEHOUSE_MCP_TOOL_CHECK_INTERVAL = env_seconds("GATEHOUSE_MCP_TOOL_CHECK_INTERVAL", timedelta(minutes=15))
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "outbox-sweep": {"task": "approvals.outbox_sweep", "schedule": 10.0},
    "escalate-and-expire": {"task": "approvals.escalate_and_expire", "schedule": 60.0},
    "purge-idempotency-keys": {"task": "approvals.purge_idempotency_keys", "schedule": 3600.0},
    "resume-reversals": {"task": "approvals.resume_reversals", "schedule": 60.0},
    "resume-paused-executions": {"task": "approvals.resume_paused_executions", "schedule": 60.0},
    # Walk the audit chain, record the result, and sign its head so a deleted tail is noticed at the next run.
    "audit-verify-and-checkpoint": {"task": "audit.verify_and_checkpoint", "schedule": 300.0},
    "tell-rotation-due": {"task": "connectors.tell_rotation_due", "schedule": 86400.0},  # owners, once a day
    # Each batch system is polled on its own interval (its "every"); this only asks which are due.
    "poll-batch-systems": {"task": "connectors.poll_batch_systems", "schedule": 10.0},
    "check-mcp-tools": {
        "task": "connectors.check_mcp_tools",
        "schedule": GATEHOUSE_MCP_TOOL_CHECK_INTERVAL.total_seconds(),
    },
    # Webhook deliveries no worker took up (broker down, message lost, worker died) are published again.
    "webhooks-sweep": {"task": "webhooks.sweep", "schedule": 10.0},
}

# --- Auth, i18n, static -----------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Brute force on the admin sign-in: after GATEHOUSE_LOGIN_FAILURE_LIMIT wrong passwords for one username from one
# address, that pair is refused (429) until the cool-off has passed. AxesStandaloneBackend first: it refuses a
# locked-out pair before a password is even checked; callers of authenticate() must pass the request.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("GATEHOUSE_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_seconds("GATEHOUSE_LOGIN_COOLOFF", timedelta(minutes=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
# The address is REMOTE_ADDR (django-ipware is not installed); behind the TLS proxy, uvicorn sets it from the proxy's
# X-Forwarded-For (trusted from --forwarded-allow-ips only, see README "Deploying to production").

# --- Single sign-on (OIDC) --------------------------------------------------------------------------------------
# People sign in through the company's identity provider when GATEHOUSE_OIDC_ISSUER is set (gatehouse/oidc.py, on
# mozilla-django-oidc; accounts and roles in governance/sign_in.py). The endpoints come from the issuer's discovery
# document (`<issuer>/.well-known/openid-configuration`, read once per process) unless named here one by one. An
# account is bound to the provider's `sub` for that issuer, never matched by e-mail. Its roles are the role groups
# GATEHOUSE_OIDC_ROLE_MAP maps its provider groups to (a JSON object: provider group → role name, or a list of role
# names), set again at every sign-in; someone whose groups map to no role is refused.
GATEHOUSE_OIDC_ISSUER = env_str("GATEHOUSE_OIDC_ISSUER")
GATEHOUSE_OIDC = bool(GATEHOUSE_OIDC_ISSUER)
GATEHOUSE_OIDC_CLIENT_ID = env_str("GATEHOUSE_OIDC_CLIENT_ID")
GATEHOUSE_OIDC_CLIENT_SECRET = env_str("GATEHOUSE_OIDC_CLIENT_SECRET")
GATEHOUSE_OIDC_SCOPES = env_str("GATEHOUSE_OIDC_SCOPES", "openid email profile groups")
GATEHOUSE_OIDC_GROUPS_CLAIM = env_str("GATEHOUSE_OIDC_GROUPS_CLAIM", "groups") or "groups"
# The sign-in button's words: "Sign in with <name>".
GATEHOUSE_OIDC_PROVIDER_NAME = env_str("GATEHOUSE_OIDC_PROVIDER_NAME", "your company account")
GATEHOUSE_OIDC_AUTHORIZATION_ENDPOINT = env_str("GATEHOUSE_OIDC_AUTHORIZATION_ENDPOINT")
GATEHOUSE_OIDC_TOKEN_ENDPOINT = env_str("GATEHOUSE_OIDC_TOKEN_ENDPOINT")
GATEHOUSE_OIDC_USERINFO_ENDPOINT = env_str("GATEHOUSE_OIDC_USERINFO_ENDPOINT")
GATEHOUSE_OIDC_JWKS_URI = env_str("GATEHOUSE_OIDC_JWKS_URI")
GATEHOUSE_OIDC_TIMEOUT = env_int("GATEHOUSE_OIDC_TIMEOUT", 10, minimum=1)


def _oidc_role_map() -> dict[str, list[str]]:
    """GATEHOUSE_OIDC_ROLE_MAP as provider group → role names. The names are checked against the roles when the
    apps are loaded (gatehouse/checks.py) and at every sign-in (governance/sign_in.py)."""
    raw = env_str("GATEHOUSE_OIDC_ROLE_MAP").strip()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"GATEHOUSE_OIDC_ROLE_MAP is not JSON: {exc}.") from exc
    if not isinstance(parsed, dict):
        raise ImproperlyConfigured('GATEHOUSE_OIDC_ROLE_MAP must be a JSON object: {"provider group": "Approvers"}.')
    roles: dict[str, list[str]] = {}
    for group, names in parsed.items():
        listed = [names] if isinstance(names, str) else names
        if not isinstance(listed, list) or not listed or not all(isinstance(n, str) and n for n in listed):
            raise ImproperlyConfigured(
                f"GATEHOUSE_OIDC_ROLE_MAP: {group!r} must map to a role name or a list of role names."
            )
        roles[group] = listed
    return roles


GATEHOUSE_OIDC_ROLE_MAP = _oidc_role_map()
if GATEHOUSE_OIDC:
    if not (GATEHOUSE_OIDC_CLIENT_ID and GATEHOUSE_OIDC_CLIENT_SECRET):
        raise ImproperlyConfigured(
            "GATEHOUSE_OIDC_ISSUER is set: GATEHOUSE_OIDC_CLIENT_ID and GATEHOUSE_OIDC_CLIENT_SECRET must be set too."
        )
    if PRODUCTION and not GATEHOUSE_OIDC_ISSUER.startswith("https://"):
        raise ImproperlyConfigured("GATEHOUSE_OIDC_ISSUER must be an https:// URL in production.")
    if "openid" not in GATEHOUSE_OIDC_SCOPES.split():
        raise ImproperlyConfigured("GATEHOUSE_OIDC_SCOPES must include openid.")
# Local passwords: on in development (the demo's users); in production off once single sign-on is configured, and on
# while it is not (there would be no way in). Off: the sign-in page offers only the provider's button and a password
# POST is refused. Switching them off with no provider configured stops the process: nobody could sign in.
GATEHOUSE_LOCAL_PASSWORDS = env_bool("GATEHOUSE_LOCAL_PASSWORDS", default=not (PRODUCTION and GATEHOUSE_OIDC))
if not (GATEHOUSE_LOCAL_PASSWORDS or GATEHOUSE_OIDC):
    raise ImproperlyConfigured(
        "GATEHOUSE_LOCAL_PASSWORDS is off and no GATEHOUSE_OIDC_ISSUER is set: nobody could sign in."
    )
if GATEHOUSE_OIDC:
    # The provider's backend before the password one; without local passwords there is no password backend at all,
    # so no door can check one. (The OIDC backend also answers permission questions, as ModelBackend does.)
    AUTHENTICATION_BACKENDS = [
        "axes.backends.AxesStandaloneBackend",
        "gatehouse.oidc.GatehouseOIDCBackend",
        *(["django.contrib.auth.backends.ModelBackend"] if GATEHOUSE_LOCAL_PASSWORDS else []),
    ]
# mozilla-django-oidc's own settings, from the ones above (the endpoints are resolved per process: gatehouse/oidc.py).
OIDC_RP_CLIENT_ID = GATEHOUSE_OIDC_CLIENT_ID
OIDC_RP_CLIENT_SECRET = GATEHOUSE_OIDC_CLIENT_SECRET
OIDC_RP_SCOPES = GATEHOUSE_OIDC_SCOPES
# RS* and ES* only: mozilla-django-oidc fetches the provider's public key (JWKS) for those alone; for any other
# algorithm (PS256 included) it would verify with the client secret, so no provider's token could ever pass.
OIDC_RP_SIGN_ALGO = env_choice(
    "GATEHOUSE_OIDC_SIGN_ALGO", "RS256", ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
)
OIDC_USE_PKCE = True  # the code is useless to whoever intercepts it without the verifier (RFC 7636)
OIDC_USE_NONCE = True
OIDC_TIMEOUT = GATEHOUSE_OIDC_TIMEOUT
OIDC_VERIFY_SSL = True
OIDC_STORE_ACCESS_TOKEN = OIDC_STORE_ID_TOKEN = False  # Gatehouse calls nothing on the person's behalf
# Where the admin sends a person who is not signed in, with `?next=` (kept through the provider's round trip).
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "/admin/"
LOGIN_REDIRECT_URL_FAILURE = "/oidc/refused/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("GATEHOUSE_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
EMAIL_BACKEND = env_str("GATEHOUSE_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("GATEHOUSE_FROM_EMAIL", "gatehouse@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# The SMTP backend's server. A timeout, so a mail server that hangs cannot hold a web request or a worker.
EMAIL_HOST = env_str("GATEHOUSE_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("GATEHOUSE_EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("GATEHOUSE_EMAIL_USER")
EMAIL_HOST_PASSWORD = env_str("GATEHOUSE_EMAIL_PASSWORD")
EMAIL_USE_TLS = env_bool("GATEHOUSE_EMAIL_STARTTLS")
EMAIL_USE_SSL = env_bool("GATEHOUSE_EMAIL_SSL")
EMAIL_TIMEOUT = env_int("GATEHOUSE_EMAIL_TIMEOUT", 10, minimum=1)
# With GATEHOUSE_EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend: the folder each message is written to
# as a file (the end-to-end tests read the running stack's mail there).
EMAIL_FILE_PATH = env_str("GATEHOUSE_EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("Set GATEHOUSE_EMAIL_STARTTLS or GATEHOUSE_EMAIL_SSL, not both.")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# An admin session that approves money movements ends after a working day, not Django's two weeks.
SESSION_COOKIE_AGE = int(env_seconds("GATEHOUSE_SESSION_AGE", timedelta(hours=12)).total_seconds())
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("GATEHOUSE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env_int("GATEHOUSE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Probes and scrapers often call over plain HTTP inside the network: answer them rather than redirect.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# --- History ----------------------------------------------------------------------------------------------------
# A revert from history would change a governed row without the checks and sign-off of the normal path.
SIMPLE_HISTORY_REVERT_DISABLED = True
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True

# --- API --------------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["agents.rest.auth.AgentTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["agents.rest.auth.IsActiveAgent"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["agents.rest.parsers.LimitedJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["agents.throttle.AgentRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "agents.rest.errors.problem_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Gatehouse Agent API",
    "DESCRIPTION": "Governed reads and proposals for AI agents. Errors are application/problem+json (RFC 9457).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Swagger UI from drf-spectacular-sidecar's static files, not a CDN: /api/v1/docs/ works offline and loads
    # nothing from another origin (agents/rest/urls.py serves it without inline script, for a strict CSP).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Gatehouse --------------------------------------------------------------------------------------------------
# Every token expires: this long unless its issuer says otherwise, and never later than the maximum.
GATEHOUSE_TOKEN_DEFAULT_EXPIRY = env_seconds("GATEHOUSE_TOKEN_DEFAULT_EXPIRY", timedelta(days=90))
GATEHOUSE_TOKEN_MAX_LIFETIME = env_seconds("GATEHOUSE_TOKEN_MAX_LIFETIME", timedelta(days=365))
if GATEHOUSE_TOKEN_DEFAULT_EXPIRY > GATEHOUSE_TOKEN_MAX_LIFETIME:
    raise ImproperlyConfigured("GATEHOUSE_TOKEN_DEFAULT_EXPIRY must not be longer than GATEHOUSE_TOKEN_MAX_LIFETIME.")
GATEHOUSE_REQUIRE_SERVICES = env_bool("GATEHOUSE_REQUIRE_SERVICES", default=False)
# Where no signed-off rule decides, one approver decides within this SLA.
GATEHOUSE_FALLBACK_SLA = env_seconds("GATEHOUSE_FALLBACK_SLA", timedelta(hours=4))
# Idempotency keys are kept at least this long (Stripe keeps 24 h).
GATEHOUSE_IDEMPOTENCY_TTL = env_seconds("GATEHOUSE_IDEMPOTENCY_TTL", timedelta(hours=48))
GATEHOUSE_MAX_BODY_BYTES = env_int("GATEHOUSE_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
GATEHOUSE_MAX_JSON_DEPTH = env_int("GATEHOUSE_MAX_JSON_DEPTH", 20, minimum=2)
GATEHOUSE_AGENT_RATE = env_str("GATEHOUSE_AGENT_RATE", "1200/min")
# What agent calls are checked against (tokens, grants, systems, rules) is kept per process and asked of the database
# once per call (governance/policy_cache.py). Off: every lookup asks the database (to measure, or to rule it out).
GATEHOUSE_POLICY_CACHE = env_bool("GATEHOUSE_POLICY_CACHE", default=True)
# Execution: bounded retries with exponential backoff and jitter; a claim older than the lease is taken over.
GATEHOUSE_EXECUTION_MAX_ATTEMPTS = env_int("GATEHOUSE_EXECUTION_MAX_ATTEMPTS", 6, minimum=1)
GATEHOUSE_EXECUTION_BACKOFF = env_seconds("GATEHOUSE_EXECUTION_BACKOFF", timedelta(seconds=2))
GATEHOUSE_EXECUTION_BACKOFF_MAX = env_seconds("GATEHOUSE_EXECUTION_BACKOFF_MAX", timedelta(minutes=5))
GATEHOUSE_OUTBOX_REPUBLISH_AFTER = env_seconds("GATEHOUSE_OUTBOX_REPUBLISH_AFTER", timedelta(seconds=30))
# The MCP endpoint: a call still running after GATEHOUSE_MCP_SLOW_CALL tells the client so (a `notice` log message);
# log messages go at GATEHOUSE_MCP_LOG_LEVEL and above unless the call's `_meta` names another level (stateless: no
# session keeps a logging/setLevel); wait_for_decision waits at most GATEHOUSE_MCP_WAIT_MAX.
GATEHOUSE_MCP_SLOW_CALL = env_seconds("GATEHOUSE_MCP_SLOW_CALL", timedelta(seconds=1))
GATEHOUSE_MCP_LOG_LEVEL = env_choice(
    "GATEHOUSE_MCP_LOG_LEVEL", "info", ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
)
GATEHOUSE_MCP_WAIT_MAX = env_seconds("GATEHOUSE_MCP_WAIT_MAX", timedelta(minutes=5))
# A read that finds its system's rate limit reached waits this long for a token, then answers 503 with Retry-After.
GATEHOUSE_READ_RATE_WAIT = env_seconds("GATEHOUSE_READ_RATE_WAIT", timedelta(seconds=1))
# Escalation: a proposal past its SLA whose named approver has no active delegate is reassigned to this group's
# members as well (the on-call people; "" turns that off). An overdue second review is escalated once, then its
# reviewers and on-call are reminded this often until someone reviews it.
GATEHOUSE_ONCALL_GROUP = env_str("GATEHOUSE_ONCALL_GROUP", "Operators")
GATEHOUSE_REVIEW_REMINDER_EVERY = env_seconds("GATEHOUSE_REVIEW_REMINDER_EVERY", timedelta(hours=24))

# --- Approvals from Slack (approvals/slack/, console/slack.py) --------------------------------------------------
# Off unless both secrets are set: the bot token posts and updates the messages (Slack's Web API at
# GATEHOUSE_SLACK_API_URL, a setting so tests can run a stand-in), the signing secret verifies the button clicks that
# Slack sends to /integrations/slack/interactions. GATEHOUSE_SLACK_CHANNEL: post to that channel (its id, C…);
# empty: a direct message to each person who may decide, found by their e-mail address in Slack.
GATEHOUSE_SLACK_API_URL = env_str("GATEHOUSE_SLACK_API_URL", "https://slack.com/api/")
GATEHOUSE_SLACK_BOT_TOKEN = env_str("GATEHOUSE_SLACK_BOT_TOKEN")
GATEHOUSE_SLACK_SIGNING_SECRET = env_str("GATEHOUSE_SLACK_SIGNING_SECRET")
GATEHOUSE_SLACK_CHANNEL = env_str("GATEHOUSE_SLACK_CHANNEL")
# The company's Slack workspace (its team id, T…): clicks from any other workspace are refused. Empty: not checked.
GATEHOUSE_SLACK_TEAM_ID = env_str("GATEHOUSE_SLACK_TEAM_ID")
if bool(GATEHOUSE_SLACK_BOT_TOKEN) != bool(GATEHOUSE_SLACK_SIGNING_SECRET):
    raise ImproperlyConfigured(
        "Slack approvals need both GATEHOUSE_SLACK_BOT_TOKEN and GATEHOUSE_SLACK_SIGNING_SECRET (or neither)."
    )
if not GATEHOUSE_SLACK_API_URL.startswith(("https://", "http://127.", "http://localhost")):
    raise ImproperlyConfigured("GATEHOUSE_SLACK_API_URL must be an https:// URL (or http:// on loopback, for tests).")

# --- Approvals from e-mail (approvals/decision_links.py, approvals/decision_mail.py) ----------------------------
# The approver's e-mail links to the proposal's page with a signed link of their own: it opens the page once, for
# them, and lapses when the time to decide does or after this long, whichever comes first. It never decides.
GATEHOUSE_APPROVAL_LINK_MAX_AGE = env_seconds("GATEHOUSE_APPROVAL_LINK_MAX_AGE", timedelta(hours=24))
# A person who is not signed in is sent to LOGIN_URL (single sign-on's block, above) with `?next=` back to the link.

# --- Outbound webhooks (webhooks/) -------------------------------------------------------------------------------
# Each attempt waits this long for the receiver (connect and each read); redirects are never followed. A failed delivery
# is retried with backoff (doubling from GATEHOUSE_WEBHOOK_BACKOFF, at most GATEHOUSE_WEBHOOK_BACKOFF_MAX apart) for
# GATEHOUSE_WEBHOOK_RETRY_FOR, then parked for an operator to replay. After a secret's rotation the previous secret
# signs too for GATEHOUSE_WEBHOOK_SECRET_OVERLAP. Each process reads the active subscriptions again at most every
# GATEHOUSE_WEBHOOK_REFRESH (the process that changes one at once): with none, recording an event costs no query.
GATEHOUSE_WEBHOOK_TIMEOUT = env_seconds("GATEHOUSE_WEBHOOK_TIMEOUT", timedelta(seconds=5))
GATEHOUSE_WEBHOOK_BACKOFF = env_seconds("GATEHOUSE_WEBHOOK_BACKOFF", timedelta(seconds=5))
GATEHOUSE_WEBHOOK_BACKOFF_MAX = env_seconds("GATEHOUSE_WEBHOOK_BACKOFF_MAX", timedelta(hours=1))
GATEHOUSE_WEBHOOK_RETRY_FOR = env_seconds("GATEHOUSE_WEBHOOK_RETRY_FOR", timedelta(hours=24))
GATEHOUSE_WEBHOOK_SECRET_OVERLAP = env_seconds("GATEHOUSE_WEBHOOK_SECRET_OVERLAP", timedelta(hours=24))
GATEHOUSE_WEBHOOK_REFRESH = env_seconds("GATEHOUSE_WEBHOOK_REFRESH", timedelta(seconds=5))

# Where connectors may connect (and webhooks may be sent), what they may start, where they may read files
# (connectors/hosts.py). Production lists nothing: public hosts only, no stdio MCP server, no drop folder, until an
# operator lists them. Development lists the loopback range and the sample MCP servers, where the demo's systems run.
_SAMPLE_MCP_SERVERS = [
    f"node {BASE_DIR / 'sandbox' / 'mcp_servers' / 'node_modules'}/",
    str(Path(sys.executable).parent / "mcp-server-time"),
]
GATEHOUSE_CONNECTOR_HOSTS = env_list(
    "GATEHOUSE_CONNECTOR_HOSTS", [] if PRODUCTION else ["127.0.0.0/8", "localhost", "::1"]
)
GATEHOUSE_MCP_COMMANDS = env_list("GATEHOUSE_MCP_COMMANDS", [] if PRODUCTION else _SAMPLE_MCP_SERVERS)
GATEHOUSE_DROP_ROOTS = env_list("GATEHOUSE_DROP_ROOTS", [] if PRODUCTION else [str(VAR_DIR), tempfile.gettempdir()])

# /metrics answers loopback callers, and others presenting this as a bearer token (empty: loopback only).
GATEHOUSE_METRICS_TOKEN = env_str("GATEHOUSE_METRICS_TOKEN")

# plain (default): for a person at a terminal. json: one object a line with the request id (and task id), for a log
# pipeline; it also turns on the access log (`gatehouse.access`, one line a request) and Celery's logs go through it.
GATEHOUSE_LOG_FORMAT = log_format()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "core.logs.JsonFormatter"},
    },
    "filters": {"agent_api_answers": {"()": "core.logs.AgentApiAnswers"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": GATEHOUSE_LOG_FORMAT,
            # For a person at a terminal an agent's 4xx is an answer, not a fault: no WARNING line for each
            # (core/logs.py). A log pipeline (json) keeps them, beside the access log's line for every request.
            "filters": ["agent_api_answers"] if GATEHOUSE_LOG_FORMAT == "plain" else [],
        }
    },
    "loggers": {
        "axes.apps": {"level": "WARNING"},  # its start-up banner on every process and management command
        "gatehouse.access": {"level": "INFO" if GATEHOUSE_LOG_FORMAT == "json" else "WARNING"},
        # Django's own console handler (DEBUG only) would repeat each django.* line, unformatted, beside ours (and
        # its mail_admins handler has no ADMINS to mail): django.* lines go through the root handler only.
        "django": {"handlers": [], "level": "INFO"},
    },
    "root": {"handlers": ["console"], "level": env_str("GATEHOUSE_LOG_LEVEL", "INFO")},
}
