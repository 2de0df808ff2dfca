"""System checks (`manage.py check`, and before runserver and migrate) for settings that start but work badly."""

from __future__ import annotations

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.compatibility)
def broker_visibility_timeout(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """On Redis, a task still running when the visibility timeout passes is delivered again: suppressed and counted
    (a duplicate), never executed twice, but a worker is busy for nothing. Not an error: nothing breaks."""
    if not settings.REDIS_URL:
        return []  # the filesystem broker has no visibility timeout
    timeout, limit = settings.GATEHOUSE_BROKER_VISIBILITY_TIMEOUT, settings.CELERY_TASK_TIME_LIMIT
    if timeout > limit:
        return []
    return [
        checks.Warning(
            f"GATEHOUSE_BROKER_VISIBILITY_TIMEOUT ({timeout} s) is not longer than the task hard time limit "
            f"GATEHOUSE_TASK_TIME_LIMIT ({limit} s).",
            hint="Redis delivers a task again once it has run longer than the visibility timeout, while the first "
            "run goes on: the second delivery is suppressed (counted in gatehouse_duplicate_deliveries_total), but "
            "it is wasted work. Leave the visibility timeout unset (4 times the hard limit) or make it longer.",
            id="gatehouse.W001",
        )
    ]
