"""Proposals (an agent's request to write), the outbox that hands approved ones to workers, idempotency records."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone

from approvals.choices import AWAITING_DECISION, DecisionMode, ProposalStatus, ReviewOutcome
from approvals.querysets import DelegationQuerySet, ProposalQuerySet


class Proposal(models.Model):
    """One write an agent asked for, how it was decided, and what executing it did.

    Status changes only in the approvals service modules (services.py; killswitch.py for hold and release,
    reversal.py for `reversed`, drills.py for a drill's own writes), under a row lock, each with its audit event.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey("governance.Agent", on_delete=models.PROTECT, related_name="proposals")
    system = models.ForeignKey("governance.System", on_delete=models.PROTECT, related_name="proposals")
    action_type = models.ForeignKey("governance.ActionType", on_delete=models.PROTECT, related_name="proposals")
    record_id = models.CharField(max_length=200)
    payload = models.JSONField()
    reason = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=ProposalStatus.choices)
    channel = models.CharField(max_length=20)
    request_id = models.CharField(max_length=64, blank=True)
    # The W3C traceparent of the step that decided it, when tracing is on: its execution, published later by a
    # person's approval or the sweeper, continues that trace (core.tracing.span's `parent`). A database default for a
    # process of the previous release still inserting during a rolling deploy.
    trace_parent = models.CharField(max_length=55, blank=True, default="", db_default="", editable=False)

    # The decision, computed by Gatehouse (never taken from the agent).
    impact_amount = models.DecimalField(max_digits=16, decimal_places=2, null=True, blank=True)
    impact_currency = models.CharField(max_length=3, blank=True)
    mode = models.CharField(max_length=10, choices=DecisionMode.choices)
    decision = models.JSONField(default=dict, help_text="Rule, band and the reason for the mode.")
    rule = models.ForeignKey(
        "governance.ThresholdRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approver_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    review_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    review_timing = models.CharField(max_length=10, blank=True)
    sla_due_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    record_snapshot = models.JSONField(
        default=dict, blank=True, help_text="The record's relevant fields when the proposal was made."
    )

    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)

    # Dual approval: the second reviewer, before or after execution (review_timing).
    review_within = models.DurationField(null=True, blank=True)
    review_due_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_outcome = models.CharField(max_length=10, choices=ReviewOutcome.choices, blank=True)
    review_comment = models.TextField(blank=True)
    review_escalated_at = models.DateTimeField(
        null=True, blank=True, help_text="When the second review passed its due time undone and was escalated (once)."
    )
    review_reminded_at = models.DateTimeField(
        null=True, blank=True, help_text="The last e-mail about the overdue review (escalation, then reminders)."
    )

    # Reassignment by escalation (approvals/delegation.py): who else may decide now, besides whom the rule named.
    reassigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The named approver's delegate, who may decide it too since it escalated.",
    )
    reassigned_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The on-call group, whose members may decide it too since it escalated.",
    )
    reassigned_at = models.DateTimeField(null=True, blank=True)

    # Execution.
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker last took it up.")
    executed_at = models.DateTimeField(null=True, blank=True)
    state_before = models.JSONField(null=True, blank=True)
    state_after = models.JSONField(null=True, blank=True)
    compensation = models.JSONField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    stale_changes = models.JSONField(
        null=True,
        blank=True,
        help_text="Why it went stale: each field the decision rested on that changed since, as [then, now].",
    )
    held_from = models.CharField(
        max_length=20, blank=True, help_text="While on hold: the status it returns to when released."
    )
    hold_reason = models.CharField(
        max_length=300,
        blank=True,
        help_text="While on hold: why (a kill switch, or readiness: the system's checklist stopped holding).",
    )
    reversed_at = models.DateTimeField(null=True, blank=True)
    duplicate_deliveries = models.PositiveIntegerField(
        default=0,
        help_text="Deliveries of its execution task that found it already executing or finished, and did nothing "
        "(the broker delivered again, or the sweeper published again).",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProposalQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["agent", "-created_at"], name="proposal_agent_recent_idx"),
            models.Index(fields=["status", "sla_due_at"], name="proposal_status_sla_idx"),
            models.Index(fields=["system", "record_id"], name="proposal_record_idx"),
            models.Index(fields=["mode", "review_due_at"], name="proposal_review_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action_type.name} on {self.system.slug} {self.record_id} ({self.get_status_display()})"

    @property
    def awaiting_decision(self) -> bool:
        return self.status in AWAITING_DECISION

    @property
    def awaiting_review(self) -> bool:
        """Dual approval: the named approver has approved, the second reviewer has not yet reviewed."""
        if self.mode != DecisionMode.DUAL or not self.decided_by_id or self.reviewed_by_id:
            return False
        if self.review_timing == "before":
            return self.status in AWAITING_DECISION
        return self.status == ProposalStatus.EXECUTED

    @property
    def review_overdue(self) -> bool:
        """The second review is still due and its time has passed (escalated by the sweeper, never dropped)."""
        return bool(self.awaiting_review and self.review_due_at and self.review_due_at < timezone.now())


class OutboxMessage(models.Model):
    """Written in the same transaction as an approval: a relay publishes it to Celery after the commit, and a sweeper
    publishes again what is still waiting, so nothing approved is lost if the broker was down."""

    proposal = models.OneToOneField(Proposal, on_delete=models.CASCADE, related_name="outbox")
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    publish_attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        indexes = [models.Index(fields=["published_at", "created_at"], name="outbox_pending_idx")]

    def __str__(self) -> str:
        return f"outbox for {self.proposal_id}"


class IdempotencyRecord(models.Model):
    """The first response to an agent's Idempotency-Key (Stripe's semantics), kept for at least 24 hours."""

    agent = models.ForeignKey("governance.Agent", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "key"], name="idempotency_one_per_agent_key")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_age_idx")]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.key}"


