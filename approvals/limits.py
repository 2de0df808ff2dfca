"""Cumulative limits and budgets: what an agent already proposed counts with what it proposes now.

A threshold rule with a cumulative scope chooses its band on the sum of this proposal's |impact| and the |impact| of
the same agent's earlier proposals of the rule's actions in the rule's window, on the same record (`record`) or on
any record of the system (`system`), so twenty $300 raises are judged as the $6,000 they add up to. An agent's
budget on a system (governance.AgentBudget) caps the sum and the count of its proposals there in a window; past it,
what would auto-execute goes to a person.

Both count the same proposals: those still standing (approvals.choices.COUNTS_TOWARDS_LIMITS; why there), made in
the window, in the rule's (or budget's) currency. A proposal decided again (approvals.freshness) counts only what was
proposed before it, never itself or what came after.

Two proposals made at the same instant must not each be judged without the other: `serialise` takes a lock per agent
and system (or record) held until the deciding transaction commits (PostgreSQL; SQLite writes one at a time anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Abs
from django.utils import timezone

from approvals.choices import COUNTS_TOWARDS_LIMITS
from approvals.models import Proposal
from core.database import advisory_xact_lock
from core.history import window_words
from governance import policy_cache
from governance.choices import CumulativeScope
from governance.models import ActionType, Agent, AgentBudget, System, ThresholdRule


@dataclass(frozen=True)
class Scope:
    """Whose proposal is being decided, and which proposal not to count (one decided again)."""

    system: System
    agent: Agent | None
    action: ActionType | None = None
    record_id: str = ""
    exclude: Any = None


@dataclass(frozen=True)
class Counted:
    """The earlier proposals a limit added: their summed |impact|, how many, over which window and scope."""

    amount: Decimal
    proposals: int
    window: timedelta
    scope: str

    def as_json(self) -> dict[str, Any]:
        return {
            "amount": f"{self.amount:.2f}",
            "proposals": self.proposals,
            "window_seconds": int(self.window.total_seconds()),
            "scope": self.scope,
        }


def serialise(scope: Scope, rule: ThresholdRule) -> list[AgentBudget]:
    """Take the lock that makes counting and recording one step, when anything counts; return the agent's budgets on
    the system. The lock is per agent and system when a budget or a system-wide rule counts (every action there adds
    up), per record when only the rule's record scope does."""
    if scope.agent is None:
        return []
    agent, system = scope.agent, scope.system
    key = ("budgets", agent.pk, system.pk)
    budgets = policy_cache.cached(key, lambda: list(AgentBudget.objects.filter(agent=agent, system=system)))
    if budgets or rule.cumulative_scope == CumulativeScope.SYSTEM:
        advisory_xact_lock("counting", scope.agent.pk, scope.system.pk)
    elif rule.cumulative_scope == CumulativeScope.RECORD:
        advisory_xact_lock("counting", scope.agent.pk, scope.system.pk, scope.record_id)
    return budgets


def _standing(scope: Scope, since: datetime) -> QuerySet[Proposal]:
    """The agent's proposals on the system still standing since `since`; without the one decided again, and when
    deciding one again, only those made before it."""
    proposals = Proposal.objects.filter(
        agent=scope.agent, system=scope.system, created_at__gte=since, status__in=COUNTS_TOWARDS_LIMITS
    )
    if scope.exclude is not None:
        made = Proposal.objects.filter(pk=scope.exclude).values_list("created_at", flat=True).first()
        proposals = proposals.exclude(pk=scope.exclude)
        if made is not None:
            proposals = proposals.filter(created_at__lt=made)
    return proposals


def _sum(proposals: QuerySet[Proposal], currency: str) -> tuple[Decimal, int]:
    """The summed |impact| of the proposals in `currency`, and how many proposals there are (in any currency)."""
    totals = proposals.aggregate(
        amount=Sum(Abs("impact_amount"), filter=Q(impact_currency=currency, impact_amount__isnull=False)),
        count=Count("pk"),
    )
    return totals["amount"] or Decimal("0.00"), totals["count"]


