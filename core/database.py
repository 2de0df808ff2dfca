"""Gatehouse's own database lost mid-request: a clear 503 that says nothing was half-saved, instead of a bare 500.

Every write Gatehouse makes for a request (a decision, its audit event, its outbox row) is one transaction, so a
connection that dies while it is open takes all of it back: the person or agent can simply try again. Only errors
that mean "the database went away or was too busy" are turned into 503 `database_unavailable`; a broken query (a
missing table, a bad column) stays the 500 it is, so a bug is never dressed up as an outage.

Three places use this: `gatehouse.middleware.DatabaseUnavailableMiddleware` for the admin and every other Django
view, the API's exception handler (agents/rest/errors.py), since DRF catches its views' exceptions before any
middleware sees them, and the MCP tools (agents/mcp).

Also here: `advisory_xact_lock`, a transaction's lock on a name, for checks that no row lock covers.
"""

from __future__ import annotations

import hashlib
import logging

from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest

logger = logging.getLogger(__name__)

# How long the 503 asks the caller to wait: a restarted or failed-over PostgreSQL is usually back within seconds,
# and the agent client (gatehouse_client) waits what Retry-After says before it retries with the same key.
RETRY_AFTER_SECONDS = 5

# SQLSTATE classes that mean the connection or the server, not the statement: 08 connection exception, 40 transaction
# rollback (deadlock, serialization failure), 53 insufficient resources (too many connections), 57 operator
# intervention (the backend terminated, the server shutting down or starting up, a statement cancelled).
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})
_TRANSIENT_SQLITE_ERRORS = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})


def is_database_unavailable(exc: BaseException) -> bool:
    """True when `exc` means the database connection was lost or the database could not serve us for now.

    Django raises its own OperationalError or InterfaceError from the driver's error (`__cause__`): psycopg's
    carries the SQLSTATE (`sqlstate`, psycopg2's `pgcode`), and a connection that broke without the server saying
    why (closed socket, refused connection) has none. sqlite3's carries its result code name.
    """
    if isinstance(exc, InterfaceError):  # the connection was already closed under us
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if cause is None:
        return True
    sqlite_error = getattr(cause, "sqlite_errorname", None)
    if sqlite_error is not None:
        return sqlite_error in _TRANSIENT_SQLITE_ERRORS
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return sqlstate is None or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES


def log_database_unavailable(request: HttpRequest, exc: BaseException) -> None:
    """One line an operator can find: the request, its id (also in the plain format) and what the driver said."""
    said = str(exc).strip().splitlines()
    logger.error(
        "database unavailable: %s %s (request %s) answered 503: %s: %s",
        request.method,
        request.path,
        getattr(request, "request_id", "-"),
        type(exc).__name__,
        said[0] if said else "",
    )


def advisory_xact_lock(*parts: object) -> None:
    """Hold a PostgreSQL advisory lock named by `parts` until the current transaction ends (call it inside one).

    For a check-then-insert that a row lock cannot cover because the row does not exist yet (two proposals counting
    the same agent's earlier ones). The key is a stable 64-bit hash of the parts. Elsewhere nothing: SQLite
    transactions are opened IMMEDIATE by Gatehouse and so already write one at a time.
    """
    if connection.vendor != "postgresql":
        return
    digest = hashlib.blake2b(repr(("gatehouse", *parts)).encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
