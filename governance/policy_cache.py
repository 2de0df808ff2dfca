"""What every agent call is checked against — its token and agent, the global stop, the system, the action, the
grants, the credential, the threshold rule — kept per process, and asked of the database once per call.

A call opens a scope (`open_scope`, from the agent's authentication) that reads the policy generation: one row whose
value database triggers change in the same transaction as any change to those tables, whoever makes it
(governance/policy_triggers.py). Within the scope, each lookup answers from what this process cached under the same
generation, or asks the database and keeps the answer. So a kill switch, a revoked token or a withdrawn grant refuses
the very next call, in every process, as before; and a rolled-back change can never leave an entry behind that later
matches, since every change draws a new random value.

Outside a scope (Celery tasks, commands, the admin, a call older than `SCOPE_SECONDS`) every lookup asks the
database. Cached objects are shared by the calls of a process: read them, never change them. Time is never cached:
expiry (of a token, a grant) is compared with the clock at each use by the caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection

from core.request_context import current_request_serial

T = TypeVar("T")

# A long call asks again after this long: no call acts on a generation older than this.
SCOPE_SECONDS = 2.0
# Entries are dropped after this long whatever the generation says (what a bug in the triggers could cost), and all
# of them when there are more than this many (tokens of many agents; nothing an unknown caller sends is kept).
ENTRY_SECONDS = 60.0
MAX_ENTRIES = 4096

_scope: ContextVar[tuple[int, float, str] | None] = ContextVar("gatehouse_policy_scope", default=None)
_entries: dict[tuple, tuple[str, float, Any]] = {}
_lock = threading.Lock()
_GENERATION_SQL = "SELECT value FROM governance_policygeneration WHERE id = 1"


def enabled() -> bool:
    return bool(getattr(settings, "GATEHOUSE_POLICY_CACHE", True))


def open_scope() -> None:
    """Read the policy generation for the call in progress (the current request, by its serial number: a request id
    may be the caller's choice); lookups of this call answer from the cache under it. Outside a request, or with the
    cache off, nothing is opened."""
    serial = current_request_serial()
    if not serial or not enabled():
        return
    with connection.cursor() as cursor:
        cursor.execute(_GENERATION_SQL)
        row = cursor.fetchone()
    # No row (a database flushed by a test run): no scope, so every lookup asks the database.
    _scope.set((serial, time.monotonic(), row[0]) if row else None)


def generation() -> str | None:
    """The generation this call reads under, or None when lookups must ask the database."""
    scope = _scope.get()
    if scope is None:
        return None
    serial, opened, value = scope
    if serial != current_request_serial() or time.monotonic() - opened > SCOPE_SECONDS:
        return None
    return value


def cached(key: tuple, build: Callable[[], T], *, keep: Callable[[T], bool] = lambda value: True) -> T:
    """The answer to `key` under this call's generation: cached, or built now (and kept when `keep` says so)."""
    current = generation()
    if current is None:
        return build()
    now = time.monotonic()
    entry = _entries.get(key)
    if entry is not None and entry[0] == current and entry[1] > now:
        return entry[2]
    value = build()
    if keep(value):
        with _lock:
            if len(_entries) >= MAX_ENTRIES:
                _entries.clear()
            _entries[key] = (current, now + ENTRY_SECONDS, value)
    return value


def clear() -> None:
    """Forget every entry (tests; a process that wants to start afresh)."""
    with _lock:
        _entries.clear()
