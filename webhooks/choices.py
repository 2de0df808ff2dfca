"""Choices for webhook deliveries."""

from django.db import models


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"  # written with its event, not tried yet
    SENDING = "sending", "sending"  # claimed by one worker, which is sending it now
    RETRYING = "retrying", "retrying"  # failed, tried again at next_attempt_at
    DELIVERED = "delivered", "delivered"  # the receiver answered 2xx
    PARKED = "parked", "parked (dead letter)"  # failed for longer than GATEHOUSE_WEBHOOK_RETRY_FOR: an operator replays
    CANCELLED = "cancelled", "cancelled"  # the subscription was switched off or stopped wanting the event


# Waiting for a worker: what the claim takes and the sweeper publishes again.
WAITING_STATUSES = frozenset({DeliveryStatus.PENDING, DeliveryStatus.RETRYING})
