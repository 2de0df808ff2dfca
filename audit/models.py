"""The audit trail: one append-only, hash-chained event per thing that happened."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC
from typing import Any

from django.conf import settings
from django.db import models

from audit.choices import ActorType, Channel, Verb

GENESIS_HASH = "0" * 64


class AuditEventQuerySet(models.QuerySet):
    def for_record(self, system, record_id: str) -> AuditEventQuerySet:
        return self.filter(system=system, record_id=record_id)

    def chain_order(self) -> AuditEventQuerySet:
        return self.order_by("id")


class AuditEvent(models.Model):
    """What happened, who did it, through which door, on what, decided how, and with what result.

    Rows are never changed or deleted: on PostgreSQL a trigger refuses UPDATE and DELETE. Each row holds the hash of
    the row before it, so an edit, a deletion or a reordering breaks the chain where it happened (`verify_audit`).
    Reads record the names of the fields returned, never their values.
    """

    occurred_at = models.DateTimeField()
    verb = models.CharField(max_length=30, choices=Verb.choices)
    actor_type = models.CharField(max_length=20, choices=ActorType.choices)
    actor = models.CharField(max_length=150, help_text="Who acted: an agent's slug, a person's username, or Gatehouse.")
    agent = models.ForeignKey(
        "governance.Agent", null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    person = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="audit_events",
        help_text="The person who acted, or the human in the loop.",
    )
    system = models.ForeignKey(
        "governance.System", null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    channel = models.CharField(max_length=20, choices=Channel.choices)
    resource = models.CharField(max_length=60, blank=True)
    record_id = models.CharField(max_length=200, blank=True)
    proposal_id = models.UUIDField(null=True, blank=True)
    input = models.JSONField(default=dict, blank=True)
    decision = models.JSONField(default=dict, blank=True)
    state_before = models.JSONField(null=True, blank=True)
    state_after = models.JSONField(null=True, blank=True)
    outcome = models.CharField(max_length=60, default="ok")
    request_id = models.CharField(max_length=64, blank=True)
    summary = models.CharField(max_length=500)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            # "What happened to account 4471 last Tuesday": one record, a time range.
            models.Index(fields=["system", "record_id", "occurred_at"], name="audit_record_time_idx"),
            models.Index(fields=["agent", "occurred_at"], name="audit_agent_time_idx"),
            models.Index(fields=["occurred_at"], name="audit_time_idx"),
            models.Index(fields=["proposal_id"], name="audit_proposal_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.summary}"

    def chained_content(self) -> dict[str, Any]:
        """Everything the hash covers, in a form that reads back from the database unchanged."""
        return {
            "occurred_at": self.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
            "verb": self.verb,
            "actor_type": self.actor_type,
            "actor": self.actor,
            "agent": self.agent_id,
            "person": self.person_id,
            "system": self.system_id,
            "channel": self.channel,
            "resource": self.resource,
            "record_id": self.record_id,
            "proposal_id": str(self.proposal_id) if self.proposal_id else None,
            "input": self.input,
            "decision": self.decision,
            "state_before": self.state_before,
            "state_after": self.state_after,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "summary": self.summary,
            "prev_hash": self.prev_hash,
        }

    def compute_hash(self) -> str:
        canonical = json.dumps(self.chained_content(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()
