"""Rollback drills on the home page: shown apart, never counted as real activity.

A drill (approvals/drills.py) writes to a staging system as the built-in agent `gatehouse-drill`, through the real
execution path, and reverses those writes: its proposals (decided by no rule, since a drill is its own approval) and
their reversals are proof that undo works, not decisions or failures of an agent. The charts, the failures list and
the readiness list leave them out; one "Drills" line says how many ran and how they ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from django.db.models import Count, Q, QuerySet

from approvals.drills import DRILL_AGENT
from approvals.models import Drill
from console.dashboard.wording import admin_url

if TYPE_CHECKING:
    from django.contrib.auth.models import User

Rows = TypeVar("Rows", bound=QuerySet)


def without_drills(rows: Rows, slug: str = "agent__slug") -> Rows:
    """`rows` less the drill agent's: proposals and audit events by their agent (rows with no agent stay), agents
    by their own `slug`. Part of the query it narrows, not a query of its own."""
    return rows.exclude(**{slug: DRILL_AGENT})


@dataclass(frozen=True)
class DrillSummary:
    """Drills since the start of the window: how many, how many passed, and where to see them."""

    total: int
    passed: int
    url: str  # the drills list, or "" for those who may not open it

    @property
    def failed(self) -> int:
        return self.total - self.passed


def drill_summary(user: User, owner: User | None, start: datetime) -> DrillSummary:
    """One aggregate over the drills started since `start` (only `owner`'s systems when one is given)."""
    drills = Drill.objects.filter(started_at__gte=start)
    if owner is not None:
        drills = drills.filter(system__owner=owner)
    counts = drills.aggregate(total=Count("pk"), passed=Count("pk", filter=Q(passed=True)))
    url = admin_url("approvals_drill_changelist") if user.has_perm("approvals.view_drill") else ""
    return DrillSummary(counts["total"], counts["passed"], url)
