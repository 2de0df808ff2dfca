"""E-mail notifications about proposals: who must decide, what escalated, what failed. Sent after commit."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mass_mail

logger = logging.getLogger(__name__)


def proposal_url(proposal) -> str:
    return f"{settings.BASE_URL.rstrip('/')}/admin/approvals/proposal/{proposal.pk}/change/"


def deciders(proposal) -> list[str]:
    """The addresses of whoever may decide: the named approver, or every active member of the approver group."""
    if proposal.approver_id:
        users = [proposal.approver]
    elif proposal.approver_group_id:
        users = list(get_user_model().objects.filter(groups=proposal.approver_group_id, is_active=True))
    else:
        users = []
    return [user.email for user in users if user.email]


def _send(subject: str, body: str, recipients: list[str]) -> None:
    recipients = sorted(set(filter(None, recipients)))
    if not recipients:
        return
    try:
        send_mass_mail([(f"[Gatehouse] {subject}", body, None, recipients)], fail_silently=False)
    except Exception:  # a mail outage must not undo or repeat the state change that was already committed
        logger.exception("could not send %r to %s", subject, recipients)


def _describe(proposal) -> str:
    impact = "" if proposal.impact_amount is None else f" (impact {proposal.impact_amount} {proposal.impact_currency})"
    return (
        f"{proposal.agent.slug} proposes {proposal.action_type.name} on {proposal.system} {proposal.record_id}{impact}"
    )


def notify_awaiting(proposal) -> None:
    due = f"\nDecide by {proposal.sla_due_at:%Y-%m-%d %H:%M} UTC." if proposal.sla_due_at else ""
    _send(
        f"Awaiting your decision: {proposal.action_type.name} on {proposal.record_id}",
        f"{_describe(proposal)}.\nReason given: {proposal.reason or '(none)'}{due}\n\n{proposal_url(proposal)}",
        deciders(proposal),
    )


def notify_escalated(proposal) -> None:
    _send(
        f"Escalated: {proposal.action_type.name} on {proposal.record_id} is past its SLA",
        f"{_describe(proposal)}.\nNo decision by {proposal.sla_due_at:%Y-%m-%d %H:%M} UTC. It is never approved "
        f"automatically; it expires at {proposal.expires_at:%Y-%m-%d %H:%M} UTC.\n\n{proposal_url(proposal)}",
        [*deciders(proposal), proposal.system.oncall_contact],
    )


def notify_review(proposal) -> None:
    reviewers = get_user_model().objects.filter(groups=proposal.review_group_id, is_active=True)
    _send(
        f"Second review: {proposal.action_type.name} on {proposal.record_id}",
        f"{_describe(proposal)}, approved by {proposal.decided_by}. Review by "
        f"{proposal.review_due_at:%Y-%m-%d %H:%M} UTC.\n\n{proposal_url(proposal)}",
        [user.email for user in reviewers if user.pk != proposal.decided_by_id],
    )
