"""Per-system rate limits and circuit breakers: a system is called at the pace its inventory row allows, and not at
all while it is down, whichever kind of connector reaches it.

The state of a system is one small record — the token bucket's theoretical arrival time (`tat`, GCRA, as in
governance/api/throttling.py) and the breaker's consecutive failures, `open_until` and `probe_until` — changed by one
Lua script per call in Redis when REDIS_URL is set. The embedded default keeps the same record in a SQLite file under
VAR_DIR instead of process memory: the web process and the worker's pool processes must share one bucket and one
breaker per system, or each process would get the whole rate and the admin could not see a breaker the worker opened.

- Bucket: `rate_limit_per_minute` tokens a minute, `rate_limit_burst` at once. A call that finds it empty is not made:
  the caller gets `RateLimitWait(retry_after=seconds)`. A transient error carrying Retry-After (429, or 503 in
  maintenance) is the system pacing us: the bucket is emptied until then, so every process waits, and it does not
  count as a failure (the system answered).
- Breaker: `breaker_threshold` consecutive failures (timeouts, refused connections, 5xx without Retry-After) open it
  for `breaker_cooldown`; calls then get `CircuitOpen` without reaching the system. After the cooldown one call is let
  through as the probe (half-open): success closes the breaker, failure opens it for another cooldown.

Both refusals are `TransientError`s, so every caller that already retries transient errors defers; callers that must
not count them as attempts (executions, reversal steps) catch `CallDeferred` first. A rate store that does not answer
lets calls through (logged): the limits protect the system, they grant nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

from connectors.base import Connector, Health, PermanentError, TransientError
from governance.models import System

logger = logging.getLogger(__name__)

# Waits shorter than this are slept inside the call rather than sent round the broker: a retry message costs more.
BACKGROUND_PATIENCE = 0.25
# While a probe is out, others are told to come back this soon at most: the probe usually answers within a second.
PROBE_RECHECK = 2.0
# State outlives its last change by this much, then expires: a quiet system starts afresh.
KEEP_FOR = 3600

_now = time.time  # tests replace these two with a fake clock
_sleep = time.sleep


class CallDeferred(TransientError):
    """The call was not made: the system's rate limit or its circuit breaker says when to try again."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after: float = retry_after


class RateLimitWait(CallDeferred):
    """The system's token bucket is empty (or the system asked us to wait with Retry-After)."""


class CircuitOpen(CallDeferred):
    """The system failed repeatedly; Gatehouse does not call it until the cooldown is over and a probe succeeds."""


# --- The algorithm, once in Lua (Redis) and once in Python (the embedded store) -------------------------------------
#
# Verdicts of admit: ok (nothing to record afterwards), dirty (failures are counted: a success must reset them),
# probe (this call is the half-open probe), wait (bucket empty), open (breaker open or a probe already out).

_STATE_FIELDS = ("tat", "failures", "open_until", "probe_until", "opened_at", "last_error")

_ADMIT = """
local now, interval, burst, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local s = redis.call('HMGET', KEYS[1], 'tat', 'failures', 'open_until', 'probe_until')
local tat, failures = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local open_until, probe_until = tonumber(s[3]) or 0, tonumber(s[4]) or 0
if open_until > 0 then
  if now < open_until then return {'open', tostring(open_until - now)} end
  if now < probe_until then return {'open', tostring(probe_until - now)} end
end
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then return {'wait', tostring(allow_at - now)} end
local verdict = 'ok'
if failures > 0 then verdict = 'dirty' end
if open_until > 0 then
  probe_until = now + lease
  redis.call('HSET', KEYS[1], 'probe_until', tostring(probe_until))
  verdict = 'probe'
end
if new_tat > now then redis.call('HSET', KEYS[1], 'tat', tostring(new_tat)) end
if verdict == 'probe' or new_tat > now then
  redis.call('EXPIRE', KEYS[1], math.ceil(math.max(new_tat, probe_until) - now) + tonumber(ARGV[5]))
end
return {verdict, '0'}
"""

