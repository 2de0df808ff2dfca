"""Each pytest-xdist worker (`make test` runs two) gets a Redis database of its own, as it gets a test database of its
own from pytest-django (`test_<name>_gw0`, `_gw1`…).

Two workers sharing one Redis database would share throttle counters, circuit breakers, policy generations and
cache entries keyed by the same agent and system ids of their two test databases. Django has read its settings when
the suite's conftest is imported, but nothing has connected to Redis yet: `isolate_redis()` points the settings, the
Celery app and the environment (which the stack processes a worker starts inherit) at the worker's database.
"""

from __future__ import annotations

import os
import re

REDIS_DATABASES = 16  # Redis's default number of databases
given_url: str | None = None  # REDIS_URL as the suite was started with, before isolate_redis()


def worker_index() -> int | None:
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    return int(match.group(1)) if match else None


def redis_url_for_worker(url: str, index: int) -> str:
    """The URL's own database for gw0, the one below it for gw1, and so on (redis://h:6379/15 → /15, /14, …)."""
    match = re.fullmatch(r"(rediss?://[^/?]*)(?:/(\d*))?(\?.*)?", url)
    if not match:
        raise ValueError(f"not a Redis URL: {url!r}")
    base, database, query = match.group(1), int(match.group(2) or 0), match.group(3) or ""
    return f"{base}/{(database - index) % REDIS_DATABASES}{query}"


def isolate_redis() -> None:
    from django.conf import settings

    global given_url
    given_url = settings.REDIS_URL
    index = worker_index()
    if index is None or not settings.REDIS_URL:
        return
    url = redis_url_for_worker(settings.REDIS_URL, index)
    os.environ["REDIS_URL"] = url
    settings.REDIS_URL = url
    settings.CACHES["default"]["LOCATION"] = url
    settings.CELERY_BROKER_URL = url

    from gatehouse.celery import app

    app.conf.broker_url = url
