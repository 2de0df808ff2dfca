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


# The proposals that count towards a rule's cumulative limit and an agent's budget: every one still standing, whether
# it waits for a person (pending, escalated, stale, on hold), is on its way (approved, executing, a manual task) or
# was written (executed). Not those that were never written or were undone (rejected, cancelled, expired, failed,
# reversed): they changed nothing, and counting them would let a person's "no" use up an agent's budget. Counting
# the waiting ones is what stops an agent from splitting a large change into small ones faster than people decide.
COUNTS_TOWARDS_LIMITS = frozenset(
    {
        ProposalStatus.PENDING_APPROVAL,
        ProposalStatus.ESCALATED,
        ProposalStatus.STALE,
        ProposalStatus.ON_HOLD,
        ProposalStatus.APPROVED,
        ProposalStatus.EXECUTING,
        ProposalStatus.MANUAL_TASK,
        ProposalStatus.EXECUTED,
    }
)
