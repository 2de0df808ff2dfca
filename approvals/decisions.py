"""A person's decisions on a proposal: approve, reject, the second review, a manual task done, and the clock that
escalates and expires what nobody decided. Each refusal is audited; each move goes through approvals/transitions.py.
"""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from approvals import notify
from approvals.choices import AWAITING_DECISION, DecisionMode, ProposalStatus, ReviewOutcome
from approvals.deciders import may_complete, may_decide, may_review, separation_of_duties
from approvals.delegation import active_delegate, proposal_reassign
from approvals.execution import queue_execution
from approvals.freshness import RecordMoved, proposal_refresh_if_moved
from approvals.models import Proposal
from approvals.reversal_single import flagged_reversal_plan
from approvals.review_clock import reviews_overdue_escalate
from approvals.transitions import RELATED, InvalidTransition, lock_rows, locked, move, record_event
from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import PermanentError, TransientError
from connectors.registry import connector_for
from governance.choices import WriteMode

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class NotYourDecision(Exception):
    """The person may not decide this proposal (not its approver, or separation of duties)."""


__all__ = ["NotYourDecision", "may_complete", "may_decide", "may_review", "separation_of_duties"]


def _audit_refused_decision(proposal: Proposal, *, user: User, channel: Channel | str, step: str, refusal: str) -> None:
    record_event(
        proposal,
        verb=Verb.DENIED,
        actor=user,
        channel=channel,
        outcome="not_your_decision",
        summary=f"{user.get_username()} may not {step} this proposal: {refusal}.",
    )


