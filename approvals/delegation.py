"""Out of office: an approver names a delegate for a period, and escalation hands a proposal to someone present.

- **Delegation** (`delegation_create`, `delegation_end`): a person names who decides for them from one moment to
  another, with a reason; a superuser may do it for anyone. Each is a `configured` audit event with before and after.
- **Standing in** (`stands_in`): the active delegate of a proposal's named approver may decide it, and so may whoever
  escalation reassigned it to. One level only: a delegate's own delegate does not act for the first person (and a
  chain is refused when it is made). Separation of duties binds a stand-in like anyone (approvals/decisions.py).
- **Reassignment** (`proposal_reassign`, called by the SLA sweeper): past its SLA, a proposal is given to the named
  approver's active delegate, or else to the on-call group (`GATEHOUSE_ONCALL_GROUP`), as well as to whom the rule
  named — so it does not expire because one person was away. Audited as `reassigned` with before and after, and the
  new people are e-mailed.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from approvals import notify
from approvals.models import Delegation, Proposal
from approvals.transitions import record_event
from audit.choices import Channel, Verb
from audit.services import audit_record
from governance.choices import Role

if TYPE_CHECKING:
    from django.contrib.auth.models import Group, User


def _who(user: Any) -> str:
    return user.get_username() if user is not None else "nobody"


def _terms(delegation: Delegation) -> dict[str, Any]:
    return {
        "who": delegation.who.get_username(),
        "delegate": delegation.delegate.get_username(),
        "starts_at": delegation.starts_at.isoformat(),
        "ends_at": delegation.ends_at.isoformat(),
        "reason": delegation.reason,
    }


def may_stand_in(delegate: User) -> bool:
    """Whether `delegate` may decide in someone's place: an active member of the Approvers group. Checked when the
    delegation is made and again whenever it is used (`active_delegate`), so taking someone out of the group (by
    hand, or by single sign-on's role mapping) ends their standing in at once."""
    return delegate.is_active and delegate.groups.filter(name=Role.APPROVERS).exists()


def possible_delegates() -> Any:
    """Whom a form offers as a delegate: the people `delegation_check` accepts (active staff who are approvers)."""
    return get_user_model().objects.filter(is_active=True, is_staff=True, groups__name=Role.APPROVERS).distinct()


def may_delegate_for(user: User, who: User) -> bool:
    """A person names their own delegate; a superuser may do it for anyone (someone fell ill without doing it)."""
    return user.is_active and (user.pk == who.pk or user.is_superuser)


def _overlapping(queryset: Any, starts_at: datetime, ends_at: datetime) -> Any:
    return queryset.filter(starts_at__lt=ends_at, ends_at__gt=starts_at)


def delegation_check(
    *, who: User, delegate: User, starts_at: datetime, ends_at: datetime, exclude: int | None = None
) -> None:
    """Raise ValidationError when the delegation cannot be: to oneself, backwards, in the past, to an inactive
    account, one that cannot sign in to decide (not staff) or one whose role is not to decide (not an approver),
    overlapping another of the same person's, or in a chain (the delegate is away then too, having named a delegate
    of their own, or `who` is standing in for someone else then). Whether the delegate may decide a given proposal
    (separation of duties: not the agent's owner where the rule forbids it) is judged per proposal when they decide
    (approvals/deciders.py)."""
    if who.pk == delegate.pk:
        raise ValidationError({"delegate": "Name someone else: you cannot delegate to yourself."})
    if not delegate.is_active:
        raise ValidationError({"delegate": f"{delegate.get_username()}'s account is inactive."})
    if not delegate.is_staff:  # the admin's form offers staff only; a crafted POST or another door meets this
        raise ValidationError(
            {"delegate": f"{delegate.get_username()} cannot sign in to Gatehouse, so could not decide anything."}
        )
    if not may_stand_in(delegate):
        raise ValidationError(
            {
                "delegate": f"{delegate.get_username()} is not in the {Role.APPROVERS} group: only someone whose role "
                "is to decide can decide for you (an auditor watches, an operator or integrator runs the system)."
            }
        )
    if ends_at <= starts_at:
        raise ValidationError({"ends_at": "The end must come after the start."})
    if ends_at <= timezone.now():
        raise ValidationError({"ends_at": "The end is in the past."})
    others = Delegation.objects.exclude(pk=exclude) if exclude else Delegation.objects.all()
    if _overlapping(others.filter(who=who), starts_at, ends_at).exists():
        raise ValidationError(f"{who.get_username()} already has a delegate for part of this period: end that first.")
    if _overlapping(others.filter(who=delegate), starts_at, ends_at).exists():
        raise ValidationError(
            {"delegate": f"{delegate.get_username()} is away for part of this period too (they named a delegate)."}
        )
    if _overlapping(others.filter(delegate=who), starts_at, ends_at).exists():
        raise ValidationError(
            f"{who.get_username()} stands in for someone else during this period: a delegate cannot pass that on."
        )


@transaction.atomic
def delegation_create(
    *,
    who: User,
    delegate: User,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    user: User,
    channel: Channel | str,
) -> Delegation:
    """Name `delegate` to decide for `who` from `starts_at` to `ends_at`; audited as `configured`."""
    if not may_delegate_for(user, who):
        raise PermissionDenied("You name delegates for yourself only (a superuser may for anyone).")
    reason = " ".join((reason or "").split())
    if not reason:
        raise ValidationError({"reason": "Say why (for example: out of office)."})
    # Serialise one person's delegations: two made at once cannot both pass the overlap check.
    get_user_model().objects.select_for_update().filter(pk__in=[who.pk, delegate.pk]).exists()
    delegation_check(who=who, delegate=delegate, starts_at=starts_at, ends_at=ends_at)
    delegation = Delegation.objects.create(
        who=who, delegate=delegate, starts_at=starts_at, ends_at=ends_at, reason=reason[:300], created_by=user
    )
    _record(
        delegation,
        user=user,
        channel=channel,
        before=None,
        summary=f"{user.get_username()} named {delegate.get_username()} to decide for {who.get_username()} from "
        f"{starts_at:%Y-%m-%d %H:%M} to {ends_at:%Y-%m-%d %H:%M} UTC: {reason}.",
    )
    return delegation


@transaction.atomic
def delegation_end(*, delegation_id: int, user: User, channel: Channel | str) -> Delegation:
    """End a delegation now (or drop one not yet begun); audited as `configured` with before and after."""
    delegation = Delegation.objects.select_for_update().select_related("who", "delegate").get(pk=delegation_id)
    if not may_delegate_for(user, delegation.who):
        raise PermissionDenied("Only the person who delegated (or a superuser) ends a delegation.")
    now = timezone.now()
    if delegation.ends_at <= now:
        return delegation  # already over: nothing changes, nothing to audit
    before = _terms(delegation)
    if delegation.starts_at >= now:  # not begun yet: it never takes effect (kept, ended, for the trail)
        delegation.starts_at = now - timedelta(microseconds=1)
    delegation.ends_at = now
    delegation.save(update_fields=["starts_at", "ends_at"])
    _record(
        delegation,
        user=user,
        channel=channel,
        before=before,
        summary=f"{user.get_username()} ended {delegation.delegate.get_username()}'s delegation for "
        f"{delegation.who.get_username()}.",
    )
    return delegation


def _record(
    delegation: Delegation, *, user: User, channel: Channel | str, before: dict[str, Any] | None, summary: str
) -> None:
    """A `configured` event for a delegation made or ended: its terms before and after."""
    audit_record(
        verb=Verb.CONFIGURED,
        actor=user,
        channel=channel,
        resource="delegation",
        record_id=str(delegation.pk),
        state_before=before,
        state_after=_terms(delegation),
        summary=summary,
    )


def active_delegate(user: User | None, at: datetime | None = None) -> User | None:
    """The person deciding for `user` now (an active account), or None."""
    if user is None:
        return None
    at = at or timezone.now()
    delegation = (
        Delegation.objects.filter(
            who=user, starts_at__lte=at, ends_at__gt=at, delegate__is_active=True, delegate__groups__name=Role.APPROVERS
        )
        .select_related("delegate")
        .order_by("-starts_at")
        .first()
    )
    return delegation.delegate if delegation else None


def stands_in(user: User, proposal: Proposal) -> str:
    """Why `user` may decide `proposal` though the rule did not name them ("" when they may not stand in)."""
    if proposal.reassigned_to_id == user.pk and (
        proposal.approver_id is None or active_delegate(proposal.approver) == user
    ):  # handed to them as the approver's delegate: only while the delegation lasts
        return "reassigned to you when it escalated"
    if proposal.reassigned_group_id and user.groups.filter(pk=proposal.reassigned_group_id).exists():
        return f"reassigned to the {proposal.reassigned_group} group when it escalated"
    if proposal.approver_id and active_delegate(proposal.approver) == user:
        return f"you stand in for {proposal.approver} (delegation)"
    return ""


def _assignment(proposal: Proposal) -> dict[str, Any]:
    return {
        "approver": proposal.approver.get_username() if proposal.approver else None,
        "approver_group": proposal.approver_group.name if proposal.approver_group else None,
        "reassigned_to": proposal.reassigned_to.get_username() if proposal.reassigned_to else None,
        "reassigned_group": proposal.reassigned_group.name if proposal.reassigned_group else None,
    }


def proposal_reassign(
    *, proposal: Proposal, to_user: User | None = None, to_group: Group | None = None, reason: str
) -> None:
    """Give a locked proposal to `to_user` or `to_group` as well as to whom the rule named; audited (before, after,
    why) in the caller's transaction, and the new people e-mailed after the commit."""
    before = _assignment(proposal)
    proposal.reassigned_to, proposal.reassigned_group, proposal.reassigned_at = to_user, to_group, timezone.now()
    proposal.save(update_fields=["reassigned_to", "reassigned_group", "reassigned_at", "updated_at"])
    whom = to_user.get_username() if to_user else f"the {to_group} group" if to_group else "nobody"
    record_event(
        proposal,
        verb=Verb.REASSIGNED,
        actor=None,
        channel=Channel.TASK,
        state_before=before,
        state_after=_assignment(proposal),
        input={"reason": reason},
        summary=f"{proposal.action_type.name} on {proposal.record_id} reassigned to {whom}: {reason}.",
    )
    transaction.on_commit(functools.partial(notify.notify_reassigned, proposal))
