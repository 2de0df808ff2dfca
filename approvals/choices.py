"""Proposal states and the named sets the services reason with."""

from django.db import models


class ProposalStatus(models.TextChoices):
    PENDING_APPROVAL = "pending_approval", "Pending approval"
    ESCALATED = "escalated", "Escalated"
    APPROVED = "approved", "Approved"
    EXECUTING = "executing", "Executing"
    EXECUTED = "executed", "Executed"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"
    MANUAL_TASK = "manual_task", "Manual task"
    REVERSED = "reversed", "Reversed"
    ON_HOLD = "on_hold", "On hold"
    # The record changed after the decision: the write did not happen, and a person decides again on the record as
    # it is now (DESIGN.md, "Execution re-checks").
    STALE = "stale", "Stale: the record changed"


AWAITING_DECISION = frozenset({ProposalStatus.PENDING_APPROVAL, ProposalStatus.ESCALATED, ProposalStatus.STALE})
EXECUTABLE = frozenset({ProposalStatus.APPROVED, ProposalStatus.EXECUTING})
TERMINAL_STATUSES = frozenset(
    {
        ProposalStatus.EXECUTED,
        ProposalStatus.FAILED,
        ProposalStatus.REJECTED,
        ProposalStatus.CANCELLED,
        ProposalStatus.EXPIRED,
        ProposalStatus.REVERSED,
    }
)


class ReviewOutcome(models.TextChoices):
    REVIEWED = "reviewed", "Reviewed: fine"
    FLAGGED = "flagged", "Flagged for reversal"


class DecisionMode(models.TextChoices):
    AUTO = "auto", "Auto-execute"
    SINGLE = "single", "One approver"
    DUAL = "dual", "Approver and second reviewer"
