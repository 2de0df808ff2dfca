"""Read questions about proposals."""

from __future__ import annotations

from datetime import datetime

from django.apps import apps
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce, Greatest, Now

from approvals.choices import AWAITING_DECISION, DecisionMode, ProposalStatus
from governance.choices import Role
from governance.models import Agent


def _awaiting() -> Q:
    return Q(status__in=AWAITING_DECISION, decided_by__isnull=True)


def _named_to(user) -> Q:
    return Q(approver=user) | Q(approver__isnull=True, approver_group__in=user.groups.all())


def _stand_in(user) -> Q:
    """Reassigned to `user` or their group, or the named approver has `user` as active delegate. A subquery, not a
    join: the approver's past delegations would otherwise list a proposal once per delegation."""
    delegation = apps.get_model("approvals", "Delegation")  # models.py imports this module
    delegating = delegation.objects.filter(
        who=OuterRef("approver"),
        delegate=user,
        delegate__groups__name=Role.APPROVERS,  # no longer an approver: stands in for nobody (delegation.py)
        starts_at__lte=Now(),
        ends_at__gt=Now(),
    )
    return Q(reassigned_to=user) | Q(reassigned_group__in=user.groups.all()) | Q(Exists(delegating))


class ProposalQuerySet(models.QuerySet):
    def visible_to(self, principal) -> ProposalQuerySet:
        """An agent sees only its own proposals (another agent's id answers 404); staff see all of them."""
        if isinstance(principal, Agent):
            return self.filter(agent=principal)
        if getattr(principal, "is_authenticated", False) and principal.is_active and principal.is_staff:
            return self
        return self.none()

    def for_api(self) -> ProposalQuerySet:
        return self.select_related("system", "action_type", "approver", "approver_group", "rule", "reviewed_by")

    def awaiting_decision_by(self, user) -> ProposalQuerySet:
        """Proposals `user` can decide now: named approver, member of the approver group, or a stand-in (the named
        approver's active delegate, or whoever escalation reassigned it to; approvals/delegation.py)."""
        return self.filter(_awaiting() & (_named_to(user) | _stand_in(user)))

    def awaiting_as_approver(self, user) -> ProposalQuerySet:
        """What waits for `user` because the rule named them (or their group, when it named no one)."""
        return self.filter(_awaiting() & _named_to(user))

    def awaiting_as_stand_in(self, user) -> ProposalQuerySet:
        """What waits for `user` only because someone delegated to them or escalation reassigned it to them (or to
        their group): `awaiting_decision_by` without what the rule named them for."""
        return self.filter(_awaiting() & _stand_in(user) & ~_named_to(user))

    def decided_by_since(self, user, since: datetime) -> ProposalQuerySet:
        """What `user` approved, rejected or gave the second review since `since` (the latest of the two first)."""
        return self.filter(
            Q(decided_by=user, decided_at__gte=since) | Q(reviewed_by=user, reviewed_at__gte=since)
        ).order_by(Greatest(Coalesce("decided_at", "reviewed_at"), Coalesce("reviewed_at", "decided_at")).desc())

    def review_due(self) -> ProposalQuerySet:
        """Dual proposals approved by the first person whose second review is due (before or after execution)."""
        timing = Q(review_timing="before", status__in=AWAITING_DECISION) | Q(
            review_timing="after", status=ProposalStatus.EXECUTED
        )
        return self.filter(Q(mode=DecisionMode.DUAL, decided_by__isnull=False, reviewed_by__isnull=True) & timing)

    def review_overdue(self) -> ProposalQuerySet:
        """Second reviews past their due time (database clock), not given yet: escalated, and kept in the queue."""
        return self.review_due().filter(review_due_at__lt=Now())

    def awaiting_review_by(self, user) -> ProposalQuerySet:
        """Dual approvals approved by someone else that `user`'s review group must review."""
        return self.review_due().filter(Q(review_group__in=user.groups.all()) & ~Q(decided_by=user))


class DelegationQuerySet(models.QuerySet):
    def not_over(self) -> DelegationQuerySet:
        """Delegations in force now or still to come (database clock), the soonest first."""
        return self.filter(ends_at__gt=Now()).order_by("starts_at")
