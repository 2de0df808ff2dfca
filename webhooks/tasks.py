"""Celery tasks for webhooks: thin wrappers that take ids and call the services. Names are stable across deploys."""

from __future__ import annotations

from celery import shared_task

from webhooks.delivery import delivery_attempt
from webhooks.outbox import deliveries_sweep, publish_later


@shared_task(name="webhooks.deliver", acks_late=True, ignore_result=True)
def deliver(delivery_id: int) -> str:
    """One attempt at one delivery; the next one is published with its backoff. A second copy finds it claimed."""
    outcome = delivery_attempt(delivery_id=delivery_id)
    if outcome.retry_in is not None:
        publish_later(delivery_id, outcome.retry_in)
    return outcome.status


@shared_task(name="webhooks.sweep", ignore_result=True)
def sweep() -> int:
    """Publish again deliveries no worker took up (broker down, message lost, worker died)."""
    return deliveries_sweep()
