"""What the sample services (sandbox.crm, sandbox.soap_inventory) share: store, fault modes, HTTP plumbing, CLI.

Only the parts that mean the same in both live here. Each service keeps its own wire format (the CRM answers
JSON, the inventory SOAP XML), its own authentication, its own side-door routes and its own error types: the
helpers below raise ``ModeError`` / ``BadBody`` and each service turns them into its own refusal.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import sqlite3
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

JSON = dict[str, Any]
R = TypeVar("R")  # a service's own reply type
BodyProblem = Literal["chunked", "bad length", "too large"]

MAX_BODY_BYTES = 1_000_000
COUNTERS_SCHEMA = "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"


def now_iso() -> str:
    """Current UTC time as ISO 8601 with milliseconds and a Z suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BadBody(ValueError):
    """A side-door or business body that is not a JSON object; the message is what to answer (400)."""


def json_object(raw: bytes) -> JSON:
    """Decode a JSON object body; an empty body counts as ``{}``."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadBody(f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadBody("request body must be a JSON object")
    return body


class SqliteStore:
    """A sample service's own SQLite file. Callers must hold ``lock`` for every use of ``conn``.

    Subclasses give their ``schema``, the table whose emptiness means a new file (``seeded_table``) and ``_seed``.
    """

    schema: str
    seeded_table: str

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        with self.lock:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.executescript(self.schema + COUNTERS_SCHEMA)
            count = f"SELECT COUNT(*) FROM {self.seeded_table}"  # noqa: S608 - a class constant
            if self.conn.execute(count).fetchone()[0] == 0:
                with self.conn:
                    self._seed()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # -- helpers below assume the lock is held and run inside the caller's transaction --

    def _seed(self) -> None:
        raise NotImplementedError

    def bump(self, counter: str, by: int = 1) -> None:
        self.conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (counter, by, by),
        )

    def counter(self, counter: str) -> int:
        row = self.conn.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()
        return int(row["value"]) if row else 0


@dataclass
class Mode:
    """Fault injection for business requests, set through ``/_control/mode``.

    Which modes a service offers is its own (``parse_mode(names=...)``): the CRM throttles, the inventory faults.
    ``echo`` answers ``status`` (400-599) with an error that echoes the request's headers, credential included, as
    some systems do in a debug mode: what a client must never pass on.
    """

    name: str = "normal"
    delay: float = 0.0
    retry_after: int = 0
    status: int = 503
    remaining: int | None = None

    def describe(self) -> JSON:
        out: JSON = {"mode": self.name, "count": self.remaining}
        if self.name == "slow":
            out["delay"] = self.delay
        elif self.name == "throttle":
            out["retry_after"] = self.retry_after
        elif self.name in ("error", "echo"):
            out["status"] = self.status
        return out


class ModeError(ValueError):
    """A ``/_control/mode`` body that is refused (422); ``field`` names the offending key."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def parse_mode(name: Any, body: JSON, *, names: tuple[str, ...]) -> Mode:
    """The mode ``name`` with its parameters from ``body``; ``names`` are the modes the service offers.

    The service reads ``name`` from the body itself: the CRM takes ``"mode": null`` as normal, the inventory refuses it.
    """
    count = body.get("count")
    if count is not None and (type(count) is not int or count < 1):
        raise ModeError("count must be a positive integer", "count")
    if name not in names:
        raise ModeError(f"mode must be one of {', '.join(names)}", "mode")
    mode = Mode(name=name, remaining=None if name == "normal" else count)
    if name == "slow":
        delay = body.get("delay", 0.5)
        if type(delay) not in (int, float) or not 0 <= delay <= 60:
            raise ModeError("delay must be a number of seconds between 0 and 60", "delay")
        mode.delay = float(delay)
    elif name == "throttle":
        retry_after = body.get("retry_after", 1)
        if type(retry_after) is not int or not 0 <= retry_after <= 3600:
            raise ModeError("retry_after must be an integer between 0 and 3600", "retry_after")
        mode.retry_after = retry_after
    elif name == "error":
        status = body.get("status", 503)
        if type(status) is not int or not 500 <= status <= 599:
            raise ModeError("status must be an integer between 500 and 599", "status")
        mode.status = status
    elif name == "echo":
        status = body.get("status", 500)
        if type(status) is not int or not 400 <= status <= 599:
            raise ModeError("status must be an integer between 400 and 599", "status")
        mode.status = status
    return mode


