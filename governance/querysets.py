"""Read questions about the inventory, named for what they ask; the only permission filters are here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models
from django.utils import timezone

from governance.choices import Role

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


def sees_everything(user: User | AnonymousUser) -> bool:
    """Superusers and operators act on the whole inventory; everybody else on what they own."""
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or user.groups.filter(name=Role.OPERATORS).exists()


class OwnedQuerySet(models.QuerySet):
    """Rows whose system (or the row itself) has an owner, found through the model's OWNER_PATH."""

    def editable_by(self, user: User | AnonymousUser) -> OwnedQuerySet:
        """What `user` may change: superusers everything, everyone else only what they own.

        Operators see everything but change rules and grants only through their own services (kill switch,
        reversal), not by editing another owner's terms.
        """
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self
        if getattr(self.model, "OPERATORS_EDIT", False) and sees_everything(user):
            return self
        return self.filter(**{self.model.OWNER_PATH: user})

    def visible_to(self, user: User | AnonymousUser) -> OwnedQuerySet:
        """Inventory is visible to every active staff user (auditors read it all); nothing to anyone else."""
        if not user.is_authenticated or not user.is_active or not user.is_staff:
            return self.none()
        return self


class AgentQuerySet(OwnedQuerySet):
    def active(self) -> AgentQuerySet:
        return self.filter(status="active")


class AgentTokenQuerySet(models.QuerySet):
    def usable(self, now=None) -> AgentTokenQuerySet:
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ScopeGrantQuerySet(OwnedQuerySet):
    def current(self, now=None) -> ScopeGrantQuerySet:
        now = now or timezone.now()
        return self.filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))

    def for_agent(self, agent) -> ScopeGrantQuerySet:
        return self.filter(agent=agent).current().select_related("system", "resource")
