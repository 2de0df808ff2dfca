"""Outbound webhooks: subscriptions (where to send which events, and the secret they are signed with) and the
deliveries, the outbox that hands each event to each subscription and keeps where it stands."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webhooks.choices import DeliveryStatus


class Subscription(models.Model):
    """A receiver of signed deliveries (Standard Webhooks): its URL, the event types it wants, and its secret.

    The secret is vaulted (connectors' MultiFernet, keys from the environment) and never readable again: Gatehouse
    shows it once, when it is made or rotated. After a rotation the previous secret signs too, until
    `previous_until`, so a receiver can switch without losing a delivery (the signature header carries both).
    Subscriptions are switched off, never deleted: their deliveries are the record of what was sent where.
    """

    url = models.URLField(max_length=500, help_text="Where deliveries are POSTed (within the connector allow-list).")
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list, help_text='Event types or groups ("proposal.*"), or "*".')
    active = models.BooleanField(default=True)
    ciphertext = models.TextField(editable=False)
    key_fingerprint = models.CharField(max_length=12, editable=False)
    previous_ciphertext = models.TextField(blank=True, editable=False)
    previous_until = models.DateTimeField(null=True, blank=True, editable=False)
    secret_rotated_at = models.DateTimeField(editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pk"]
        verbose_name = "webhook subscription"

    def __str__(self) -> str:
        return f"webhook #{self.pk} → {self.url}"


class Delivery(models.Model):
    """One event for one subscription: written in the event's transaction, published to a worker after the commit.

    The claim moves it to `sending` in one conditional statement, so two workers (a message delivered twice, the
    sweeper's republish) never send the same attempt. Retried with backoff until `retry_until`, then parked: an operator
    replays it (the admin's action, `replay_webhooks`). The receiver's answer is kept only as a short, redacted excerpt.
    """

    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="deliveries")
    event = models.ForeignKey("audit.AuditEvent", on_delete=models.PROTECT, related_name="+")
    event_type = models.CharField(max_length=60)
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    retry_until = models.DateTimeField(help_text="Failing past this, it is parked (GATEHOUSE_WEBHOOK_RETRY_FOR).")
    claimed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    response_excerpt = models.CharField(max_length=200, blank=True)
    replays = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-pk"]
        verbose_name_plural = "deliveries"
        constraints = [
            # An event goes to a subscription once: a second insert (a bug, a retried transaction) cannot double it.
            models.UniqueConstraint(fields=["subscription", "event"], name="webhooks_delivery_once"),
        ]
        indexes = [
            # The sweeper's and the admin's question: what is waiting, and since when.
            models.Index(fields=["status", "next_attempt_at"], name="webhooks_delivery_due_idx"),
        ]

    def __str__(self) -> str:
        return f"delivery #{self.pk}: {self.event_type} → subscription #{self.subscription_id}"

    @property
    def message_id(self) -> str:
        """The `webhook-id`: the same on every attempt and replay, so a receiver drops what it already has."""
        return f"msg_{self.pk}_{self.event_id}"
