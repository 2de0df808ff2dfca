"""The reversal of one executed write: planned as a one-step reversal and run by the workers like a window's.

Two ways in:

- **A flag after execution** (`flagged_reversal_plan`, from approvals/decisions.py): the second reviewer flags a
  dual proposal that already ran. Its reversal is planned at once but *waits for its approver*: it runs only when
  whoever approved the write — or anyone who may approve it, never the reviewer who flagged it — approves the
  reversal (`proposal_reversal_approve`). The approvers and the system's business owner are e-mailed.
- **A person reverses it** (`proposal_reverse`: the button on the proposal's page, `reverse_writes --proposal ID`):
  an operator, or someone who may approve the write, plans it and (unless only planning) starts it.

The plan, the checks before the compensation, the idempotency key `reverse-<proposal id>` and the report are those of
approvals/reversal.py and approvals/reversal_rounds.py: one write is a window of one.
"""

from __future__ import annotations

import functools
import uuid
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import notify
from approvals.choices import ProposalStatus, ReviewOutcome
from approvals.deciders import may_approve_reversal, may_reverse
from approvals.models import Proposal, Reversal, ReversalStep
from approvals.reversal import ReversalRefused, plan_steps, reversal_start
from audit.choices import Channel, Verb
from audit.services import audit_record

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class NotYourReversal(Exception):
    """The person may not reverse this write, or approve its reversal."""


def _record(proposal: Proposal, *, user: User | None, channel: Channel | str, **event: Any) -> None:
    """A `reversal_planned` event on the write's own trail (its proposal, record, agent and system)."""
    audit_record(
        verb=Verb.REVERSAL_PLANNED,
        actor=user,
        channel=channel,
        system=proposal.system,
        agent=proposal.agent,
        resource=proposal.action_type.resource.name,
        record_id=proposal.record_id,
        proposal_id=proposal.pk,
        **event,
    )


def _plan(proposal: Proposal, *, user: User | None, channel: Channel | str, reason: str, waits: bool) -> Reversal:
    if proposal.status not in (ProposalStatus.EXECUTED, ProposalStatus.REVERSED):
        raise ReversalRefused(f"Only an executed write is reversed; this one is {proposal.get_status_display()}.")
    now = timezone.now()
    with transaction.atomic():
        reversal = Reversal.objects.create(
            agent=proposal.agent,
            system=proposal.system,
            proposal=proposal,
            awaits_approval=waits,
            window_start=proposal.executed_at or now,
            window_end=now,
            requested_by=user,
            channel=str(channel),
            reason=reason[:300],
        )
        (step,) = ReversalStep.objects.bulk_create(plan_steps(reversal, [proposal]))
        who = user.get_username() if user else "Gatehouse" if channel == Channel.TASK else "An operator (command line)"
        _record(
            proposal,
            user=user,
            channel=channel,
            input={"reversal": reversal.pk, "proposal": str(proposal.pk), "reason": reason, step.kind: 1},
            outcome="awaits_approval" if waits else "ok",
            summary=f"{who} planned reversal {reversal.pk} of {proposal.action_type.name} on {proposal.record_id} "
            f"({step.get_kind_display().lower()}: {step.explanation})"
            + (" It waits for the write's approver." if waits else ""),
        )
    return reversal


def flagged_reversal_plan(*, proposal: Proposal, user: User | None, channel: Channel | str) -> Reversal:
    """Plan the reversal a flag after execution asks for; it waits for the approver, who is e-mailed with the owner."""
    reason = f"flagged in the second review: {proposal.review_comment}"
    try:
        reversal = _plan(proposal, user=user, channel=channel, reason=reason, waits=True)
    except IntegrityError:  # planned in the meantime (the review and the sweep): once is enough, told once
        return Reversal.objects.get(proposal=proposal, awaits_approval=True)
    approvers = [proposal.decided_by.email] if proposal.decided_by and proposal.decided_by.email else []
    transaction.on_commit(
        functools.partial(
            notify.notify_reversal_awaiting,
            proposal,
            reversal_id=reversal.pk,
            approvers=approvers + notify.deciders(proposal),
        )
    )
    return reversal


