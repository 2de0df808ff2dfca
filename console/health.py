"""`/healthz` (the process answers) and `/readyz` (it can do its work: database, broker, and each system's breaker).

Both answer without authentication and outside the agent API (no token, no throttle), for load balancers and
orchestrators. Neither says more than a probe needs: no URL, host name or error message leaves the process (they go
to the log); the systems whose circuit is open are named only to the callers `/metrics` trusts (loopback or the
metrics token), others get the count.

Readiness fails (503) only for what stops this process from working at all: the database or the broker. An open
circuit breaker is one downstream system down: the process still serves everything else (the admin, reads and
proposals for other systems, and the kill switch the operator needs), so it stays in the pool and says `degraded`.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from connectors.limits import OPEN_STATES, circuit_states
from console.metrics import trusted_caller

logger = logging.getLogger(__name__)

OK, DOWN, DEGRADED, UNAVAILABLE, UNKNOWN = "ok", "down", "degraded", "unavailable", "unknown"
# The kombu filesystem transport's folders (the embedded default); it needs to write in each.
_BROKER_FOLDERS = ("data_folder_in", "data_folder_out", "control_folder")


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answers. Touches nothing else, so it stays cheap and never fails for a dependency."""
    return JsonResponse({"status": OK})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    status, body = readiness(name_systems=trusted_caller(request))
    return JsonResponse(body, status=status)


def readiness(*, name_systems: bool = False) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 503 when the database or the broker is down, else 200, `degraded` with an open circuit."""
    checks: dict[str, dict[str, Any]] = {"database": check_database(), "broker": check_broker()}
    if checks["database"]["status"] == OK:
        checks["circuits"] = check_circuits(name_systems=name_systems)
    else:
        checks["circuits"] = {"status": UNKNOWN}  # the systems are rows of the database
    if any(checks[name]["status"] != OK for name in ("database", "broker")):
        return 503, {"status": UNAVAILABLE, "checks": checks}
    return 200, {"status": OK if checks["circuits"]["status"] == OK else DEGRADED, "checks": checks}


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        logger.warning("readyz: the database does not answer: %s", exc)
        return {"status": DOWN, "error": type(exc).__name__}
    return {"status": OK}


@lru_cache(maxsize=4)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)


def check_broker() -> dict[str, Any]:
    """Redis answers PING; or, on the embedded default, the filesystem broker's folders are there and writable."""
    url = settings.CELERY_BROKER_URL
    kind = url.split("://", 1)[0]
    try:
        if kind in ("redis", "rediss"):
            _redis(url).ping()
        elif kind == "filesystem":
            options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
            for key in _BROKER_FOLDERS:
                folder = Path(str(options[key]))
                if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
                    raise FileNotFoundError(f"{key} {folder} is missing or not writable")
        else:  # another transport configured by hand: ask kombu
            with current_app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=1)
    except Exception as exc:
        logger.warning("readyz: the broker (%s) is not usable: %s", kind, exc)
        return {"status": DOWN, "kind": kind, "error": type(exc).__name__}
    return {"status": OK, "kind": kind}


def check_circuits(*, name_systems: bool) -> dict[str, Any]:
    try:
        states = circuit_states()
    except Exception as exc:
        logger.warning("readyz: could not read the circuit breakers: %s", exc)
        return {"status": UNKNOWN, "error": type(exc).__name__}
    open_systems = sorted(slug for slug, state in states.items() if state in OPEN_STATES)
    unknown = any(state == UNKNOWN for state in states.values())
    result: dict[str, Any] = {
        "status": DEGRADED if open_systems else (UNKNOWN if unknown else OK),
        "systems": len(states),
        "open": len(open_systems),
    }
    if name_systems:
        result["open_systems"] = open_systems
    return result
