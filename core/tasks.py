"""Queueing background work by the task's stable name, so no service imports the module that defines the task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import current_app
from celery.result import AsyncResult


def queue_task(
    name: str, *, args: Sequence[Any] = (), countdown: float | None = None, priority: int | None = None
) -> AsyncResult:
    """Publish task `name` (e.g. "approvals.execute_proposal") once; a broker that does not answer raises at once
    (no retries here: the callers keep the work in the database and publish again later)."""
    return current_app.send_task(name, args=list(args), countdown=countdown, priority=priority, retry=False)