def flagged_reversals_plan_missing(limit: int = 100) -> int:
    """Beat (with the SLA sweep): a write flagged after execution whose reversal is not planned yet gets it now.

    The review plans it just after the flag commits (the plan reads the record, and no row lock is held across a call
    to the system), so a process dying in between would leave a flag with nothing waiting for the approver: this
    sweep makes sure it never stays that way. The unique constraint on a flagged reversal per write makes the review
    and the sweep plan it once between them."""
    missing = (
        Proposal.objects.filter(status=ProposalStatus.EXECUTED, review_outcome=ReviewOutcome.FLAGGED)
        .exclude(reversals__awaits_approval=True)
        .select_related("agent__owner", "system", "action_type__resource", "reviewed_by", "decided_by")
    )
    planned = 0
    for proposal in missing[:limit]:
        flagged_reversal_plan(proposal=proposal, user=None, channel=Channel.TASK)
        planned += 1
    return planned


def proposal_reverse(
    *, proposal_id: uuid.UUID | str, user: User | None, channel: Channel | str, reason: str = "", start: bool = True
) -> Reversal:
    """Plan (and unless `start` is False, run on the workers) the reversal of one executed write."""
    proposal = Proposal.objects.select_related("agent__owner", "system", "action_type__resource").get(pk=proposal_id)
    refusal = may_reverse(user, proposal)
    if refusal:
        raise NotYourReversal(f"You may not reverse this write: {refusal}.")
    waiting = reversal_awaiting(proposal)
    if waiting is not None:  # a flag asked for it: its approver decides, at every door (not the flagger, say)
        raise NotYourReversal(f"Reversal {waiting.pk} of this write, flagged in review, waits for its approver.")
    reversal = _plan(proposal, user=user, channel=channel, reason=reason, waits=False)
    if start and reversal.steps.filter(kind=ReversalStep.Kind.REVERSIBLE).exists():
        return reversal_start(reversal_id=reversal.pk, user=user, channel=channel)
    return reversal


def proposal_reversal_approve(*, reversal_id: int, user: User, channel: Channel | str) -> Reversal:
    """The approver's yes to a flagged write's reversal: recorded, then the reversal is handed to the workers."""
    with transaction.atomic():
        reversal = Reversal.objects.select_for_update().get(pk=reversal_id)
        if not reversal.awaits_approval or reversal.proposal_id is None:
            raise ReversalRefused(f"Reversal {reversal.pk} does not wait for an approval.")
        if reversal.approved_by_id or reversal.status != Reversal.Status.PLANNED:
            raise ReversalRefused(f"Reversal {reversal.pk} was approved already.")
        proposal = Proposal.objects.select_related("agent__owner", "system", "action_type__resource").get(
            pk=reversal.proposal_id
        )
        refusal = may_approve_reversal(user, proposal)
        if refusal:
            raise NotYourReversal(f"You may not approve this reversal: {refusal}.")
        reversal.approved_by, reversal.approved_at = user, timezone.now()
        reversal.save(update_fields=["approved_by", "approved_at"])
        _record(
            proposal,
            user=user,
            channel=channel,
            input={"reversal": reversal.pk, "approved": True},
            outcome="approved",
            summary=f"{user.get_username()} approved reversal {reversal.pk} of {proposal.action_type.name} on "
            f"{proposal.record_id}, flagged by {proposal.reviewed_by}.",
        )
        return reversal_start(reversal_id=reversal.pk, user=user, channel=channel)


def reversal_awaiting(proposal: Proposal) -> Reversal | None:
    """The flagged reversal of this write still waiting for its approver, if any."""
    return (
        Reversal.objects.filter(
            proposal=proposal, awaits_approval=True, approved_by__isnull=True, status=Reversal.Status.PLANNED
        )
        .order_by("-created_at")
        .first()
    )