_RESULT = """
local now, threshold, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hold_until, interval, burst = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local outcome = ARGV[7]
local s = redis.call('HMGET', KEYS[1], 'tat', 'failures', 'open_until', 'opened_at')
local tat, failures = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local open_until, opened_at = tonumber(s[3]) or 0, tonumber(s[4]) or 0
if hold_until > now then
  local held = hold_until + (burst - 1) * interval
  if tat < held then tat = held; redis.call('HSET', KEYS[1], 'tat', tostring(tat)) end
end
if outcome == 'failure' then
  failures = failures + 1
  redis.call('HSET', KEYS[1], 'failures', failures, 'last_error', ARGV[8])
  if open_until > 0 or failures >= threshold then
    open_until = now + cooldown
    if opened_at == 0 then opened_at = now end
    redis.call('HSET', KEYS[1], 'open_until', tostring(open_until), 'probe_until', '0',
               'opened_at', tostring(opened_at))
  end
elseif failures > 0 or open_until > 0 then
  open_until = 0
  redis.call('HDEL', KEYS[1], 'failures', 'open_until', 'probe_until', 'opened_at', 'last_error')
end
redis.call('EXPIRE', KEYS[1], math.ceil(math.max(tat, open_until, now) - now) + tonumber(ARGV[9]))
return tostring(open_until)
"""


def _admit(state: dict[str, Any], now: float, interval: float, burst: int, lease: float) -> tuple[str, float]:
    """_ADMIT in Python: the same verdicts from the same state, changing `state` in place."""
    tat, failures = float(state.get("tat") or 0), int(state.get("failures") or 0)
    open_until, probe_until = float(state.get("open_until") or 0), float(state.get("probe_until") or 0)
    if open_until > 0:
        if now < open_until:
            return "open", open_until - now
        if now < probe_until:
            return "open", probe_until - now
    new_tat = max(tat, now) + interval
    allow_at = new_tat - interval * burst
    if now < allow_at:
        return "wait", allow_at - now
    verdict = "dirty" if failures > 0 else "ok"
    if open_until > 0:
        state["probe_until"] = now + lease
        verdict = "probe"
    if new_tat > now:
        state["tat"] = new_tat
    return verdict, 0.0


def _result(
    state: dict[str, Any],
    now: float,
    *,
    threshold: int,
    cooldown: float,
    hold_until: float,
    interval: float,
    burst: int,
    outcome: str,
    error: str,
) -> float:
    """_RESULT in Python. `outcome` is failure (counts towards the breaker) or answered (the system responded)."""
    tat, failures = float(state.get("tat") or 0), int(state.get("failures") or 0)
    open_until, opened_at = float(state.get("open_until") or 0), float(state.get("opened_at") or 0)
    if hold_until > now:
        state["tat"] = max(tat, hold_until + (burst - 1) * interval)
    if outcome == "failure":
        failures += 1
        state.update(failures=failures, last_error=error)
        if open_until > 0 or failures >= threshold:
            open_until = now + cooldown
            state.update(open_until=open_until, probe_until=0, opened_at=opened_at or now)
    elif failures > 0 or open_until > 0:
        open_until = 0
        for name in ("failures", "open_until", "probe_until", "opened_at", "last_error"):
            state.pop(name, None)
    return open_until


# --- Where the state lives ---------------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _redis_scripts(url: str):
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    return client, client.register_script(_ADMIT), client.register_script(_RESULT)


_local = threading.local()


