"""Per-agent request rate: GCRA (the leaky bucket as a meter), one Redis round trip per request.

DRF's stock throttle keeps a list of every request's timestamp in the cache and pickles it both ways on each call,
through a client built per call: measured at ~5 ms of a 10 ms request. GCRA keeps one number per agent (the
theoretical arrival time), allows a burst of the whole rate, has no window-boundary double burst, and tells the
caller exactly when to retry. With REDIS_URL set the state lives in Redis, so every web process shares it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from functools import lru_cache

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from governance.models import Agent

logger = logging.getLogger(__name__)

_GCRA = """
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
local now, interval, period = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then return tostring(allow_at - now) end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000))
return '0'
"""

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@lru_cache(maxsize=8)
def parse_rate(rate: str) -> tuple[int, float]:
    """ "1200/min" → (1200, 60.0)."""
    count, _, unit = rate.partition("/")
    return int(count), float(_PERIODS[unit.strip()[0]])


@lru_cache(maxsize=2)
def _script(url: str):
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    return client.register_script(_GCRA)


_local_lock = threading.Lock()
_local_tat: dict[str, float] = {}


def _local(key: str, now: float, interval: float, period: float) -> float:
    """The same algorithm in this process, for the embedded default (one web process)."""
    with _local_lock:
        tat = max(_local_tat.get(key, now), now)
        new_tat = tat + interval
        allow_at = new_tat - period
        if now < allow_at:
            return allow_at - now
        _local_tat[key] = new_tat
        return 0.0


def take(key: str, rate: str) -> float:
    """Count one request against `rate`; 0 when allowed, else the seconds until one more would be."""
    count, period = parse_rate(rate)
    now, interval = time.time(), period / count
    if settings.REDIS_URL:
        return float(_script(settings.REDIS_URL)(keys=[key], args=[now, interval, period]))
    return _local(key, now, interval, period)


def forget(agent: Agent) -> None:
    """Start the agent's rate afresh (after changing GATEHOUSE_AGENT_RATE, say)."""
    key = f"throttle:agent:{agent.pk}"
    with _local_lock:
        _local_tat.pop(key, None)
    if settings.REDIS_URL:
        _script(settings.REDIS_URL).registered_client.delete(key)


class AgentRateThrottle(BaseThrottle):
    """GATEHOUSE_AGENT_RATE per agent; over it, 429 with Retry-After."""

    def allow_request(self, request, view) -> bool:
        agent = request.user
        if not isinstance(agent, Agent):
            return True
        try:
            self.wait_seconds = take(f"throttle:agent:{agent.pk}", settings.GATEHOUSE_AGENT_RATE)
        except Exception as exc:  # Redis down: the throttle protects capacity, it grants nothing; let it through
            logger.warning("throttle: rate store unavailable, request let through: %s", exc)
            return True
        return self.wait_seconds == 0

    def wait(self) -> float:
        return max(1, math.ceil(self.wait_seconds))
