"""Sample CRM: a small HTTP JSON service that stands in for a company's system of record in demos and tests.

It is deliberately *not* part of Gatehouse: it runs as its own process on loopback and keeps its own SQLite
store, so Gatehouse talks to it exactly as it would talk to a real CRM (bearer token, JSON, retries,
idempotency keys, version conflicts, throttling, outages).

Run it with::

    python -m sandbox.crm --host 127.0.0.1 --port 8100 \
        --store var/sandbox/crm.sqlite3 --token-file var/sandbox/crm.token

``--port 0`` picks a free port. On startup exactly one line, ``sandbox-crm listening on http://HOST:PORT``, is
printed to stdout. Request logs go to stderr. SIGTERM and Ctrl-C stop it cleanly.

Business API (every request needs ``Authorization: Bearer <token>``; otherwise 401 ``{"error": "unauthorized"}``).
The token file holds the service account's token on its first line and, on each further line, ``NAME TOKEN``: another
account of the CRM's own (one per agent, so the CRM's log names who called). Each accepted business request is logged
to stderr as ``sandbox-crm caller=NAME METHOD PATH`` (the first line's account is ``service``):

- ``GET    /accounts/{id}``                      the full record (fields, notes, version, updated_at)
- ``PATCH  /accounts/{id}``                      change name/email/status/credit_limit; optional
  ``expected_version`` (409 ``version_conflict`` with the current record when stale); returns
  ``{"before", "after", "record"}`` where before/after hold only the fields that changed
- ``POST   /accounts/{id}/notes``                ``{"text": ...}`` -> 201 ``{"note", "record"}``
- ``DELETE /accounts/{id}/notes/{note_id}``      -> ``{"deleted", "record"}``; unknown/already deleted -> 404
- ``POST   /accounts/{id}/statements``           ``{}`` or ``{"period": ...}`` -> 201 ``{"statement"}``
  (records that a statement e-mail was sent; it cannot be undone)

Every write honours an ``Idempotency-Key`` header: the first *successful* (2xx) response for a key is stored and
any repeat with the same key gets that stored response back, unapplied, with ``Idempotent-Replayed: true``.
Failed attempts (4xx) are not stored, so a corrected retry with the same key can still apply. Reusing a key
for a different method or path is refused with 422.

Faults injected through ``/_control/mode`` are applied before authentication, like an upstream gateway would.

Test-harness side door -- NO AUTHENTICATION, which is why the service is meant for loopback only. Paths starting
with ``/_`` are not counted in ``requests_total`` and are never slowed, throttled or failed by the mode:

- ``GET  /_health``         ``{"ok": true}``; when an ``Authorization`` header is sent it is checked too (401
  ``{"error": "unauthorized"}`` for a token the CRM does not accept), so a client's health check proves its credential
- ``GET  /_stats``          ``{"writes_total", "writes_by_key", "requests_total", "requests_by_caller"}``;
  requests_total counts every business request, including refused ones; requests_by_caller the accepted ones by
  account; writes count applied business writes (not replays, not /_control/set)
- ``GET  /_control/mode``   the current mode
- ``POST /_control/mode``   ``{"mode": "normal"}`` | ``{"mode": "slow", "delay": 0.5}`` |
  ``{"mode": "throttle", "retry_after": 2}`` | ``{"mode": "error", "status": 503}`` |
  ``{"mode": "echo", "status": 400}`` (any 4xx or 5xx, no Retry-After: a debug error whose body echoes the request's
  method, path and headers, ``Authorization`` included, as careless systems do), optionally with
  ``"count": N`` so only the next N business requests are affected before it reverts to normal
- ``POST /_control/reset``  wipe and reseed accounts 4471-4473, clear idempotency keys and stats, mode normal
- ``POST /_control/set``    ``{"account": "4471", "fields": {...}}``: edit a record directly, as a person in the
  CRM would (no auth, no idempotency, not counted as a write); always bumps the version; returns the record
- ``POST /_control/token``  ``{"tokens": ["...", ...]}`` or ``{"tokens": {"NAME": "...", ...}}``: the bearer tokens
  accepted from now on (a list's are accounts ``token-1``, ``token-2``, …), as the CRM's own admin would issue and
  revoke them (a rotation: old and new together, then the new alone). Never read back; answers ``{"tokens": N}``.
  ``/_control/reset`` restores the start-up tokens.
- ``POST /_control/accounts`` ``{"count": N}`` (1-10,000): make sure generated accounts 5001 to 5000+N exist
  (credit limit 1000.00, no notes), for load runs that need many records (bench/reliability.py); accounts that already
  exist are left as they are; answers ``{"accounts": ["5001", ...], "created": K}``. ``/_control/reset`` removes them.
"""

