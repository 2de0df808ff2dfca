"""Read questions about proposals."""

from __future__ import annotations

from django.db import models


class ProposalQuerySet(models.QuerySet):
    def visible_to(self, principal) -> ProposalQuerySet:
        """An agent sees only its own proposals (another agent's id answers 404); staff see all of them."""
        from governance.models import Agent

        if isinstance(principal, Agent):
            return self.filter(agent=principal)
        if getattr(principal, "is_authenticated", False) and principal.is_active and principal.is_staff:
            return self
        return self.none()

    def for_api(self) -> ProposalQuerySet:
        return self.select_related("system", "action_type", "approver", "approver_group", "rule")