class Reversal(models.Model):
    """A reversal of a window of executed writes (an agent's or a system's), planned, then run by a worker.

    The plan is a list of steps, newest write first. Each step is reversible (its compensation will run), blocked (the
    record changed since, by someone else: left for a human) or not reversible (the action's note says why). A drill is
    a reversal of writes the drill itself made on a staging system.
    """

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        INCOMPLETE = "incomplete", "Done, with steps that failed or wait"

    agent = models.ForeignKey("governance.Agent", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    system = models.ForeignKey("governance.System", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    proposal = models.ForeignKey(
        Proposal,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="reversals",
        help_text="A reversal of this one write only (approvals/reversal_single.py), not of a window.",
    )
    awaits_approval = models.BooleanField(
        default=False,
        help_text="Planned because a second reviewer flagged the write: it runs only once someone who may approve "
        "the write approves its reversal.",
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField(help_text="Writes executed after this are not part of the plan.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PLANNED)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    channel = models.CharField(max_length=20)
    reason = models.CharField(max_length=300, blank=True)
    moving = models.BooleanField(
        default=False, help_text="When planned, the agent or system could still write: the window was moving."
    )
    rounds = models.PositiveIntegerField(default=0, help_text="Passes a worker made over the steps.")
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="While a worker runs a round.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(agent__isnull=False) | models.Q(system__isnull=False), name="reversal_has_scope"
            ),
            # A write is flagged once; the flag's reversal is planned once, by the review or by the sweep after it.
            models.UniqueConstraint(
                fields=["proposal"], condition=models.Q(awaits_approval=True), name="one_flagged_reversal_per_write"
            ),
        ]

    def __str__(self) -> str:
        return f"reversal {self.pk} of {self.scope_label} ({self.get_status_display()})"

    @property
    def scope_label(self) -> str:
        if self.proposal_id:
            return f"proposal {self.proposal_id}"
        parts = [f"agent {self.agent}" if self.agent_id else "", f"system {self.system}" if self.system_id else ""]
        return " on ".join(part for part in parts if part)


class ReversalStep(models.Model):
    """One executed write of a reversal's window and what becomes of it."""

    class Kind(models.TextChoices):
        REVERSIBLE = "reversible", "Reversible"
        BLOCKED = "blocked", "Blocked: changed since"
        NOT_REVERSIBLE = "not_reversible", "Not reversible"
        ALREADY_REVERSED = "already_reversed", "Already reversed"

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        DONE = "done", "Reversed"
        RETRYING = "retrying", "Waiting to retry"
        FAILED = "failed", "Failed"
        HELD = "held", "Held for a person"
        SKIPPED = "skipped", "Nothing to do"

    reversal = models.ForeignKey(Reversal, on_delete=models.CASCADE, related_name="steps")
    proposal = models.ForeignKey(Proposal, on_delete=models.PROTECT, related_name="reversal_steps")
    position = models.PositiveIntegerField(help_text="1 is the newest write: steps run in this order.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PLANNED)
    explanation = models.TextField(blank=True)
    current = models.JSONField(null=True, blank=True, help_text="The record's values when planned or last checked.")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["reversal", "position"]
        constraints = [
            models.UniqueConstraint(fields=["reversal", "proposal"], name="reversal_step_once"),
            models.UniqueConstraint(fields=["reversal", "position"], name="reversal_step_position"),
        ]

    def __str__(self) -> str:
        return f"step {self.position} of reversal {self.reversal_id}: {self.get_kind_display()}"


class Drill(models.Model):
    """A rollback drill on a staging system: writes made, reversed, and the records checked back."""

    system = models.ForeignKey("governance.System", on_delete=models.PROTECT, related_name="drills")
    reversal = models.OneToOneField(Reversal, null=True, blank=True, on_delete=models.SET_NULL, related_name="drill")
    passed = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.DurationField(null=True, blank=True)
    performed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    channel = models.CharField(max_length=20)
    report = models.JSONField(default=list, help_text="What each step wrote, reversed and found.")
    failure = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        return f"drill on {self.system} {self.started_at:%Y-%m-%d %H:%M}: {'passed' if self.passed else 'failed'}"


class Delegation(models.Model):
    """While `who` is away (starts_at to ends_at), `delegate` may decide the proposals named to `who`.

    One level only: a delegate acts for the person who named them, never for whoever named that person in turn
    (approvals/delegation.py refuses a chain at creation, and looks one level up at decision time). Separation of
    duties binds the delegate as it binds anyone deciding. Created and ended through approvals/delegation.py, which
    writes a `configured` audit event.
    """

    who = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="delegations_given")
    delegate = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="delegations_received"
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=300, help_text="Why, e.g. out of office.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DelegationQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")), name="delegation_ends_after"),
            models.CheckConstraint(condition=~models.Q(who=models.F("delegate")), name="delegation_not_to_self"),
        ]
        indexes = [models.Index(fields=["who", "ends_at"], name="delegation_active_idx")]

    def __str__(self) -> str:
        return f"{self.who} → {self.delegate} ({self.starts_at:%Y-%m-%d} to {self.ends_at:%Y-%m-%d})"

    @property
    def active(self) -> bool:
        return self.starts_at <= timezone.now() < self.ends_at