from __future__ import annotations

import hmac
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sandbox import serving
from sandbox.serving import JSON, MAX_BODY_BYTES, now_iso

NAME = "sandbox-crm"
DESCRIPTION = "Sample CRM (a stand-in system of record) for Gatehouse demos and tests."

MAX_NOTE_CHARS = 2000
MAX_GENERATED_ACCOUNTS = 10_000
GENERATED_FIRST_ID = 5001
MAX_IDEMPOTENCY_KEY_CHARS = 255
STATUSES = ("active", "on_hold", "closed")
EDITABLE_FIELDS = ("name", "email", "status", "credit_limit")
CREDIT_LIMIT_RE = re.compile(r"\d{1,12}(\.\d{1,2})?")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

SEED_ACCOUNTS: tuple[JSON, ...] = (
    {
        "id": "4471",
        "name": "Northwind Traders",
        "email": "ap@northwind.example",
        "credit_limit": "2000.00",
        "notes": ("Prefers statements by e-mail; PO number required on every invoice.",),
    },
    {
        "id": "4472",
        "name": "Contoso Pharmaceuticals",
        "email": "billing@contoso.example",
        "credit_limit": "1500.00",
        "notes": (),
    },
    {
        "id": "4473",
        "name": "Fabrikam, Inc.",
        "email": "accounts.payable@fabrikam.example",
        "credit_limit": "10000.00",
        "notes": (),
    },
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, status TEXT NOT NULL,
    credit_limit TEXT NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL, text TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS statements (
    id INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL, period TEXT, sent_to TEXT NOT NULL,
    sent_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS write_counts (key TEXT PRIMARY KEY, applied INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, JSON body and extra headers."""

    status: int
    body: JSON
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """Raised by handlers to answer with a JSON error; raising inside a transaction rolls it back."""

    def __init__(self, status: int, error: str, *, field_name: str | None = None, extra: JSON | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.body: JSON = {"error": error}
        if field_name is not None:
            self.body["field"] = field_name
        if extra:
            self.body.update(extra)

    def reply(self) -> Reply:
        return Reply(self.status, self.body)


class MethodNotAllowed(ApiError):
    """405 with the Allow header listing the methods the path does support."""

    def __init__(self, methods: dict[str, str]) -> None:
        self.allowed = sorted(methods)
        super().__init__(405, "method not allowed", extra={"allowed": self.allowed})

    def reply(self) -> Reply:
        return Reply(self.status, self.body, {"Allow": ", ".join(self.allowed)})


class Store(serving.SqliteStore):
    """The CRM's own SQLite file. Callers must hold ``lock`` for every use of ``conn``."""

    schema = SCHEMA
    seeded_table = "accounts"

    # -- helpers below assume the lock is held and run inside the caller's transaction --

    def reset(self) -> None:
        with self.conn:
            for table in ("accounts", "notes", "statements", "idempotency", "write_counts", "counters"):
                self.conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            self.conn.execute("DELETE FROM sqlite_sequence")
            self._seed()

    def _seed(self) -> None:
        stamp = now_iso()
        for account in SEED_ACCOUNTS:
            self.conn.execute(
                "INSERT INTO accounts (id, name, email, status, credit_limit, version, updated_at)"
                " VALUES (?, ?, ?, 'active', ?, 1, ?)",
                (account["id"], account["name"], account["email"], account["credit_limit"], stamp),
            )
            for text in account["notes"]:
                self.conn.execute(
                    "INSERT INTO notes (account_id, text, created_at) VALUES (?, ?, ?)", (account["id"], text, stamp)
                )

    def add_generated_accounts(self, count: int) -> tuple[list[str], int]:
        """Accounts GENERATED_FIRST_ID onwards, ``count`` of them; existing ones are kept. Returns (ids, created)."""
        stamp = now_iso()
        ids = [str(GENERATED_FIRST_ID + n) for n in range(count)]
        with self.conn:
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT OR IGNORE INTO accounts (id, name, email, status, credit_limit, version, updated_at)"
                " VALUES (?, ?, ?, 'active', '1000.00', 1, ?)",
                [(account, f"Account {account}", f"ap@account-{account}.example", stamp) for account in ids],
            )
            created = self.conn.total_changes - before
        return ids, created

    def record(self, account_id: str) -> JSON:
        row = self.conn.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone()
        if row is None:
            raise ApiError(404, "account not found", extra={"account": account_id})
        notes = self.conn.execute(
            "SELECT id, text, created_at FROM notes WHERE account_id = ? ORDER BY id", (account_id,)
        ).fetchall()
        return {
            "id": row["id"],
            "name": row["name"],
            "email": row["email"],
            "status": row["status"],
            "credit_limit": row["credit_limit"],
            "notes": [dict(note) for note in notes],
            "version": row["version"],
            "updated_at": row["updated_at"],
        }

    def touch(self, account_id: str, changes: JSON | None = None) -> None:
        """Apply ``changes`` (already validated) and bump version and updated_at."""
        changes = changes or {}
        assignments = "".join(f"{name} = ?, " for name in changes)  # names come from EDITABLE_FIELDS only
        self.conn.execute(
            f"UPDATE accounts SET {assignments}version = version + 1, updated_at = ? WHERE id = ?",  # noqa: S608
            (*changes.values(), now_iso(), account_id),
        )


def validate_fields(fields: Any) -> JSON:
    """Check editable fields and return them normalised; raises 422 naming the offending field."""
    if not isinstance(fields, dict):
        raise ApiError(422, "fields must be a JSON object", field_name="fields")
    clean: JSON = {}
    for name, value in fields.items():
        if name not in EDITABLE_FIELDS:
            raise ApiError(422, f"unknown or read-only field; editable: {', '.join(EDITABLE_FIELDS)}", field_name=name)
        if name == "name":
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                raise ApiError(422, "name must be a non-empty string of at most 200 characters", field_name=name)
            clean[name] = value.strip()
        elif name == "email":
            if not isinstance(value, str) or len(value) > 254 or not EMAIL_RE.fullmatch(value):
                raise ApiError(422, "email must be an e-mail address", field_name=name)
            clean[name] = value
        elif name == "status":
            if value not in STATUSES:
                raise ApiError(422, f"status must be one of {', '.join(STATUSES)}", field_name=name)
            clean[name] = value
        else:
            if not isinstance(value, str) or not CREDIT_LIMIT_RE.fullmatch(value):
                raise ApiError(
                    422,
                    'credit_limit must be a decimal string >= 0 with at most two decimal places, e.g. "2500.00"',
                    field_name=name,
                )
            clean[name] = str(Decimal(value).quantize(Decimal("0.01")))
    return clean


def parse_body(raw: bytes) -> JSON:
    """Decode a JSON object body; an empty body counts as ``{}``."""
    try:
        return serving.json_object(raw)
    except serving.BadBody as exc:
        raise ApiError(400, str(exc)) from exc


def parse_mode(body: JSON) -> serving.Mode:
    """A ``/_control/mode`` body; a missing or null ``mode`` means normal."""
    name = body.get("mode")
    try:
        return serving.parse_mode(
            "normal" if name is None else name, body, names=("normal", "slow", "throttle", "error", "echo")
        )
    except serving.ModeError as exc:
        raise ApiError(422, str(exc), field_name=exc.field) from None


Handler = Callable[[dict[str, str], JSON], Reply]

ACCOUNT = r"/accounts/(?P<account>[A-Za-z0-9_-]{1,64})"
ROUTES: tuple[tuple[re.Pattern[str], dict[str, str]], ...] = (
    (re.compile(ACCOUNT), {"GET": "get_account", "PATCH": "patch_account"}),
    (re.compile(ACCOUNT + r"/notes"), {"POST": "add_note"}),
    (re.compile(ACCOUNT + r"/notes/(?P<note>[0-9]{1,18})"), {"DELETE": "delete_note"}),
    (re.compile(ACCOUNT + r"/statements"), {"POST": "send_statement"}),
)
SIDE_DOOR: dict[str, dict[str, str]] = {
    "/_health": {"GET": "health"},
    "/_stats": {"GET": "stats"},
    "/_control/mode": {"GET": "get_mode", "POST": "set_mode"},
    "/_control/reset": {"POST": "reset"},
    "/_control/set": {"POST": "set_record"},
    "/_control/token": {"POST": "set_tokens"},
    "/_control/accounts": {"POST": "add_accounts"},
}


def parse_accounts(text: str) -> dict[str, bytes]:
    """The token file's accounts: the first line is the service account's token, each further line ``NAME TOKEN``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    accounts = {"service": lines[0].encode()}
    for line in lines[1:]:
        name, _, token = line.partition(" ")
        if not token.strip():
            raise ValueError(f"a token file line after the first must be NAME TOKEN, not {name!r}")
        accounts[name] = token.strip().encode()
    return accounts


class CRM(serving.Service[Reply]):
    """Request handling, independent of the HTTP plumbing."""

    store: Store

    def __init__(self, store: Store, token: str) -> None:
        super().__init__(store)
        self._startup_tokens = parse_accounts(token)
        self._tokens: dict[str, bytes] = dict(self._startup_tokens)

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Answer one request. ``headers`` keys are lower-case."""
        path = urlsplit(target).path
        try:
            if path.startswith("/_"):
                return self._side_door(method, path, raw, headers)
            return self._business(method, path, headers, raw)
        except ApiError as exc:
            return exc.reply()

    # -- business API --

    def _business(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        with self.store.lock, self.store.conn:
            self.store.bump("requests_total")
        fault = self.faults.take()
        if fault.name == "slow":
            time.sleep(fault.delay)
        elif fault.name == "throttle":
            return Reply(
                429,
                {"error": "rate_limited", "retry_after": fault.retry_after},
                {"Retry-After": str(fault.retry_after)},
            )
        elif fault.name == "error":
            return Reply(fault.status, {"error": "simulated_outage", "status": fault.status})
        elif fault.name == "echo":
            debug = {"method": method, "path": path, "received_headers": headers}
            return Reply(fault.status, {"error": "debug_echo", "status": fault.status, "debug": debug})

        caller = self._caller(headers.get("authorization", ""))
        if caller is None:
            return Reply(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Bearer realm="sandbox-crm"'})
        with self.store.lock, self.store.conn:
            self.store.bump(f"caller:{caller}")
        sys.stderr.write(f"sandbox-crm caller={caller} {method} {path}\n")

        handler_name, params = self._route(method, path)
        handler: Handler = getattr(self, handler_name)
        if method == "GET":
            with self.store.lock:
                return handler(params, {})
        body = parse_body(raw)
        key = headers.get("idempotency-key", "").strip()
        if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
            raise ApiError(422, "Idempotency-Key is too long", field_name="Idempotency-Key")
        return self._write(method, path, key, handler, params, body)

    def _write(self, method: str, path: str, key: str, handler: Handler, params: dict[str, str], body: JSON) -> Reply:
        conn = self.store.conn
        with self.store.lock:
            if key:
                stored = conn.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
                if stored is not None:
                    if (stored["method"], stored["path"]) != (method, path):
                        raise ApiError(
                            422,
                            f"Idempotency-Key was already used for {stored['method']} {stored['path']}",
                            field_name="Idempotency-Key",
                        )
                    return Reply(stored["status"], json.loads(stored["body"]), {"Idempotent-Replayed": "true"})
            with conn:  # one transaction: the change, the counters and the stored reply; ApiError rolls back
                reply = handler(params, body)
                if 200 <= reply.status < 300:
                    self.store.bump("writes_total")
                    if key:
                        conn.execute(
                            "INSERT INTO write_counts (key, applied) VALUES (?, 1)"
                            " ON CONFLICT(key) DO UPDATE SET applied = applied + 1",
                            (key,),
                        )
                        conn.execute(
                            "INSERT INTO idempotency (key, method, path, status, body, created_at)"
                            " VALUES (?, ?, ?, ?, ?, ?)",
                            (key, method, path, reply.status, json.dumps(reply.body), now_iso()),
                        )
            return reply

    def _caller(self, header: str) -> str | None:
        """The account whose bearer token `header` carries, or None when the CRM accepts no such token."""
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        supplied_bytes = supplied.strip().encode()
        # Compare with every accepted token (no early exit), so timing does not tell which one matched.
        matches = [name for name, token in self._tokens.items() if hmac.compare_digest(supplied_bytes, token)]
        return matches[0] if matches else None

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, dict[str, str]]:
        for pattern, methods in ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method not in methods:
                raise MethodNotAllowed(methods)
            return methods[method], match.groupdict()
        raise ApiError(404, "not found")

    def get_account(self, params: dict[str, str], body: JSON) -> Reply:
        return Reply(200, self.store.record(params["account"]))

    def patch_account(self, params: dict[str, str], body: JSON) -> Reply:
        expected = body.pop("expected_version", None)
        if expected is not None and type(expected) is not int:
            raise ApiError(422, "expected_version must be an integer", field_name="expected_version")
        current = self.store.record(params["account"])
        if not body:
            raise ApiError(422, f"nothing to change; editable: {', '.join(EDITABLE_FIELDS)}")
        changes = validate_fields(body)
        if expected is not None and expected != current["version"]:
            raise ApiError(409, "version_conflict", extra={"current": current})
        changed = {name: value for name, value in changes.items() if current[name] != value}
        if changed:
            self.store.touch(current["id"], changed)
        before = {name: current[name] for name in changed}
        return Reply(200, {"before": before, "after": changed, "record": self.store.record(current["id"])})

    def add_note(self, params: dict[str, str], body: JSON) -> Reply:
        account = self.store.record(params["account"])["id"]
        text = body.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_NOTE_CHARS:
            raise ApiError(
                422, f"text must be a non-empty string of at most {MAX_NOTE_CHARS} characters", field_name="text"
            )
        extra = sorted(set(body) - {"text"})
        if extra:
            raise ApiError(422, "unknown field", field_name=extra[0])
        cursor = self.store.conn.execute(
            "INSERT INTO notes (account_id, text, created_at) VALUES (?, ?, ?)", (account, text, now_iso())
        )
        self.store.touch(account)
        record = self.store.record(account)
        note = next(note for note in record["notes"] if note["id"] == cursor.lastrowid)
        return Reply(201, {"note": note, "record": record})

    def delete_note(self, params: dict[str, str], body: JSON) -> Reply:
        account = self.store.record(params["account"])
        note = next((note for note in account["notes"] if note["id"] == int(params["note"])), None)
        if note is None:
            raise ApiError(404, "note not found", extra={"note": int(params["note"])})
        self.store.conn.execute("DELETE FROM notes WHERE id = ?", (note["id"],))
        self.store.touch(account["id"])
        return Reply(200, {"deleted": note, "record": self.store.record(account["id"])})

    def send_statement(self, params: dict[str, str], body: JSON) -> Reply:
        account = self.store.record(params["account"])
        period = body.get("period")
        if period is not None and (not isinstance(period, str) or not period.strip() or len(period) > 64):
            raise ApiError(422, "period must be a non-empty string of at most 64 characters", field_name="period")
        extra = sorted(set(body) - {"period"})
        if extra:
            raise ApiError(422, "unknown field", field_name=extra[0])
        sent_at = now_iso()
        cursor = self.store.conn.execute(
            "INSERT INTO statements (account_id, period, sent_to, sent_at) VALUES (?, ?, ?, ?)",
            (account["id"], period, account["email"], sent_at),
        )
        statement = {
            "id": cursor.lastrowid,
            "account": account["id"],
            "period": period,
            "sent_to": account["email"],
            "sent_at": sent_at,
        }
        return Reply(201, {"statement": statement})

    # -- side door (no auth) --

    def _side_door(self, method: str, path: str, raw: bytes, headers: dict[str, str] | None = None) -> Reply:
        methods = SIDE_DOOR.get(path)
        if methods is None:
            raise ApiError(404, "not found")
        if method not in methods:
            raise MethodNotAllowed(methods)
        supplied = (headers or {}).get("authorization")
        if path == "/_health" and supplied is not None and self._caller(supplied) is None:
            return Reply(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Bearer realm="sandbox-crm"'})
        body = parse_body(raw) if method == "POST" else {}
        handler: Callable[[JSON], Reply] = getattr(self, methods[method])
        return handler(body)

    def health(self, body: JSON) -> Reply:
        return Reply(200, {"ok": True})

    def stats(self, body: JSON) -> Reply:
        with self.store.lock:
            rows = self.store.conn.execute("SELECT key, applied FROM write_counts ORDER BY key").fetchall()
            return Reply(
                200,
                {
                    "writes_total": self.store.counter("writes_total"),
                    "writes_by_key": {row["key"]: row["applied"] for row in rows},
                    "requests_total": self.store.counter("requests_total"),
                    "requests_by_caller": {
                        row["name"].removeprefix("caller:"): row["value"]
                        for row in self.store.conn.execute(
                            "SELECT name, value FROM counters WHERE name LIKE 'caller:%' ORDER BY name"
                        )
                    },
                },
            )

    def get_mode(self, body: JSON) -> Reply:
        return Reply(200, self.faults.describe())

    def set_mode(self, body: JSON) -> Reply:
        return Reply(200, self.faults.set(parse_mode(body)))

    def set_tokens(self, body: JSON) -> Reply:
        tokens = body.get("tokens")
        if isinstance(tokens, list):
            tokens = {f"token-{number}": token for number, token in enumerate(tokens, 1)}
        if (
            not isinstance(tokens, dict)
            or not 1 <= len(tokens) <= 10
            or not all(isinstance(token, str) and token.strip() and token == token.strip() for token in tokens.values())
        ):
            raise ApiError(422, "tokens must name 1 to 10 non-empty strings", field_name="tokens")
        self._tokens = {str(name): token.encode() for name, token in tokens.items()}
        return Reply(200, {"tokens": len(tokens)})

    def reset(self, body: JSON) -> Reply:
        self._tokens = dict(self._startup_tokens)
        with self.store.lock:
            self.store.reset()
        self.faults.clear()
        return Reply(200, {"reset": True, "accounts": [account["id"] for account in SEED_ACCOUNTS]})

    def add_accounts(self, body: JSON) -> Reply:
        count = body.get("count")
        if type(count) is not int or not 1 <= count <= MAX_GENERATED_ACCOUNTS:
            raise ApiError(422, f"count must be an integer from 1 to {MAX_GENERATED_ACCOUNTS}", field_name="count")
        with self.store.lock:
            ids, created = self.store.add_generated_accounts(count)
        return Reply(200, {"accounts": ids, "created": created})

    def set_record(self, body: JSON) -> Reply:
        account_id = body.get("account")
        if not isinstance(account_id, str):
            raise ApiError(422, "account must be an account id string", field_name="account")
        changes = validate_fields(body.get("fields", {}))
        with self.store.lock, self.store.conn:
            self.store.record(account_id)
            self.store.touch(account_id, changes)
            return Reply(200, self.store.record(account_id))


class RequestHandler(serving.ServiceHandler[Reply]):
    """JSON on the wire, errors included."""

    server_version = f"{NAME}/1"
    service_name = NAME

    def refuse_body(self, problem: serving.BodyProblem) -> Reply:
        if problem == "chunked":
            return Reply(411, {"error": "send a Content-Length; chunked bodies are not supported"})
        if problem == "bad length":
            return Reply(400, {"error": "invalid Content-Length"})
        return Reply(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})

    def internal_error(self) -> Reply:
        return Reply(500, {"error": "internal error"})

    def send_reply(self, reply: Reply, *, close: bool = False) -> None:
        payload = json.dumps(reply.body).encode()
        self.write_answer(reply.status, "application/json", payload, reply.headers, close=close)


def main(argv: list[str] | None = None) -> int:
    return serving.serve(
        argv,
        prog="python -m sandbox.crm",
        description=DESCRIPTION,
        default_port=8100,
        default_store=Path("var/sandbox/crm.sqlite3"),
        token_noun="bearer token",
        open_service=lambda path, token: CRM(Store(path), token),
        handler=RequestHandler,
    )


if __name__ == "__main__":
    raise SystemExit(main())
