"""The proposal state machine: the one place a proposal's status changes, and each change's audit event.

Every move a proposal can make is listed in MOVES (DESIGN.md, "Proposal states"). `move()` refuses any other, saves
the row and writes the move's audit event in the caller's transaction, so a status saved without its event, an
event without its status, or a bug elsewhere that would, say, execute a rejected proposal, cannot happen.
`record_event()` writes an event about a proposal that leaves its status alone (an approval that is the first of
two, a review after execution, a decision refused, a read). The caller holds the row lock (`locked()`); the
services decide which move to make, this module only makes it.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from approvals.choices import ProposalStatus
from approvals.models import Proposal
from approvals.slack.later import slack_update_later
from audit.models import AuditEvent
from audit.services import audit_record

S = ProposalStatus

MOVES: dict[str, frozenset[str]] = {
    # Waiting for a person: decided, withdrawn, past its SLA or its maximum age, or held by a kill switch.
    S.PENDING_APPROVAL: frozenset(
        {S.APPROVED, S.MANUAL_TASK, S.REJECTED, S.CANCELLED, S.ESCALATED, S.EXPIRED, S.ON_HOLD}
    ),
    S.ESCALATED: frozenset({S.APPROVED, S.MANUAL_TASK, S.REJECTED, S.CANCELLED, S.EXPIRED, S.ON_HOLD}),
    # The record changed after the decision: a person decides again, on the record as it is now (or its SLA passes).
    S.STALE: frozenset({S.APPROVED, S.MANUAL_TASK, S.REJECTED, S.CANCELLED, S.ESCALATED, S.EXPIRED, S.ON_HOLD}),
    # Waiting for a worker: taken up, or held by a kill switch (checked again as the worker takes it up).
    S.APPROVED: frozenset({S.EXECUTING, S.ON_HOLD}),
    # Being executed: done, failed for good, stale (the record moved since the decision), or (between retries,
    # unclaimed) held by a kill switch.
    S.EXECUTING: frozenset({S.EXECUTED, S.FAILED, S.STALE, S.ON_HOLD}),
    # Released: back where it was held from (an execution between retries starts again from approved).
    S.ON_HOLD: frozenset({S.PENDING_APPROVAL, S.ESCALATED, S.STALE, S.APPROVED}),
    # A propose-only system's approved write, carried out (or not) by a person.
    S.MANUAL_TASK: frozenset({S.EXECUTED, S.FAILED}),
    # An executed write can be undone by a reversal.
    S.EXECUTED: frozenset({S.REVERSED}),
}


class InvalidTransition(Exception):
    """The proposal is not in a state that allows this step (already decided, already executed, …)."""


# Lock the proposal row only, and only against other writers of it (FOR NO KEY UPDATE). Without `of`, PostgreSQL
# would also lock the joined system and agent rows FOR UPDATE, and an audit insert referencing them (waiting on our
# lock while holding the audit chain's lock, which we wait for next) would deadlock with us.
RELATED = ("system", "action_type__resource", "agent")


def lock_rows(queryset: QuerySet[Proposal], *, skip_locked: bool = False) -> QuerySet[Proposal]:
    """`queryset` with its proposal rows (only those) locked until the caller's transaction ends, against writers."""
    return queryset.select_for_update(of=("self",), no_key=True, skip_locked=skip_locked)


def locked(proposal_id: uuid.UUID | str) -> Proposal:
    """The proposal, its row locked until the caller's transaction ends, with what its events name."""
    return lock_rows(Proposal.objects.select_related(*RELATED)).get(pk=proposal_id)


def may_move(proposal: Proposal, status: str) -> bool:
    return status in MOVES.get(proposal.status, frozenset())


def move(proposal: Proposal, status: str, **event: Any) -> AuditEvent:
    """Move a locked proposal to `status` and write the move's audit event (`event`: audit_record's arguments)."""
    if not may_move(proposal, status):
        raise InvalidTransition(f"A {proposal.status} proposal cannot become {status}.")
    if status == S.ON_HOLD:
        proposal.held_from = proposal.status  # where a release sends it back
    elif proposal.status == S.ON_HOLD:
        proposal.held_from = ""
    proposal.status = status
    proposal.save()
    return record_event(proposal, **event)


def record_event(proposal: Proposal, **event: Any) -> AuditEvent:
    """An audit event about `proposal`, with its system, resource, record, id and agent filled in. Its Slack messages,
    if any, show what happened once the caller commits (approvals/slack/later.py), whichever door acted."""
    recorded = audit_record(
        system=proposal.system,
        resource=proposal.action_type.resource.name,
        record_id=proposal.record_id,
        proposal_id=proposal.pk,
        agent=proposal.agent,
        **event,
    )
    slack_update_later(proposal, recorded.verb)
    return recorded
