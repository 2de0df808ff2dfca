"""Who may decide a proposal, give its second review, record its manual task, or reverse it: one answer per question,
used by every door and by the services that act (approvals/decisions.py, approvals/reversal_single.py).

Each `may_*` returns None when the person may, or the reason they may not (said to them and kept in the trail).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from approvals.delegation import stands_in
from approvals.models import Proposal
from governance.choices import Role
from governance.querysets import sees_everything

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def may_decide(user: User, proposal: Proposal) -> str | None:
    """None when `user` may approve or reject the proposal; otherwise the reason they may not.

    Whom the rule named decides; so may a stand-in (the named approver's active delegate, or whoever escalation
    reassigned it to), bound by the same separation of duties."""
    if not user.is_active:
        return "your account is inactive"
    approver, group = proposal.approver, proposal.approver_group
    if approver is not None and approver.pk != user.pk and not stands_in(user, proposal):
        return f"it is assigned to {approver.get_username()}"
    if approver is None and not stands_in(user, proposal):
        if group is None:
            return "no approver is assigned"
        if not user.groups.filter(pk=group.pk).exists():
            return f"you are not in the {group.name} group"
    return separation_of_duties(user, proposal)


def separation_of_duties(user: User, proposal: Proposal) -> str | None:
    """The approver (or reviewer), the agent's owner and the rule's last editor are different people.

    Judged by the rule as it was when the proposal was decided (stored in `proposal.decision`): editing the rule
    afterwards changes nothing for a proposal already waiting. A proposal from before these were stored is held to
    the strict reading: the owner may not decide it.
    """
    terms = proposal.decision or {}
    if terms.get("owner_may_not_approve", True) and proposal.agent.owner_id == user.pk:
        return f"you own the agent {proposal.agent.slug} (separation of duties)"
    if terms.get("rule_edited_by") is not None and terms["rule_edited_by"] == user.pk:
        return f"you made the last change to the rule “{terms.get('rule')}” that decided it (separation of duties)"
    return None


def may_review(user: User, proposal: Proposal) -> str | None:
    """None when `user` may give the second review; otherwise why not (separation of duties).

    Two different people, also under delegation: the approver's stand-in who approved may not review, and neither may
    the named approver whose place a stand-in took (the approval was theirs, given by someone else)."""
    if not user.is_active:
        return "your account is inactive"
    if proposal.decided_by_id == user.pk:
        return "you approved it: the second reviewer must be someone else"
    if proposal.approver_id == user.pk and proposal.decided_by_id:
        return "it was approved in your place (delegation): the second reviewer must be someone else"
    review_group = proposal.review_group
    if review_group is None or not user.groups.filter(pk=review_group.pk).exists():
        return f"you are not in the review group ({review_group.name if review_group else 'no review group'})"
    return separation_of_duties(user, proposal)


def may_complete(user: User, proposal: Proposal) -> bool:
    """Who records a manual task: whoever approved it, the approver group, operators, superusers."""
    if not user.is_active:
        return False
    if proposal.decided_by_id == user.pk or proposal.reviewed_by_id == user.pk or sees_everything(user):
        return True
    return bool(proposal.approver_group_id and user.groups.filter(pk=proposal.approver_group_id).exists())


def may_reverse(user: User | None, proposal: Proposal) -> str | None:
    """Who reverses one executed write: the command line (shell access to the server), a superuser, an operator, the
    person who approved it, or anyone who may approve it (named approver, group, stand-in, separation of duties)."""
    if user is None:
        return None
    if not user.is_active:
        return "your account is inactive"
    if user.is_superuser or user.groups.filter(name=Role.OPERATORS).exists() or proposal.decided_by_id == user.pk:
        return None
    refusal = may_decide(user, proposal)
    return None if refusal is None else f"only an operator or whoever may approve it reverses it ({refusal})"


def may_approve_reversal(user: User, proposal: Proposal) -> str | None:
    """Who lets a flagged write's reversal run: whoever approved it, or anyone who may approve it — never the
    reviewer who flagged it (a flag asks; the approver side answers)."""
    if proposal.reviewed_by_id == user.pk:
        return "you flagged it: its approver (or someone who may approve it) decides the reversal"
    if not user.is_active:
        return "your account is inactive"
    if proposal.decided_by_id == user.pk:
        return None
    return may_decide(user, proposal)