def earlier_for_rule(scope: Scope, rule: ThresholdRule) -> Counted | None:
    """What the agent's earlier proposals under `rule` add to this one (None: the rule judges each alone).

    The rule's actions: its own action, or for a system's default rule every action of the system without a rule of
    its own; a proposal of another action is judged by another rule and adds up there."""
    if not rule.cumulative_scope or scope.agent is None:
        return None
    proposals = _standing(scope, timezone.now() - rule.cumulative_window)
    if rule.action_type_id is not None:
        proposals = proposals.filter(action_type_id=rule.action_type_id)
    else:
        proposals = proposals.filter(action_type__threshold_rules__isnull=True)
    if rule.cumulative_scope == CumulativeScope.RECORD:
        proposals = proposals.filter(record_id=scope.record_id)
    amount, count = _sum(proposals, rule.currency)
    return Counted(amount, count, rule.cumulative_window, rule.cumulative_scope)


def sum_words(amount: Decimal, earlier: Counted, rule: ThresholdRule, scope: Scope) -> str:
    """'300.00 USD now + 1800.00 USD (6 earlier proposals) in the last 24 h on account 4471 = 2100.00 USD'."""
    label = scope.action.resource.label if scope.action else "record"
    where = f"{label} {scope.record_id}" if earlier.scope == CumulativeScope.RECORD else f"any record of {scope.system}"
    total = amount + earlier.amount
    return (
        f"{amount} {rule.currency} now + {earlier.amount:.2f} {rule.currency} ({earlier.proposals} earlier "
        f"proposal{'s' if earlier.proposals != 1 else ''}) in the last {window_words(earlier.window)} on {where} = "
        f"{total:.2f} {rule.currency}"
    )


@dataclass(frozen=True)
class BudgetUse:
    """One budget and what is used of it now: for the agent's page, /api/v1/me, and the decision."""

    budget: AgentBudget
    amount: Decimal
    writes: int

    @property
    def amount_left(self) -> Decimal | None:
        limit = self.budget.max_amount
        return None if limit is None else max(limit - self.amount, Decimal("0.00"))

    @property
    def writes_left(self) -> int | None:
        limit = self.budget.max_writes
        return None if limit is None else max(limit - self.writes, 0)


def budget_use(budget: AgentBudget, *, scope: Scope | None = None) -> BudgetUse:
    """What the budget's agent has used of it in the window ending now."""
    scope = scope or Scope(system=budget.system, agent=budget.agent)
    amount, writes = _sum(_standing(scope, timezone.now() - budget.window), budget.currency)
    return BudgetUse(budget, amount, writes)


def budgets_of(agent: Agent) -> list[BudgetUse]:
    """Each of the agent's budgets, with what is used of it now."""
    return [budget_use(budget) for budget in AgentBudget.objects.filter(agent=agent).select_related("agent", "system")]


def budget_spent(scope: Scope, budgets: list[AgentBudget], amount: Decimal, currency: str) -> str:
    """Why this proposal would go past one of the agent's budgets on the system, in words ("" when it would not)."""
    for budget in budgets:
        use = budget_use(budget, scope=scope)
        window = window_words(budget.window)
        if budget.max_writes is not None and use.writes + 1 > budget.max_writes:
            return (
                f"{scope.agent}'s budget on {scope.system} is spent: {use.writes} of {budget.max_writes} writes "
                f"in the last {window}"
            )
        counts = currency == budget.currency
        if budget.max_amount is not None and counts and use.amount + amount > budget.max_amount:
            return (
                f"{scope.agent}'s budget on {scope.system} is spent: {use.amount:.2f} of {budget.max_amount} "
                f"{budget.currency} used in the last {window}, and this one adds {amount} {currency}"
            )
    return ""
