"""Per-agent request rate, counted in the cache (Redis when REDIS_URL is set, so all web processes share it)."""

from __future__ import annotations

import logging

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from governance.models import Agent

logger = logging.getLogger(__name__)


class AgentRateThrottle(SimpleRateThrottle):
    scope = "agent"

    def get_rate(self) -> str:
        return settings.GATEHOUSE_AGENT_RATE

    def get_cache_key(self, request, view) -> str | None:
        agent = request.user
        return f"throttle:agent:{agent.pk}" if isinstance(agent, Agent) else None

    def allow_request(self, request, view) -> bool:
        # A cache outage must not stop the governed path: the throttle protects capacity, it grants nothing.
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # redis.ConnectionError and friends
            logger.warning("throttle: cache unavailable, request let through: %s", exc)
            return True
