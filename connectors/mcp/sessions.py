"""Live MCP sessions kept per downstream system, per process: opened once, reused by every call, closed at exit.

Opening a session costs an HTTP client (its CA bundle loaded again) and a handshake, or a process start for a stdio
server (about 0.3 s for the Node reference servers); a call on an open session costs one request. So each process
keeps its sessions on one background thread running an event loop (`SessionPool`); synchronous callers — gunicorn
sync workers, Celery's prefork children, the ASGI server's worker threads — hand it coroutines and wait for the answer.

What a pooled session guarantees:

- **Keyed by what the session was opened with.** A session serves a *slot* (the system, and whose vaulted credential:
  the system's shared one or an agent's own) with a *fingerprint* of the connection settings and the credential (an
  HMAC under a key of this process, never the secret itself). A changed URL, command, environment, timeout or a
  rotated credential makes a new fingerprint: the next call opens a new session, and the old one is closed as soon as
  no call is using it. An old credential is never sent again once the new one is read from the vault.
- **Reconnected, never resent.** A session found dead when a call takes it (a stdio server that exited, a transport
  that closed) is dropped and a new one opened before anything is sent. A call that fails on a reused session is
  retried once on a new session only if nothing can have reached the server: the connection was refused, the
  session was already closed, or the server answered that it does not know the session (HTTP 404 after a restart).
  Reads (read-only tools) are also retried once after any transport failure; a write that may have reached the
  server never is — the caller sees the failure, as before.
- **Bounded.** At most `MAX_SESSIONS` per process; the least recently used idle one is closed to make room, and one
  idle longer than `IDLE_SECONDS` is closed. When every session is busy, the call gets a session of its own for that
  call only.
- **Fork-safe.** A pool belongs to the process that made it: a forked child (Celery's prefork pool, gunicorn's
  workers) starts with no pool and opens its own sessions; the parent's sockets, pipes and server processes are
  never used by the child (`os.register_at_fork`, and the pool's pid checked on every use).
- **Closed at exit** (`atexit`): stdio servers get their stdin closed, then SIGTERM, as the SDK shuts them down.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_SESSIONS = 16  # per process: each is an HTTP connection pool or a server process
IDLE_SECONDS = 300.0
ERRLOG_MAX_BYTES = 1_000_000  # a long-lived stdio server's stderr is kept to its last megabyte or so
_FINGERPRINT_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class SessionKey:
    """Which session a call may use: `slot` says for whom, `fingerprint` with what settings and credential."""

    slot: tuple[Any, ...]
    fingerprint: str

    @classmethod
    def of(cls, slot: tuple[Any, ...], settings: dict[str, Any], secret_material: list[str]) -> SessionKey:
        material = json.dumps({"settings": settings, "secret": secret_material}, sort_keys=True, default=str)
        return cls(slot, hmac.new(_FINGERPRINT_KEY, material.encode(), hashlib.sha256).hexdigest())


@dataclass(eq=False)
class Session:
    """One open MCP client session, held open by a task of the pool's event loop until it is closed."""

    key: SessionKey
    client: Any = None
    errlog: Any = None  # a stdio server's stderr (a file of ours), for the log line of its failure
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    pooled: bool = True
    failure: BaseException | None = None  # what ended the transport, when it failed on its own
    retired: bool = False  # superseded (settings or credential changed), or found broken: closed when idle
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    @property
    def dead(self) -> bool:
        """The transport ended (a stdio server exited, a stream closed): nothing more can be sent on it."""
        if self._done.is_set() or self.client is None:
            return True
        dispatcher = getattr(self.client.session, "_dispatcher", None)  # the SDK's JSON-RPC dispatcher
        return bool(getattr(dispatcher, "_closed", False))

    def close(self) -> None:
        self.retired = True
        self._closing.set()

    def errlog_tail(self) -> str:
        """The last line the server wrote to stderr (without moving the file's offset, which the server shares)."""
        if self.errlog is None:
            return ""
        try:
            fd = self.errlog.fileno()
            size = os.fstat(fd).st_size
            text = os.pread(fd, 4000, max(0, size - 4000)).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""


Opener = Callable[[Any], Any]  # errlog → an entered-able MCP Client


