"""E-mail notifications about proposals: who must decide, what escalated, what needs a second review, what failed.

Sent after commit (core.mail): a mail server that is down never undoes or repeats the change a notice reports. The
notices that ask someone to decide (new, escalated, reassigned, stale) show the change as the proposal's page does and
give each person a link of their own to it (approvals/decision_mail.py).

A new proposal's request to decide is written and sent by a worker (`notify_awaiting_later`), not by the agent's
request: the mail (its facts, a signed link per person, the mail server's round trips) was a quarter of a proposal
POST's time, and a slow mail server would have slowed every agent.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from approvals.choices import AWAITING_DECISION
from approvals.decision_mail import send_decision_request
from approvals.models import Proposal
from approvals.slack.later import slack_post_later
from core.mail import admin_link, send_notice
from core.tasks import queue_task

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

AWAITING_TASK = "approvals.notify_awaiting"  # the task's stable name (approvals/tasks.py)


def decider_users(proposal: Proposal) -> list[User]:
    """Whoever may decide: the named approver, or every active member of the approver group."""
    if proposal.approver is not None:
        return [proposal.approver]
    if proposal.approver_group_id:
        return list(get_user_model().objects.filter(groups=proposal.approver_group_id, is_active=True))
    return []


def deciders(proposal: Proposal) -> list[str]:
    """The addresses of whoever may decide (decider_users)."""
    return [user.email for user in decider_users(proposal) if user.email]


def _member_users(group_id: int | None, *, but: int | None = None) -> list[User]:
    if not group_id:
        return []
    users = get_user_model().objects.filter(groups=group_id, is_active=True).order_by("username")
    if but is not None:
        users = users.exclude(pk=but)
    return list(users)


def _members(group_id: int | None, *, but: int | None = None) -> list[str]:
    return [user.email for user in _member_users(group_id, but=but) if user.email]


def reassigned_users(proposal: Proposal) -> list[User]:
    """Whoever escalation reassigned it to: the delegate, or the on-call group's members."""
    if proposal.reassigned_to is not None:
        return [proposal.reassigned_to]
    return _member_users(proposal.reassigned_group_id)


def reassigned(proposal: Proposal) -> list[str]:
    """The addresses of whoever escalation reassigned it to (reassigned_users)."""
    return [user.email for user in reassigned_users(proposal) if user.email]


def _describe(proposal: Proposal) -> str:
    impact = "" if proposal.impact_amount is None else f" (impact {proposal.impact_amount} {proposal.impact_currency})"
    return (
        f"{proposal.agent.slug} proposes {proposal.action_type.name} on {proposal.system} {proposal.record_id}{impact}"
    )


def notify_awaiting(proposal: Proposal) -> None:
    """Whoever may decide a new proposal is asked to, each with a link of their own to its page."""
    send_decision_request(
        proposal,
        subject=f"Awaiting your decision: {proposal.action_type.name} on {proposal.record_id}",
        lead=f"{proposal.agent.slug} asks for a decision that is yours to make.",
        users=decider_users(proposal),
    )
    slack_post_later(proposal, deciders(proposal))


def notify_awaiting_later(proposal: Proposal) -> None:
    """After the commit of a new proposal that waits for a person: a worker asks whoever may decide. A broker that
    does not answer is logged and the request is sent from here instead: nobody goes untold."""
    try:
        queue_task(AWAITING_TASK, args=[str(proposal.pk)])
    except Exception as exc:  # any broker failure: the proposal has committed, and must still be told of
        logger.warning("could not queue the decision request for %s (%s): sending it now", proposal.pk, exc)
        notify_awaiting(proposal)


def notify_awaiting_by_id(proposal_id: uuid.UUID | str) -> bool:
    """The worker's side of `notify_awaiting_later`: ask whoever may decide, unless it was decided (or withdrawn)
    meanwhile — then there is nothing to ask. True when the request was sent."""
    proposal = (
        Proposal.objects.select_related("agent", "system", "action_type", "approver", "approver_group")
        .filter(pk=proposal_id, status__in=AWAITING_DECISION)
        .first()
    )
    if proposal is None:
        return False
    notify_awaiting(proposal)
    return True


def notify_stale(proposal: Proposal) -> None:
    """Whoever decides it now hears that the record moved after the decision, and the write did not happen."""
    changed = "; ".join(
        f"{name}: {then} then, {now} now" for name, (then, now) in (proposal.stale_changes or {}).items()
    )
    send_decision_request(
        proposal,
        subject=f"Stale, not written: {proposal.action_type.name} on {proposal.record_id}",
        lead=f"The record changed after the decision, so nothing was written: {changed}. Decide again on the record "
        "as it is now.",
        users=[*decider_users(proposal), *reassigned_users(proposal)],
    )
    slack_post_later(proposal, [*deciders(proposal), *reassigned(proposal)])  # who has no message yet gets one