def _sqlite() -> sqlite3.Connection:
    """This thread's connection to VAR_DIR/limits.sqlite3 (a fork gets its own; so does a test with its own VAR_DIR)."""
    path = Path(settings.VAR_DIR) / "limits.sqlite3"
    held = getattr(_local, "held", None)
    if held is not None and held[0] == (os.getpid(), path):
        return held[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=2.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # advisory state: losing the last change in a power cut is harmless
    conn.execute("CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, state TEXT NOT NULL, expires REAL NOT NULL)")
    _local.held = ((os.getpid(), path), conn)
    return conn


def _local_change(key: str, change) -> Any:
    """Run `change(state)` on the key's state inside one write transaction, and store what it leaves."""
    conn = _sqlite()
    now = _now()
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT state, expires FROM limits WHERE key = ?", (key,)).fetchone()
        if row is None:  # a key seen for the first time: a good moment to drop the expired ones (a row per system)
            conn.execute("DELETE FROM limits WHERE expires < ?", (now,))
        state = json.loads(row[0]) if row and row[1] > now else {}
        before = dict(state)
        answer = change(state)
        if state != before:
            expires = max(float(state.get("tat") or 0), float(state.get("probe_until") or 0), now) + KEEP_FOR
            expires = max(expires, float(state.get("open_until") or 0) + KEEP_FOR)
            conn.execute(
                "INSERT INTO limits (key, state, expires) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET state = excluded.state, expires = excluded.expires",
                (key, json.dumps(state), expires),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return answer


def _key(system) -> str:
    # The row's creation time is part of the key: a system deleted and made again (or a test database made afresh
    # against the same Redis) does not inherit an old breaker.
    created = int(system.created_at.timestamp() * 1_000_000) if system.created_at else 0
    return f"gatehouse:limits:{system.pk}:{created}"


@dataclass(frozen=True)
class _Limits:
    interval: float  # seconds per token; 0 without a rate limit (only Retry-After holds apply)
    burst: int
    threshold: int
    cooldown: float

    @classmethod
    def of(cls, system) -> _Limits:
        per_minute = system.rate_limit_per_minute
        interval = 60.0 / per_minute if per_minute else 0.0
        burst = system.rate_limit_burst or max(1, math.ceil((per_minute or 60) / 60))
        return cls(interval, burst, system.breaker_threshold, system.breaker_cooldown.total_seconds())


def admit(system) -> tuple[str, float]:
    """Ask to call `system` once: (verdict, 0) when the call may go ahead, ("wait"|"open", seconds) when not."""
    limits = _Limits.of(system)
    now = _now()
    try:
        if settings.REDIS_URL:
            _, script, _ = _redis_scripts(settings.REDIS_URL)
            verdict, seconds = script(
                keys=[_key(system)], args=[now, limits.interval, limits.burst, limits.cooldown, KEEP_FOR]
            )
            return verdict.decode(), float(seconds)
        return _local_change(
            _key(system), lambda state: _admit(state, now, limits.interval, limits.burst, limits.cooldown)
        )
    except Exception as exc:  # the rate store is down: protect nothing rather than refuse everything
        logger.warning("limits: rate store unavailable, %s called unchecked: %s", system.slug, exc)
        return "ok", 0.0


def record(system, *, failed: bool, retry_after: float | None = None, error: str = "") -> float:
    """After a call that reached the system: a failure counts towards the breaker, any answer resets it; a
    Retry-After empties the bucket until then. Returns when the breaker opens again (0: closed)."""
    limits = _Limits.of(system)
    now = _now()
    hold_until = now + retry_after if retry_after else 0.0
    outcome = "failure" if failed else "answered"
    try:
        if settings.REDIS_URL:
            _, _, script = _redis_scripts(settings.REDIS_URL)
            args = [now, limits.threshold, limits.cooldown, hold_until, limits.interval, limits.burst, outcome]
            return float(script(keys=[_key(system)], args=[*args, error[:300], KEEP_FOR]))
        return _local_change(
            _key(system),
            lambda state: _result(
                state,
                now,
                threshold=limits.threshold,
                cooldown=limits.cooldown,
                hold_until=hold_until,
                interval=limits.interval,
                burst=limits.burst,
                outcome=outcome,
                error=error[:300],
            ),
        )
    except Exception as exc:
        logger.warning("limits: rate store unavailable, outcome for %s not recorded: %s", system.slug, exc)
        return 0.0


def reset(system) -> None:
    """Forget the system's bucket and breaker (tests; an operator who knows the system is back)."""
    if settings.REDIS_URL:
        _redis_scripts(settings.REDIS_URL)[0].delete(_key(system))
    else:
        _sqlite().execute("DELETE FROM limits WHERE key = ?", (_key(system),))


def _state(system) -> dict[str, Any]:
    if settings.REDIS_URL:
        raw = _redis_scripts(settings.REDIS_URL)[0].hgetall(_key(system))
        return {k.decode(): v.decode() for k, v in raw.items()}
    row = _sqlite().execute("SELECT state, expires FROM limits WHERE key = ?", (_key(system),)).fetchone()
    return json.loads(row[0]) if row and row[1] > _now() else {}


@dataclass(frozen=True)
class Availability:
    """What the admin shows of a system's breaker and bucket."""

    state: str  # available | unavailable | probing | paced | unknown
    failures: int = 0
    opened_at: datetime | None = None
    retry_in: float = 0.0
    last_error: str = ""

    def __str__(self) -> str:
        if self.state == "unknown":
            return "Unknown: the rate store does not answer."
        if self.state in ("unavailable", "probing"):
            since = f" since {self.opened_at:%Y-%m-%d %H:%M:%S} UTC" if self.opened_at else ""
            head = f"Unavailable{since}, after {self.failures} consecutive failures"
            tail = "a probe call is under way" if self.state == "probing" else f"next probe in {self.retry_in:.0f} s"
            return f"{head} ({self.last_error}); {tail}." if self.last_error else f"{head}; {tail}."
        failing = f"; {self.failures} consecutive failure(s) so far ({self.last_error})" if self.failures else ""
        if self.state == "paced":
            return f"Available; calls wait {self.retry_in:.1f} s for the rate limit{failing}."
        return f"Available{failing}."


def availability(system) -> Availability:
    try:
        state = _state(system)
    except Exception:
        return Availability("unknown")
    now = _now()
    failures = int(state.get("failures") or 0)
    open_until, probe_until = float(state.get("open_until") or 0), float(state.get("probe_until") or 0)
    opened_at = float(state.get("opened_at") or 0)
    error = str(state.get("last_error") or "")
    if open_until > 0:
        opened = datetime.fromtimestamp(opened_at, UTC) if opened_at else None
        status = "probing" if now >= open_until and now < probe_until else "unavailable"
        return Availability(status, failures, opened, max(0.0, open_until - now), error)
    limits = _Limits.of(system)
    wait = float(state.get("tat") or 0) - (limits.burst - 1) * limits.interval - now
    if wait > 0:
        return Availability("paced", failures, retry_in=wait, last_error=error)
    return Availability("available", failures, last_error=error)


# The breaker states in which Gatehouse does not call the system.
OPEN_STATES = frozenset({"unavailable", "probing"})


def circuit_states() -> dict[str, str]:
    """Each system's breaker as the admin shows it: available, paced, probing, unavailable, or unknown when the rate
    store does not answer. For /readyz and /metrics."""
    return {system.slug: availability(system).state for system in System.objects.order_by("slug")}


def retry_after_header(exc: BaseException, default: int = 5) -> str:
    """Whole seconds for a Retry-After header from an error's own hint."""
    seconds = getattr(exc, "retry_after", None)
    return str(max(1, math.ceil(seconds))) if seconds else str(default)


# --- The guard every connector call goes through ------------------------------------------------------------------


class Guarded(Connector):
    """A connector whose every call asks the system's bucket and breaker first and reports back after.

    Reads wait up to GATEHOUSE_READ_RATE_WAIT for a token (someone is waiting on the answer); writes, undos and polls
    wait only BACKGROUND_PATIENCE and otherwise raise `CallDeferred`, for their task to come back later.
    """

    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.system = inner.system

    def __getattr__(self, name: str) -> Any:  # a kind's own extras (config, tool lists…) are the inner connector's
        if name == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _admitted(self, patience: float) -> str:
        deadline = _now() + patience
        while True:
            verdict, seconds = admit(self.system)
            if verdict not in ("wait", "open"):
                return verdict
            if verdict == "wait" and seconds <= deadline - _now():
                _sleep(seconds)
                continue
            if verdict == "open":
                state = availability(self.system)
                if state.state == "probing":
                    seconds = min(seconds, PROBE_RECHECK)
                raise CircuitOpen(
                    f"{self.system.slug} is unavailable: its circuit breaker opened after repeated failures"
                    + (f" ({state.last_error})" if state.last_error else "")
                    + f"; next try in {math.ceil(seconds)} s",
                    retry_after=seconds,
                )
            raise RateLimitWait(
                f"{self.system.slug}: rate limit reached, next call in {seconds:.1f} s", retry_after=seconds
            )

    def _call(self, call, *args, patience: float = BACKGROUND_PATIENCE, **kwargs):
        verdict = self._admitted(patience)
        try:
            result = call(*args, **kwargs)
        except CallDeferred:
            raise
        except TransientError as exc:
            # With Retry-After the system answered and said when: pacing, not an outage.
            record(self.system, failed=exc.retry_after is None, retry_after=exc.retry_after, error=str(exc))
            raise
        except PermanentError:
            if verdict != "ok":
                record(self.system, failed=False)
            raise
        if verdict != "ok":
            record(self.system, failed=False)
        return result

    def read(self, resource: str, record_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        patience = settings.GATEHOUSE_READ_RATE_WAIT.total_seconds()
        return self._call(self.inner.read, resource, record_id, fields, patience=patience)

    def execute(self, action, record_id: str, payload: dict[str, Any], idempotency_key: str, *, expected=None):
        return self._call(self.inner.execute, action, record_id, payload, idempotency_key, expected=expected)

    def compensate(self, action, record_id: str, compensation: dict[str, Any], idempotency_key: str, *, expected=None):
        return self._call(self.inner.compensate, action, record_id, compensation, idempotency_key, expected=expected)

    def list_tools(self) -> list[Any]:
        """An MCP system's tool list (the importer, the tool pinning check): paced and counted like any call."""
        return self._call(self.inner.list_tools)  # type: ignore[attr-defined]  # an McpConnector inside

    def health(self) -> Health:
        # An operator's explicit check (a credential rotation tries the new secret): one call, let through even with
        # the breaker open. A good answer closes the breaker as a probe's would; a bad one is not counted, since it
        # may be a refused secret rather than an outage.
        health = self.inner.health()
        if health.ok:
            record(self.system, failed=False)
        return health


def guarded(connector: Connector) -> Connector:
    """`connector` behind its system's limits; a system not saved yet (a connection test) has none."""
    if connector.system.pk is None:
        return connector
    return Guarded(connector)
