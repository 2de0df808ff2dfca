"""The audit trail: one append-only, hash-chained event per thing that happened."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from audit.choices import ActorType, Channel, Verb

GENESIS_HASH = "0" * 64


class AuditEventQuerySet(models.QuerySet):
    def for_record(self, system, record_id: str) -> AuditEventQuerySet:
        return self.filter(system=system, record_id=record_id)

    def on(self, day: date) -> AuditEventQuerySet:
        """Events of one calendar day in the current time zone, as a range so the (…, occurred_at) indexes serve it."""
        start = timezone.make_aware(datetime.combine(day, time.min))
        end = timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))
        return self.filter(occurred_at__gte=start, occurred_at__lt=end)

    def for_proposal(self, proposal_id) -> AuditEventQuerySet:
        return self.filter(proposal_id=proposal_id)

    def systems_with_record(self, record_id: str) -> models.QuerySet:
        """The systems (by slug) with at least one of these events about `record_id`: crm 4471 and crm-staging 4471
        are two records. One probe of (system, record_id, occurred_at) per system, whatever the record's size."""
        systems = self.model._meta.get_field("system").related_model  # governance.System, named by the foreign key
        events = self.filter(system=models.OuterRef("pk"), record_id=record_id)
        return systems._default_manager.filter(models.Exists(events)).order_by("slug")

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
    # The OpenTelemetry trace the event was written in (32 hex digits), when tracing is on: the way from an event to
    # the request, the worker's execution and the system's answer around it. A database default for a process of the
    # previous release still inserting during a rolling deploy.
    trace_id = models.CharField(
        "trace ID",
        max_length=32,
        blank=True,
        default="",
        db_default="",
        help_text="The OpenTelemetry trace this happened in: search for it in the tracing backend.",
    )
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
            # The auditor's search box: a record id without knowing the system.
            models.Index(fields=["record_id", "occurred_at"], name="audit_recordid_time_idx"),
            # "Every denial this week": rare verbs found without walking the whole table.
            models.Index(fields=["verb", "occurred_at"], name="audit_verb_time_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.summary}"

    def chained_content(self) -> dict[str, Any]:
        """Everything the hash covers, in a form that reads back from the database unchanged.

        `trace_id` is covered only when it is set: events from before it existed, and those written with tracing off,
        hash exactly as they did."""
        content: dict[str, Any] = {
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
        if self.trace_id:
            content["trace_id"] = self.trace_id
        return content

    def compute_hash(self) -> str:
        canonical = json.dumps(self.chained_content(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def chained_parts(self) -> tuple[str, str]:
        """The canonical text `compute_hash` hashes, split around the value of `prev_hash`.

        `prefix + prev_hash + suffix` is exactly that text, so the database can hash an event whose `prev_hash` it
        reads under the chain lock (PostgreSQL fast path). Keys sort the same way in both, and the text is ASCII.
        """
        content = self.chained_content()
        del content["prev_hash"]
        before = {key: value for key, value in content.items() if key < "prev_hash"}
        after = {key: value for key, value in content.items() if key > "prev_hash"}
        return _canonical(before)[:-1] + ',"prev_hash":"', '",' + _canonical(after)[1:]


def _canonical(content: dict[str, Any]) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class AuditCheckpoint(models.Model):
    """A signed note of the chain's head (last id, its hash, the number of events) at one moment.

    The hash chain alone cannot tell a deleted tail from a chain that simply ended there: a later check compares the
    chain with the newest checkpoint, so events removed from the end are noticed. The HMAC (key from the environment,
    not in the database) keeps someone with only database access from writing a matching checkpoint of their own.

    Checkpoints form a chain of their own (version 2): each one's signature also covers the id and the signature of the
    checkpoint before it, so one removed from the middle or the start breaks the next one's link, and each is also
    written to the log, a copy outside the database (`audit.checkpoints`). Version 1 rows, from before the link, still
    verify on their own.
    """

    created_at = models.DateTimeField(default=timezone.now)
    last_event_id = models.BigIntegerField()
    last_hash = models.CharField(max_length=64)
    event_count = models.BigIntegerField()
    signature = models.CharField(max_length=64)
    # A database default, not only Python's: a process of the previous release still writing during a rolling deploy
    # inserts without naming these columns, and what it writes is indeed a version 1 checkpoint.
    version = models.PositiveSmallIntegerField(db_default=1, help_text="1: signed alone; 2: linked to the one before.")
    # A plain number, not a foreign key: the point is to notice when the checkpoint it names is gone.
    previous_id = models.BigIntegerField(null=True, blank=True, help_text="The checkpoint this one was signed after.")
    previous_signature = models.CharField(max_length=64, blank=True, db_default="")

    class Meta:
        ordering = ["-id"]
        get_latest_by = "id"
        constraints = [
            # Checkpoints are written one at a time under a lock; this keeps a bug or a race from forking the chain.
            models.UniqueConstraint(fields=["previous_id"], name="audit_checkpoint_one_successor"),
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.pk}: {self.event_count} event(s) up to #{self.last_event_id}"


class AuditVerification(models.Model):
    """The result of one run of the chain check (the periodic job and `verify_audit`), kept for the auditors."""

    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField()
    checked = models.BigIntegerField(default=0)
    broken_at = models.BigIntegerField(null=True, blank=True, help_text="The first event id that does not hold.")
    reason = models.TextField(blank=True)
    full = models.BooleanField(
        default=True,
        help_text="Walked the whole chain; otherwise only what was appended since the last checkpoint.",
    )
    checkpoint = models.ForeignKey(
        AuditCheckpoint,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="verifications",
        help_text="The checkpoint written after this check, when it passed.",
    )

    class Meta:
        ordering = ["-id"]
        get_latest_by = "id"

    def __str__(self) -> str:
        state = "intact" if self.ok else f"broken at #{self.broken_at}"
        return f"{self.started_at:%Y-%m-%d %H:%M} — {state} ({self.checked} checked)"