def decision_refused(
    *,
    proposal_id: uuid.UUID | str,
    user: User | None,
    channel: Channel | str,
    outcome: str,
    summary: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """A door's refusal of a decision that never reached the services above: a person it could not identify (`user`
    None; `detail` says what it knows of them), or a proposal already decided. Audited as `denied` on the proposal,
    beside the services' own refusals; a proposal id that names nothing is audited without one."""
    try:
        proposal = Proposal.objects.select_related(*RELATED).filter(pk=uuid.UUID(str(proposal_id))).first()
    except ValueError:
        proposal = None
    event: dict[str, Any] = {
        "verb": Verb.DENIED,
        "actor": user,
        "channel": channel,
        "outcome": outcome,
        "summary": summary,
    }
    if proposal is None:
        audit_record(**event, input={"proposal": str(proposal_id)[:100], **(detail or {})})
    else:
        record_event(proposal, **event, input=detail or None)


def proposal_approve(
    *, proposal_id: uuid.UUID | str, user: User, channel: Channel | str, comment: str = ""
) -> Proposal:
    """Record an approval; queue execution once the commit lands (or a manual task on a propose-only system).

    Two approvers racing: the row lock makes the second one see a decided proposal. A refusal is audited as `denied`,
    and NotYourDecision is raised only after the block has committed, so the exception does not roll the event back.
    """
    current = _record_now(proposal_id, user=user)
    moved = ""
    with transaction.atomic():
        proposal = locked(proposal_id)
        expired = expire_if_due(proposal)
        if not expired:
            _require_awaiting(proposal)
            refusal = may_decide(user, proposal)
            if refusal:
                _audit_refused_decision(proposal, user=user, channel=channel, step="approve", refusal=refusal)
            else:
                if current is not None:
                    moved = proposal_refresh_if_moved(proposal=proposal, current=current, user=user, channel=channel)
                if not moved:
                    _approve(proposal, user=user, channel=channel, comment=comment)
    if expired:
        raise InvalidTransition("This proposal expired before it was decided.")
    if refusal:
        raise NotYourDecision(f"You may not approve this proposal: {refusal}.")
    if moved:
        raise RecordMoved(f"Not approved yet: {moved}. Look at the new figures, then approve again (or reject).")
    return proposal


def _record_now(proposal_id: uuid.UUID | str, *, user: User) -> dict[str, Any] | None:
    """The record as the system has it now, read before the approval takes the row lock (no lock is held across a
    call to the system), when the decision rested on it; None when it did not, or the system cannot say now (the
    worker checks again before it writes)."""
    proposal = Proposal.objects.select_related(*RELATED).filter(pk=proposal_id).first()
    if proposal is None or not proposal.record_snapshot or proposal.status not in AWAITING_DECISION:
        return None
    if may_decide(user, proposal):  # refused under the lock anyway: no call to the system for it
        return None
    try:  # a check inside the approval, like the worker's before its write: not a read of its own in the trail
        return connector_for(proposal.system, agent=proposal.agent).read(
            proposal.action_type.resource.name, proposal.record_id
        )
    except (TransientError, PermanentError):
        return None


def _require_awaiting(proposal: Proposal) -> None:
    if proposal.status not in AWAITING_DECISION:
        raise InvalidTransition(f"This proposal is already {proposal.get_status_display().lower()}.")
    if proposal.decided_by is not None:
        raise InvalidTransition(
            f"{proposal.decided_by.get_username()} already approved this proposal; it awaits the second review."
        )


def expire_if_due(proposal: Proposal) -> bool:
    """Past its maximum age by the database clock: expire it now, so an approval racing the expiry job cannot win."""
    if proposal.status not in AWAITING_DECISION or proposal.expires_at is None:
        return False
    if not Proposal.objects.filter(pk=proposal.pk, expires_at__lte=Now()).exists():
        return False
    move(
        proposal,
        ProposalStatus.EXPIRED,
        verb=Verb.EXPIRED,
        actor=None,
        channel=Channel.TASK,
        summary=f"{proposal.action_type.name} on {proposal.record_id} expired undecided "
        f"(maximum age reached at {proposal.expires_at:%Y-%m-%d %H:%M} UTC).",
    )
    return True


def _approve(proposal: Proposal, *, user: User, channel: Channel | str, comment: str) -> None:
    proposal.decided_by, proposal.decided_at, proposal.decision_comment = user, timezone.now(), comment
    dual = proposal.mode == DecisionMode.DUAL
    if dual:
        proposal.review_due_at = timezone.now() + (proposal.review_within or timedelta(hours=24))
        proposal.review_escalated_at = proposal.review_reminded_at = None  # a new approval (after stale): a new clock
    # Dual with review before execution: the first of two approvals; the proposal keeps waiting for the reviewer.
    first_of_two = dual and proposal.review_timing == "before"
    manual = not first_of_two and proposal.system.write_mode == WriteMode.PROPOSE_ONLY
    if first_of_two:
        tail = f"; a second reviewer from {proposal.review_group} must review it before it executes."
    elif manual:
        tail = " (a manual task: the system is propose-only)."
    else:
        tail = "."
    event = {
        "verb": Verb.APPROVED,
        "actor": user,
        "channel": channel,
        "decision": proposal.decision,
        "input": {"comment": comment} if comment else None,
        "summary": f"{user.get_username()} approved {proposal.action_type.name} on {proposal.record_id}{tail}",
    }
    if first_of_two:
        proposal.save()
        record_event(proposal, **event)
    else:
        move(proposal, ProposalStatus.MANUAL_TASK if manual else ProposalStatus.APPROVED, **event)
    if not first_of_two and not manual:
        queue_execution(proposal)
    if dual:
        transaction.on_commit(lambda: notify.notify_review(proposal))


def proposal_reject(*, proposal_id: uuid.UUID | str, user: User, channel: Channel | str, reason: str) -> Proposal:
    """Record a rejection with its reason, which the agent sees. Refusals are audited like approvals'."""
    if not reason.strip():
        raise ValueError("A rejection needs a reason.")
    refusal = None
    with transaction.atomic():
        proposal = locked(proposal_id)
        expired = expire_if_due(proposal)  # past its maximum age it expires, whoever acts on it, as for an approval
        if not expired:
            if proposal.status not in AWAITING_DECISION:
                raise InvalidTransition(f"This proposal is already {proposal.get_status_display().lower()}.")
            if proposal.decided_by_id:  # dual, first approval given: now only the second reviewer may stop it
                raise InvalidTransition("This proposal was approved and awaits the second review; flag it there.")
            refusal = may_decide(user, proposal)
            if refusal:
                _audit_refused_decision(proposal, user=user, channel=channel, step="reject", refusal=refusal)
            else:
                proposal.decided_by, proposal.decided_at, proposal.decision_comment = user, timezone.now(), reason
                move(
                    proposal,
                    ProposalStatus.REJECTED,
                    verb=Verb.REJECTED,
                    actor=user,
                    channel=channel,
                    input={"reason": reason},
                    summary=f"{user.get_username()} rejected {proposal.action_type.name} on {proposal.record_id}: "
                    f"{reason}",
                )
    if expired:
        raise InvalidTransition("This proposal expired before it was decided.")
    if refusal:
        raise NotYourDecision(f"You may not reject this proposal: {refusal}.")
    return proposal


def proposal_review(
    *, proposal_id: uuid.UUID | str, user: User, channel: Channel | str, flag: bool, comment: str = ""
) -> Proposal:
    """The second reviewer's verdict on a dual-approval proposal.

    Before execution: fine → approved and queued; flagged → rejected. After execution: the verdict is recorded, and a
    flag plans the reversal of this one write, which waits for its approver (approvals/reversal_single.py). The plan
    reads the record, so it is made after the flag commits: no row lock is held across a call to the system.
    """
    if flag and not comment.strip():
        raise ValueError("Say why you flag it.")
    refusal = None
    with transaction.atomic():
        proposal = locked(proposal_id)
        # Review before execution is the second half of the approval: past the maximum age it expires, like approve.
        expired = proposal.awaiting_review and expire_if_due(proposal)
        if not expired:
            if not proposal.awaiting_review:
                raise InvalidTransition("This proposal does not await a second review.")
            refusal = may_review(user, proposal)
            if refusal:
                _audit_refused_decision(proposal, user=user, channel=channel, step="review", refusal=refusal)
            else:
                _review(proposal, user=user, channel=channel, flag=flag, comment=comment)
    if expired:
        raise InvalidTransition("This proposal expired before it was reviewed.")
    if refusal:
        raise NotYourDecision(f"You may not review this proposal: {refusal}.")
    if flag and proposal.status == ProposalStatus.EXECUTED:
        flagged_reversal_plan(proposal=proposal, user=user, channel=channel)
    return proposal


def _review(proposal: Proposal, *, user: User, channel: Channel | str, flag: bool, comment: str) -> None:
    proposal.reviewed_by, proposal.reviewed_at, proposal.review_comment = user, timezone.now(), comment
    proposal.review_outcome = ReviewOutcome.FLAGGED if flag else ReviewOutcome.REVIEWED
    before_execution = proposal.status in AWAITING_DECISION
    manual = before_execution and proposal.system.write_mode == WriteMode.PROPOSE_ONLY
    what = f"{proposal.action_type.name} on {proposal.record_id}"
    if flag:
        summary = f"{user.get_username()} flagged {what}" + (
            f" before execution, so it will not run: {comment}"
            if before_execution
            else f" for reversal (its approver decides the reversal): {comment}"
        )
    else:
        now = "a manual task (the system is propose-only)" if manual else "approved for execution"
        summary = f"{user.get_username()} reviewed {what} (second review)" + (
            f"; it is now {now}." if before_execution else "."
        )
    event = {
        "verb": Verb.FLAGGED if flag else Verb.REVIEWED,
        "actor": user,
        "channel": channel,
        "input": {"comment": comment} if comment else None,
        "summary": summary,
    }
    if not before_execution:  # the verdict on a write already made: recorded, the status stays executed
        proposal.save()
        record_event(proposal, **event)
        return
    if flag:
        proposal.decision_comment = comment
        move(proposal, ProposalStatus.REJECTED, **event)
        return
    # As in _approve: a propose-only system gets a manual task, never a queued write.
    move(proposal, ProposalStatus.MANUAL_TASK if manual else ProposalStatus.APPROVED, **event)
    if not manual:
        queue_execution(proposal)


def proposals_escalate_and_expire() -> tuple[int, int]:
    """Beat job. Past the SLA (database clock): escalated, never approved, and reassigned to someone present. Past the
    maximum age: expired. An overdue second review: escalated too (approvals/review_clock.py), counted with them.

    Each row is re-checked under its lock, so a decision made meanwhile wins and nothing moves twice.
    """
    escalated = expired = 0
    # decided_by set: a dual approval already approved, now on the second review's own clock (review_due_at).
    due = Proposal.objects.filter(
        status__in=[ProposalStatus.PENDING_APPROVAL, ProposalStatus.STALE],
        decided_by__isnull=True,
        sla_due_at__lt=Now(),
    )
    for proposal_id in due.values_list("pk", flat=True)[:1000]:
        with transaction.atomic():
            proposal = lock_rows(due, skip_locked=True).select_related(*RELATED).filter(pk=proposal_id).first()
            if proposal is None:
                continue
            move(
                proposal,
                ProposalStatus.ESCALATED,
                verb=Verb.ESCALATED,
                actor=None,
                channel=Channel.TASK,
                summary=f"{proposal.action_type.name} on {proposal.record_id} passed its SLA "
                f"({proposal.sla_due_at:%Y-%m-%d %H:%M} UTC) undecided: escalated to the on-call contact.",
            )
            transaction.on_commit(functools.partial(notify.notify_escalated, proposal))
            _reassign(proposal)
            escalated += 1
    escalated += reviews_overdue_escalate()
    old = Proposal.objects.filter(status__in=AWAITING_DECISION, expires_at__lt=Now())
    for proposal_id in old.values_list("pk", flat=True)[:1000]:
        with transaction.atomic():
            proposal = (
                lock_rows(Proposal.objects.all(), skip_locked=True)
                .select_related(*RELATED)
                .filter(pk=proposal_id)
                .first()
            )
            if proposal is not None and expire_if_due(proposal):
                expired += 1
    return escalated, expired


def _reassign(proposal: Proposal) -> None:
    """An escalated proposal goes to someone present as well: the named approver's active delegate (who may decide it
    by separation of duties), else the on-call group (unless that is already whom it waits for)."""
    approver = proposal.approver
    delegate = active_delegate(approver)
    if approver is not None and delegate is not None and separation_of_duties(delegate, proposal) is None:
        proposal_reassign(
            proposal=proposal,
            to_user=delegate,
            reason=f"past its SLA; {approver.get_username()} is away and named {delegate.get_username()} to decide",
        )
        return
    group = notify.oncall_group()
    if group is None or group.pk == proposal.approver_group_id:
        return
    if approver is None:
        away = f"nobody in {proposal.approver_group} decided"
    elif delegate is None:
        away = f"{approver.get_username()} has no active delegate"
    else:
        away = f"{approver}'s delegate {delegate} may not decide it (separation of duties)"
    proposal_reassign(proposal=proposal, to_group=group, reason=f"past its SLA and {away}: handed to on-call as well")


def proposal_manual_complete(
    *, proposal_id: uuid.UUID | str, user: User, channel: Channel | str, done: bool, note: str = ""
) -> Proposal:
    """A person reports the manual task of a propose-only system as performed (executed) or not possible (failed)."""
    if not done and not note.strip():
        raise ValueError("Say why the task could not be done.")
    with transaction.atomic():
        proposal = locked(proposal_id)
        if proposal.status != ProposalStatus.MANUAL_TASK:
            raise InvalidTransition(f"This proposal is {proposal.get_status_display().lower()}, not a manual task.")
        if not may_complete(user, proposal):
            raise NotYourDecision("Only its approver, the approver group or an operator records a manual task.")
        if done:
            proposal.executed_at = timezone.now()
            proposal.state_after = {"performed_by": user.get_username(), "note": note}
        else:
            proposal.failure_reason = note
        what = f"{proposal.action_type.name} on {proposal.record_id} in {proposal.system}"
        move(
            proposal,
            ProposalStatus.EXECUTED if done else ProposalStatus.FAILED,
            verb=Verb.EXECUTED if done else Verb.FAILED,
            actor=user,
            channel=channel,
            outcome="ok" if done else "failed",
            input={"note": note} if note else None,
            summary=f"{user.get_username()} performed {what} by hand" + (f": {note}" if note else ".")
            if done
            else f"{user.get_username()} could not perform {what}: {note}",
        )
    return proposal


def proposal_current_record(
    *, proposal: Proposal, user: User, purpose: str = "to decide a proposal"
) -> tuple[dict[str, Any] | None, str]:
    """The record as it is now in the system, for the person deciding (or comparing it with a write, `purpose`); the
    read is audited like an agent's.

    Returns (record, "") or (None, why it could not be read).
    """
    resource = proposal.action_type.resource
    try:
        record = connector_for(proposal.system, agent=proposal.agent).read(resource.name, proposal.record_id)
    except (TransientError, PermanentError) as exc:
        return None, str(exc)
    record_event(
        proposal,
        verb=Verb.READ,
        actor=user,
        channel=Channel.ADMIN,
        input={"fields": sorted(record)},
        summary=f"{user.get_username()} looked at {resource.label} {proposal.record_id} {purpose}.",
    )
    return record, ""