class SessionPool:
    """The process's MCP sessions and the event loop thread they live on."""

    def __init__(self, *, max_sessions: int = MAX_SESSIONS, idle_seconds: float = IDLE_SECONDS) -> None:
        self.pid = os.getpid()
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.sessions: dict[SessionKey, Session] = {}
        self.opened = 0  # sessions opened over the pool's life (tests, metrics)
        self._opening: dict[SessionKey, asyncio.Future[Session]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gatehouse-mcp-sessions", daemon=True)
        self._thread.start()
        self.stopped = False

    # --- From synchronous code ----------------------------------------------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float) -> T:
        """Run `coroutine` on the pool's loop and wait for it; it bounds itself, `timeout` is the backstop."""
        if self.stopped:
            coroutine.close()
            raise RuntimeError("the MCP session pool is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self, timeout: float = 10.0) -> None:
        """Close every session (stdio servers are stopped) and the loop. Idempotent; at exit, and in tests."""
        if self.stopped or os.getpid() != self.pid:
            return
        try:
            self.run(self._close_all(), timeout=timeout)
        except Exception:  # at exit: what could not be closed in time dies with the process
            logger.warning("mcp: closing the session pool failed", exc_info=True)
        self.stopped = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    # --- On the loop --------------------------------------------------------------------------------------------

    async def call(
        self,
        key: SessionKey,
        open_client: Opener,
        work: Callable[[Any], Awaitable[T]],
        *,
        timeout: float,
        idempotent: bool,
        answered: tuple[type[BaseException], ...] = (),
    ) -> T:
        """Run `work(client)` on a live session for `key`, within `timeout` (opening the session included).

        `idempotent`: the call may be sent again after a transport failure (a read-only tool). `answered`: exception
        types `work` raises itself on the server's answer, which leave the session as good as it was.
        """
        import anyio

        with anyio.fail_after(timeout):
            session, reused = await self._take(key, open_client)
            try:
                return await self._attempt(session, work, answered)
            except Exception as exc:
                if not (reused and session.retired and (idempotent or await _nothing_sent(exc, session))):
                    raise
                logger.info("mcp: a reused session failed (%s); sending once more on a new one", type(exc).__name__)
            session, _ = await self._take(key, open_client)
            return await self._attempt(session, work, answered)

    async def _attempt(
        self, session: Session, work: Callable[[Any], Awaitable[T]], answered: tuple[type[BaseException], ...]
    ) -> T:
        try:
            return await work(session.client)
        except BaseException as exc:
            if not _answered(exc, answered):
                session.close()  # a timeout, a closed pipe, a transport error: the next call starts afresh
                if session.errlog is not None:  # what the server said on stderr explains its failure
                    exc.add_note(session.errlog_tail())
            raise
        finally:
            self._give_back(session)

    async def _take(self, key: SessionKey, open_client: Opener) -> tuple[Session, bool]:
        """A live session for `key` and whether it was open before this call; dead or superseded ones go."""
        self._sweep(key)
        session = self.sessions.get(key)
        if session is not None and (session.dead or session.retired):
            self._drop(session)
            session = None
        if session is not None:
            session.in_use += 1
            session.last_used = time.monotonic()
            return session, True
        pending = self._opening.get(key)
        if pending is not None:  # another call is opening this very session: share it
            session = await asyncio.shield(pending)
            if not session.dead:
                session.in_use += 1
                session.last_used = time.monotonic()
                return session, False
        future: asyncio.Future[Session] = self._loop.create_future()
        self._opening[key] = future
        try:
            session = await self._open(key, open_client)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a failed open nobody else waited for is not "never retrieved"
            raise
        finally:
            self._opening.pop(key, None)
        session.pooled = self._make_room()
        if session.pooled:
            self.sessions[key] = session
        session.in_use += 1
        future.set_result(session)
        return session, False

    async def _open(self, key: SessionKey, open_client: Opener) -> Session:
        session = Session(key)
        ready: asyncio.Future[None] = self._loop.create_future()

        async def hold() -> None:
            try:
                async with open_client(session.errlog) as client:
                    session.client = client
                    ready.set_result(None)
                    await session._closing.wait()
            except BaseException as exc:  # reported to the opener; later, the session is just gone
                if not ready.done():
                    if session.errlog is not None:  # what the server said on stderr explains why it did not start
                        exc.add_note(session.errlog_tail())
                    ready.set_exception(exc)
                else:
                    session.failure = exc
                    logger.debug("mcp: a session ended: %r", exc)
            finally:
                session._done.set()
                if session.errlog is not None:
                    session.errlog.close()

        if key.slot and key.slot[0] == "stdio":
            # O_APPEND: the server always writes at the end, so the file can be cut short while it runs.
            session.errlog = tempfile.TemporaryFile(mode="a+", encoding="utf-8", errors="replace")  # noqa: SIM115
        session._task = self._loop.create_task(hold())
        try:
            await asyncio.shield(ready)
        except BaseException:
            session.close()
            session._task.cancel()
            raise
        self.opened += 1
        return session

    def _give_back(self, session: Session) -> None:
        session.in_use -= 1
        session.last_used = time.monotonic()
        if session.errlog is not None:
            _trim(session.errlog)
        if session.in_use == 0 and (session.retired or not session.pooled):
            self._drop(session)

    def _sweep(self, key: SessionKey) -> None:
        """Retire sessions of `key`'s slot opened with other settings or credentials, and long-idle ones."""
        now = time.monotonic()
        for other in list(self.sessions.values()):
            superseded = other.key.slot == key.slot and other.key != key
            if superseded or now - other.last_used > self.idle_seconds or other.dead:
                other.retired = True
                if other.in_use == 0:
                    self._drop(other)

    def _make_room(self) -> bool:
        """Whether a new session may join the pool, closing the least recently used idle one if it is full."""
        if len(self.sessions) < self.max_sessions:
            return True
        idle = [session for session in self.sessions.values() if session.in_use == 0]
        if not idle:
            return False
        self._drop(min(idle, key=lambda session: session.last_used))
        return True

    def _drop(self, session: Session) -> None:
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        session.close()

    async def _close_all(self) -> None:
        sessions = list(self.sessions.values())
        self.sessions.clear()
        for session in sessions:
            session.close()
        for session in sessions:
            if session._task is not None:
                try:
                    await asyncio.wait_for(session._done.wait(), 8)
                except TimeoutError:
                    session._task.cancel()


def _trim(errlog: Any) -> None:
    try:
        if os.fstat(errlog.fileno()).st_size > ERRLOG_MAX_BYTES:
            errlog.truncate(0)
    except (OSError, ValueError):
        pass


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _answered(exc: BaseException, answered: tuple[type[BaseException], ...]) -> bool:
    """Whether `exc` is an answer (the caller's own verdict on it, or an MCP error the server sent): the session is
    as good as before. Anything else — a timeout, a closed connection, a transport error — breaks it."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED

    leaves = _leaves(exc)
    if any(isinstance(leaf, answered) for leaf in leaves):
        return True
    return all(isinstance(leaf, MCPError) and leaf.code != CONNECTION_CLOSED for leaf in leaves)


class SessionUnknown(Exception):
    """The server answered 404 to a request carrying our session id: it does not know the session (it restarted, or
    ended it), and by the transport's rules it ran nothing of that request. Raised by the HTTP client's response
    hook (connectors.mcp.connector), it ends the session's transport."""


async def _nothing_sent(exc: BaseException, session: Session) -> bool:
    """Whether `exc` proves the request never reached the server, so sending it again cannot do anything twice: the
    connection was refused, or the server said it does not know the session. A closed connection says nothing by
    itself; what ended the session's transport (recorded by its task) does."""
    import httpx2
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED

    leaves = _leaves(exc)
    if any(isinstance(leaf, MCPError) and leaf.code == CONNECTION_CLOSED for leaf in leaves):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session._done.wait(), 1.0)
        if session.failure is None:
            return False
        leaves = [leaf for leaf in leaves if not isinstance(leaf, MCPError)] + _leaves(session.failure)
    return bool(leaves) and all(
        isinstance(leaf, httpx2.ConnectError | ConnectionRefusedError | SessionUnknown) for leaf in leaves
    )


# --- The process's pool ---------------------------------------------------------------------------------------------

_pool: SessionPool | None = None
_pool_lock = threading.Lock()


def pool() -> SessionPool:
    """This process's session pool, made on first use (so a forked child makes its own)."""
    global _pool
    current = _pool
    if current is not None and current.pid == os.getpid() and not current.stopped:
        return current
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid() or _pool.stopped:
            _pool = SessionPool()
            atexit.register(_pool.close)
        return _pool


def _forget_pool_in_child() -> None:
    """After fork: the parent's pool (its loop thread did not come along) is not ours to use or close."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)