class SlackMessage(models.Model):
    """One Slack message asking for a decision on a proposal: in the configured channel, or a direct message to one
    person who may decide (approvals/slack/). Kept so the message can be updated with the outcome, and so a task that
    runs twice (a retry after an outage, a second delivery) posts it once."""

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="slack_messages")
    target = models.CharField(
        max_length=200, help_text="Where it goes: channel:<id>, or email:<address> for a person's direct message."
    )
    channel = models.CharField(max_length=40, blank=True, help_text="The Slack conversation it was posted in.")
    ts = models.CharField(max_length=40, blank=True, help_text="Slack's id of the message (empty until posted).")
    posted_at = models.DateTimeField(null=True, blank=True)
    shown_at = models.DateTimeField(null=True, blank=True, help_text="When it was last updated to show the outcome.")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True, help_text="Slack's error code, never its whole answer.")
    gave_up = models.BooleanField(default=False, help_text="Slack refused it for good (no such person, say).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["proposal", "target"], name="slack_message_one_per_target")]

    def __str__(self) -> str:
        return f"Slack message for {self.proposal_id} to {self.target}"


class DecisionLink(models.Model):
    """One e-mailed link to one proposal's page, for one person and one purpose (deciding it).

    The signed token in the e-mail (approvals/decision_links.py) names this row, and the row is what makes the link
    single-use: it is spent the first time its recipient opens it signed in, and refused after that, after it lapses,
    and once the proposal is decided (by anyone, through any door). It grants nothing: the decision still needs the
    signed-in session and the click on Approve or Reject, through approvals/decisions.py.
    """

    class Purpose(models.TextChoices):
        DECIDE = "decide", "decide"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="decision_links")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(help_text="The SLA, or the link's maximum age, whichever comes first.")
    opened_at = models.DateTimeField(null=True, blank=True, help_text="Spent: when its recipient opened it.")
    decided_at = models.DateTimeField(null=True, blank=True, help_text="When a decision was made through it.")

    class Meta:
        indexes = [models.Index(fields=["proposal", "user"], name="decision_link_recipient_idx")]

    def __str__(self) -> str:
        return f"{self.purpose} link to {self.proposal_id} for {self.user_id}"
