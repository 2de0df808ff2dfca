"""The second review's clock: a review past its due time is escalated once, then reminded, and never dropped.

Dual approval gives the second reviewer `review_within` after the approval (Proposal.review_due_at). Past it, with
no review given:

- **Escalated, once** (`review_escalated_at`): an `escalated` audit event with the reason "review overdue", and an
  e-mail to the review group and on-call (the on-call group's members and the system's on-call contact). A review
  due before execution also moves the proposal to `escalated` (it still waits; it is never approved by the clock).
- **Reminded** every GATEHOUSE_REVIEW_REMINDER_EVERY (24 h by default) while it stays due: the same people, one
  e-mail, no audit event (nothing changed).
- **Never dropped**: a review due after execution stays due, in the queue's "review overdue" filter, until someone
  reviews it. A review due before execution waits like any decision, and expires only at the maximum age (audited).
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from approvals import notify
from approvals.choices import ProposalStatus
from approvals.models import Proposal
from approvals.transitions import RELATED, lock_rows, move, record_event
from audit.choices import Channel, Verb

REASON = "review overdue"


def reviews_overdue_escalate() -> int:
    """Beat (with the SLA sweep): escalate overdue reviews not yet escalated, remind those escalated long enough ago.
    Returns how many were escalated now. Each row is re-checked under its lock: a review given meanwhile wins."""
    escalated = 0
    overdue = Proposal.objects.review_overdue()
    remind_before = timezone.now() - settings.GATEHOUSE_REVIEW_REMINDER_EVERY
    candidates = overdue.filter(Q(review_escalated_at__isnull=True) | Q(review_reminded_at__lt=remind_before))
    for proposal_id in candidates.values_list("pk", flat=True)[:1000]:
        with transaction.atomic():
            proposal = lock_rows(overdue, skip_locked=True).select_related(*RELATED).filter(pk=proposal_id).first()
            if proposal is None:
                continue
            if proposal.review_escalated_at is None:
                _escalate(proposal)
                escalated += 1
            elif proposal.review_reminded_at is None or proposal.review_reminded_at < remind_before:
                proposal.review_reminded_at = timezone.now()
                proposal.save(update_fields=["review_reminded_at", "updated_at"])
                transaction.on_commit(functools.partial(notify.notify_review_overdue, proposal, reminder=True))
    return escalated


def _escalate(proposal: Proposal) -> None:
    proposal.review_escalated_at = proposal.review_reminded_at = timezone.now()
    executed = proposal.status == ProposalStatus.EXECUTED
    event = {
        "verb": Verb.ESCALATED,
        "actor": None,
        "channel": Channel.TASK,
        "input": {"reason": REASON},
        "outcome": REASON,
        "summary": f"The second review of {proposal.action_type.name} on {proposal.record_id} is overdue (due "
        f"{proposal.review_due_at:%Y-%m-%d %H:%M} UTC, {proposal.review_group} group): escalated to the reviewers and "
        "on-call" + ("; the write was executed and stays due for review." if executed else "; it has not run."),
    }
    if proposal.status in (ProposalStatus.PENDING_APPROVAL, ProposalStatus.STALE):
        move(proposal, ProposalStatus.ESCALATED, **event)
    else:  # executed, or already escalated before its first approval: the status stays, the event says why
        proposal.save(update_fields=["review_escalated_at", "review_reminded_at", "updated_at"])
        record_event(proposal, **event)
    transaction.on_commit(functools.partial(notify.notify_review_overdue, proposal, reminder=False))
