"""Read questions about proposals."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from approvals.choices import AWAITING_DECISION, DecisionMode, ProposalStatus
from governance.models import Agent


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
        return self.filter(
            Q(status__in=AWAITING_DECISION, decided_by__isnull=True)
            & (
                Q(approver=user)
                | Q(approver__isnull=True, approver_group__in=user.groups.all())
                | Q(reassigned_to=user)
                | Q(reassigned_group__in=user.groups.all())
                | Q(
                    approver__delegations_given__delegate=user,
                    approver__delegations_given__starts_at__lte=Now(),
                    approver__delegations_given__ends_at__gt=Now(),
                )
            )
        )

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
