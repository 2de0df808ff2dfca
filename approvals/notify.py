"""E-mail notifications about proposals: who must decide, what escalated, what needs a second review, what failed.

Sent after commit (core.mail): a mail server that is down never undoes or repeats the change a notice reports.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model

from approvals.models import Proposal
from core.mail import admin_link, send_notice


def deciders(proposal: Proposal) -> list[str]:
    """The addresses of whoever may decide: the named approver, or every active member of the approver group."""
    if proposal.approver is not None:
        users = [proposal.approver]
    elif proposal.approver_group_id:
        users = list(get_user_model().objects.filter(groups=proposal.approver_group_id, is_active=True))
    else:
        users = []
    return [user.email for user in users if user.email]


def _describe(proposal: Proposal) -> str:
    impact = "" if proposal.impact_amount is None else f" (impact {proposal.impact_amount} {proposal.impact_currency})"
    return (
        f"{proposal.agent.slug} proposes {proposal.action_type.name} on {proposal.system} {proposal.record_id}{impact}"
    )


def notify_awaiting(proposal: Proposal) -> None:
    due = f"\nDecide by {proposal.sla_due_at:%Y-%m-%d %H:%M} UTC." if proposal.sla_due_at else ""
    send_notice(
        f"Awaiting your decision: {proposal.action_type.name} on {proposal.record_id}",
        f"{_describe(proposal)}.\nReason given: {proposal.reason or '(none)'}{due}\n\n{admin_link(proposal)}",
        deciders(proposal),
    )


def notify_stale(proposal: Proposal) -> None:
    """Whoever decides it now hears that the record moved after the decision, and the write did not happen."""
    changed = "; ".join(
        f"{name}: {then} then, {now} now" for name, (then, now) in (proposal.stale_changes or {}).items()
    )
    due = f"\nDecide by {proposal.sla_due_at:%Y-%m-%d %H:%M} UTC." if proposal.sla_due_at else ""
    send_notice(
        f"Stale, not written: {proposal.action_type.name} on {proposal.record_id}",
        f"{_describe(proposal)}.\nThe record changed after the decision, so nothing was written: {changed}.\n"
        f"Decide again on the record as it is now.{due}\n\n{admin_link(proposal)}",
        deciders(proposal),
    )


def notify_escalated(proposal: Proposal) -> None:
    send_notice(
        f"Escalated: {proposal.action_type.name} on {proposal.record_id} is past its SLA",
        f"{_describe(proposal)}.\nNo decision by {proposal.sla_due_at:%Y-%m-%d %H:%M} UTC. It is never approved "
        f"automatically; it expires at {proposal.expires_at:%Y-%m-%d %H:%M} UTC.\n\n{admin_link(proposal)}",
        [*deciders(proposal), proposal.system.oncall_contact],
    )


def notify_review(proposal: Proposal) -> None:
    reviewers = get_user_model().objects.filter(groups=proposal.review_group_id, is_active=True)
    send_notice(
        f"Second review: {proposal.action_type.name} on {proposal.record_id}",
        f"{_describe(proposal)}, approved by {proposal.decided_by}. Review by "
        f"{proposal.review_due_at:%Y-%m-%d %H:%M} UTC.\n\n{admin_link(proposal)}",
        [user.email for user in reviewers if user.pk != proposal.decided_by_id],
    )


def notify_paused(proposal: Proposal) -> None:
    """The system's and the agent's owners hear that an approved write waits for the readiness checklist."""
    send_notice(
        f"Paused: {proposal.action_type.name} on {proposal.system} {proposal.record_id} waits for readiness",
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