class Faults:
    """The mode in force, shared by the request threads; a counted mode reverts to normal once used up."""

    def __init__(self) -> None:
        self._mode = Mode()
        self._lock = threading.Lock()

    def take(self) -> Mode:
        """The mode for one business request, counted against a limited mode."""
        with self._lock:
            current = self._mode
            if current.remaining is not None:
                current.remaining -= 1
                if current.remaining <= 0:
                    self._mode = Mode()
            return Mode(current.name, current.delay, current.retry_after, current.status)

    def describe(self) -> JSON:
        with self._lock:
            return self._mode.describe()

    def set(self, mode: Mode) -> JSON:
        """Put ``mode`` in force and describe it."""
        with self._lock:
            self._mode = mode
            return mode.describe()

    def clear(self) -> None:
        with self._lock:
            self._mode = Mode()


class Service(Generic[R]):
    """Request handling, independent of the HTTP plumbing: what ``serve`` runs."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.faults = Faults()

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> R:
        """Answer one request. ``headers`` keys are lower-case."""
        raise NotImplementedError

    def listening(self, base_url: str) -> None:
        """Called once the server is bound, with ``http://HOST:PORT``."""

    def close(self) -> None:
        self.store.close()


class ServiceHandler(BaseHTTPRequestHandler, Generic[R]):
    """Thin HTTP layer: read the body, ask the service, write the answer.

    Subclasses name the service and say how their replies go on the wire (``send_reply``), how a body that cannot
    be read is refused (``refuse_body``) and what a crash answers (``internal_error``).
    """

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle plus delayed ACK adds ~40 ms a request.
    disable_nagle_algorithm = True
    service_name = "sandbox"  # first word of every log line
    server: ServiceServer

    def refuse_body(self, problem: BodyProblem) -> R:
        raise NotImplementedError

    def internal_error(self) -> R:
        raise NotImplementedError

    def send_reply(self, reply: R, *, close: bool = False) -> None:
        raise NotImplementedError

    def _dispatch(self) -> None:
        raw = self._read_body()
        if raw is None:
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = self.server.service.handle(self.command, self.path, headers, raw)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            reply = self.internal_error()
        self.send_reply(reply)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch

    def _read_body(self) -> bytes | None:
        """The request body, or None once it has been refused (closing the connection: the body was not read)."""
        if self.headers.get("Transfer-Encoding"):
            problem: BodyProblem = "chunked"
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if 0 <= length <= MAX_BODY_BYTES:
                return self.rfile.read(length) if length else b""
            problem = "bad length" if length < 0 else "too large"
        self.send_reply(self.refuse_body(problem), close=True)
        return None

    def write_answer(
        self, status: int, content_type: str, payload: bytes, headers: dict[str, str], *, close: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        sys.stderr.write(f"{self.service_name} {self.command} {self.path} {code}\n")

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.service_name} {format % args}\n")


class ServiceServer(ThreadingHTTPServer):
    """One thread a connection, so a slow-mode request never holds up the side door."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default backlog of 5 resets connections under concurrent tests

    def __init__(self, address: tuple[str, int], handler: type[ServiceHandler[Any]], service: Service[Any]) -> None:
        self.service = service
        super().__init__(address, handler)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_token(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    if args.token_file is not None:
        if not args.token_file.is_file():
            parser.error(f"token file not found: {args.token_file}")
        token = args.token_file.read_text(encoding="utf-8").strip()
        if not token:
            parser.error(f"token file is empty: {args.token_file}")
        return token
    token = args.token.strip()
    if not token:
        parser.error("--token must not be empty")
    return token


def serve(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    default_port: int,
    default_store: Path,
    token_noun: str,
    open_service: Callable[[Path, str], Service[Any]],
    handler: type[ServiceHandler[Any]],
) -> int:
    """A service's ``main``: parse the command line, bind, print the one "listening on" line, serve until stopped.

    ``open_service(store_path, token)`` opens the store and builds the service; SIGTERM and Ctrl-C stop it cleanly.
    """
    name = handler.service_name
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port, help="0 picks a free port")
    parser.add_argument("--store", type=Path, default=default_store, help="SQLite file")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--token", help=f"{token_noun} clients must send")
    secret.add_argument("--token-file", type=Path, help=f"file holding the {token_noun}")
    args = parser.parse_args(argv)

    token = _read_token(parser, args)
    if not _is_loopback(args.host):
        sys.stderr.write(f"{name}: warning: {args.host} is not loopback and /_control needs no auth\n")

    service = open_service(args.store, token)
    try:
        server = ServiceServer((args.host, args.port), handler, service)
    except OSError as exc:
        service.close()
        sys.stderr.write(f"{name}: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 1

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, so it must not run on the thread serving.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    base_url = f"http://{host}:{port}"
    service.listening(base_url)
    print(f"{name} listening on {base_url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.close()
    sys.stderr.write(f"{name} stopped\n")
    return 0