def notify_escalated(proposal: Proposal) -> None:
    """Past its SLA: whoever may decide is asked again, and the system's on-call contact is told."""
    send_decision_request(
        proposal,
        subject=f"Escalated: {proposal.action_type.name} on {proposal.record_id} is past its SLA",
        lead=f"Escalated: nobody decided this by {proposal.sla_due_at:%Y-%m-%d %H:%M} UTC.",
        users=decider_users(proposal),
        addresses=[proposal.system.oncall_contact],
    )


def notify_reassigned(proposal: Proposal) -> None:
    """The delegate (or the on-call group) hears that a proposal past its SLA is now theirs to decide too."""
    send_decision_request(
        proposal,
        subject=f"Reassigned to you: {proposal.action_type.name} on {proposal.record_id} is past its SLA",
        lead=f"Its approver ({proposal.approver or proposal.approver_group}) did not decide by "
        f"{proposal.sla_due_at:%Y-%m-%d %H:%M} UTC, so you may decide it now.",
        users=reassigned_users(proposal),
    )
    slack_post_later(proposal, reassigned(proposal))


def reviewers(proposal: Proposal) -> list[str]:
    """The review group's active members, but not whoever approved it (they may not review it)."""
    return _members(proposal.review_group_id, but=proposal.decided_by_id)


def notify_review(proposal: Proposal) -> None:
    send_notice(
        f"Second review: {proposal.action_type.name} on {proposal.record_id}",
        f"{_describe(proposal)}, approved by {proposal.decided_by}. Review by "
        f"{proposal.review_due_at:%Y-%m-%d %H:%M} UTC.\n\n{admin_link(proposal)}",
        reviewers(proposal),
    )


def notify_review_overdue(proposal: Proposal, *, reminder: bool) -> None:
    """The reviewers and on-call hear that a second review is overdue: once when it escalates, then a reminder per
    GATEHOUSE_REVIEW_REMINDER_EVERY until someone reviews it."""
    executed = (
        "It has been executed already: a flag now plans its reversal."
        if proposal.executed_at
        else ("It has not been executed: it waits for this review.")
    )
    send_notice(
        f"{'Reminder: ' if reminder else 'Escalated: '}second review overdue for {proposal.action_type.name} on "
        f"{proposal.record_id}",
        f"{_describe(proposal)}, approved by {proposal.decided_by}. The second review was due by "
        f"{proposal.review_due_at:%Y-%m-%d %H:%M} UTC and nobody has given it. {executed} It stays in the queue "
        f"until someone reviews it.\n\n{admin_link(proposal)}",
        [*reviewers(proposal), *_members(getattr(oncall_group(), "pk", None)), proposal.system.oncall_contact],
    )


def oncall_group() -> Group | None:
    """The on-call group named by GATEHOUSE_ONCALL_GROUP, when it exists and has someone active in it."""
    name = settings.GATEHOUSE_ONCALL_GROUP
    group = Group.objects.filter(name=name).first() if name else None
    if group is None or not group.user_set.filter(is_active=True).exists():
        return None
    return group


def notify_reversal_awaiting(proposal: Proposal, *, reversal_id: int, approvers: list[str]) -> None:
    """A flag after execution: whoever may approve the reversal is asked to, and the system's owner is told."""
    send_notice(
        f"Flagged after execution: reversal of {proposal.action_type.name} on {proposal.system} {proposal.record_id} "
        "awaits approval",
        f"{_describe(proposal)}, approved by {proposal.decided_by} and executed, was flagged by "
        f"{proposal.reviewed_by} in the second review: {proposal.review_comment}\nReversal {reversal_id} is planned "
        f"and waits for its approver; nothing is undone until then.\n\n{admin_link(proposal)}",
        [*approvers, proposal.system.owner.email],
    )


def notify_paused(proposal: Proposal) -> None:
    """The system's and the agent's owners hear that an approved write waits: for the readiness checklist, or for
    someone to approve its MCP tool's changed definition."""
    waits_for = (  # the tool pinning's own mail asks the owner to review the change (connectors/mcp/pinning.py)
        "its MCP tool's changed definition to be approved" if proposal.action_type.paused else "readiness"
    )
    send_notice(
        f"Paused: {proposal.action_type.name} on {proposal.system} {proposal.record_id} waits for {waits_for}",
        f"{_describe(proposal)}, approved, is not written yet: {proposal.hold_reason}.\nIt goes ahead by itself once "
        f"that is fixed (checked every few minutes).\n\n{admin_link(proposal)}",
        [proposal.system.owner.email, proposal.agent.owner.email],
    )


def notify_failed(proposal: Proposal) -> None:
    """The agent's owner and the system's on-call hear of an execution that failed for good."""
    send_notice(
        f"{proposal.action_type.name} on {proposal.system} {proposal.record_id} failed",
        f"{proposal.failure_reason}\n\n{admin_link(proposal)}",
        [proposal.agent.owner.email, proposal.system.oncall_contact],
    )
