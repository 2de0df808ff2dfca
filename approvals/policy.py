"""Decision policy: what a proposal's impact is (computed by Gatehouse, never taken from the agent) and who decides.

Fail closed: no rule, a rule not signed off, an unknown currency, an impact that cannot be computed, or a system in
propose_only mode all mean a human decides.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db.models import Q

from approvals import limits
from approvals.choices import DecisionMode
from core.compiled_query import CompiledQuery
from core.numbers import finite_decimal
from governance import policy_cache
from governance.choices import ImpactKind, Role, WriteMode
from governance.models import ActionType, Agent, System, ThresholdBand, ThresholdRule

FALLBACK_MAX_AGE = timedelta(days=3)


@dataclass(frozen=True)
class Impact:
    amount: Decimal | None  # None: could not be computed
    currency: str
    basis: str  # how it was computed, in words

    def as_json(self) -> dict[str, Any]:
        return {"amount": None if self.amount is None else f"{self.amount:.2f}", "currency": self.currency}


@dataclass(frozen=True)
class Decision:
    mode: str
    reason: str
    rule: ThresholdRule | None = None
    band: ThresholdBand | None = None
    approver: Any = None
    approver_group: Group | None = None
    sla: timedelta | None = None
    review_group: Group | None = None
    review_timing: str = ""
    review_within: timedelta | None = None
    max_age: timedelta = FALLBACK_MAX_AGE
    counted: dict[str, Any] | None = None  # the earlier proposals a cumulative limit added (approvals.limits)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reason": self.reason,
            "rule": self.rule.name if self.rule else None,
            "rule_id": self.rule.pk if self.rule else None,
            "band": str(self.band) if self.band else None,
            "approver": self.approver.get_username() if self.approver else None,
            "approver_group": self.approver_group.name if self.approver_group else None,
            "review_group": self.review_group.name if self.review_group else None,
            "review_timing": self.review_timing or None,
            # The rule version this proposal is judged under, for the decision's separation of duties: a later edit
            # (say, turning owner_may_not_approve off) does not change who may decide a proposal already made.
            "owner_may_not_approve": self.rule.owner_may_not_approve if self.rule else True,
            "rule_edited_by": self.rule.edited_by_id if self.rule else None,
            **({"counted": self.counted} if self.counted else {}),
        }


def compute_impact(action: ActionType, payload: dict[str, Any], record: dict[str, Any] | None) -> Impact:
    """The money at stake. For `delta`: the new value minus the current value read from the system of record."""
    currency = action.impact_currency
    if action.impact_kind == ImpactKind.NONE:
        return Impact(Decimal("0.00"), currency, "no money at stake")
    new = finite_decimal(payload.get(action.impact_field))
    if new is None:
        return Impact(None, currency, f"{action.impact_field} is not a number")
    if action.impact_kind == ImpactKind.AMOUNT:
        return Impact(new, currency, f"the amount in {action.impact_field}")
    current = finite_decimal((record or {}).get(action.impact_field))
    if current is None:
        return Impact(None, currency, f"the current {action.impact_field} could not be read")
    return Impact(new - current, currency, f"{action.impact_field} {current} → {new}")


def _human(reason: str, system: System, max_age: timedelta = FALLBACK_MAX_AGE) -> Decision:
    """Where the rules cannot decide, one approver from the Approvers role decides within the fallback SLA."""
    return Decision(
        mode=DecisionMode.SINGLE,
        reason=f"{reason}: a human decides",
        approver_group=policy_cache.cached(("group", Role.APPROVERS), Group.objects.filter(name=Role.APPROVERS).first),
        sla=settings.GATEHOUSE_FALLBACK_SLA,
        max_age=max_age,
    )


# The rule and band queries, compiled once (governance.querysets.CompiledQuery): the action's rule and the system's
# default rule, and their bands, in the order prefetch_related("bands") gives (Meta.ordering: rule, min_amount).
_SENTINEL_SYSTEM, _SENTINEL_ACTION = -7_447_104_471_011, -7_447_104_471_012
_RULES = CompiledQuery(
    lambda system_id, action_id: ThresholdRule.objects.filter(system_id=system_id).filter(
        Q(action_type_id=action_id) | Q(action_type__isnull=True)
    ),
    system_id=_SENTINEL_SYSTEM,
    action_id=_SENTINEL_ACTION,
)
_BANDS = CompiledQuery(
    lambda system_id, action_id: (
        ThresholdBand.objects.filter(rule__system_id=system_id)
        .filter(Q(rule__action_type_id=action_id) | Q(rule__action_type__isnull=True))
        .order_by("rule_id", "min_amount")
    ),
    system_id=_SENTINEL_SYSTEM,
    action_id=_SENTINEL_ACTION,
)


def find_rule(system: System, action: ActionType) -> ThresholdRule | None:
    """The action's own rule, else the system's default rule, with its bands prefetched (cached per process under the
    policy generation within an agent's call: governance.policy_cache)."""
    return policy_cache.cached(("rule", system.pk, action.pk), functools.partial(_find_rule, system, action))


def _find_rule(system: System, action: ActionType) -> ThresholdRule | None:
    rules = {rule.action_type_id: rule for rule in _RULES.run(system_id=system.pk, action_id=action.pk)}
    rule = rules.get(action.pk) or rules.get(None)
    if rule is None:
        return None
    bands = [band for band in _BANDS.run(system_id=system.pk, action_id=action.pk) if band.rule_id == rule.pk]
    for band in bands:
        ThresholdBand.rule.field.set_cached_value(band, rule)
    # What prefetch_related("bands") leaves behind: rule.bands.all() answers from these, without a query.
    prefetched = rule.bands.get_queryset()
    prefetched._result_cache = bands
    prefetched._prefetch_done = True
    rule._prefetched_objects_cache = {"bands": prefetched}
    return rule


def decide(
    *,
    system: System,
    action: ActionType,
    impact: Impact,
    agent: Agent | None = None,
    record_id: str = "",
    payload: dict[str, Any] | None = None,
    exclude: Any = None,
) -> Decision:
    """Who decides a proposal of `action` with this `impact`. `agent`, `record_id` and `payload` are the proposal's
    (what rules on cumulative amounts and on the payload look at); `exclude` is the id of a proposal being decided
    again, which must not count towards its own cumulative amount (only proposals made before it count).

    Where the agent's earlier proposals count (a rule's cumulative scope, a budget), call it inside the transaction
    that records the outcome: it holds a lock per agent and system (or record) until then, so two proposals made at
    the same instant cannot both be judged without the other (approvals.limits)."""
    rule = find_rule(system, action)
    if rule is None:
        return _human(f"no threshold rule covers {action.name}", system)
    if not rule.is_signed_off:
        return _human(f"rule “{rule.name}” is not signed off by the business owner", system, rule.max_age)
    if impact.amount is None:
        return _human(f"the impact could not be computed ({impact.basis})", system, rule.max_age)
    if impact.currency != rule.currency:
        return _human(f"impact in {impact.currency} but rule “{rule.name}” is in {rule.currency}", system, rule.max_age)
    scope = limits.Scope(system=system, action=action, agent=agent, record_id=record_id, exclude=exclude)
    budgets = limits.serialise(scope, rule)
    amount = abs(impact.amount)  # a decrease is judged by its size too: fail closed
    earlier = limits.earlier_for_rule(scope, rule)
    total = amount + earlier.amount if earlier else amount
    band = choose_band(rule, total, payload)
    summed = limits.sum_words(amount, earlier, rule, scope) if earlier else f"{amount} {rule.currency}"
    if band is None:
        return _human(f"no band of “{rule.name}” covers {summed}", system, rule.max_age)
    where = f"{summed} falls in band {band} of “{rule.name}”"
    if system.write_mode == WriteMode.PROPOSE_ONLY and band.mode == DecisionMode.AUTO:
        return _human(f"{where}, but {system} is propose-only", system, rule.max_age)
    if band.mode == DecisionMode.AUTO:
        if not action.reversible and not rule.auto_executes_irreversible:
            why = f": {action.not_reversible_note.rstrip('.')}" if action.not_reversible_note else ""
            return _person(
                rule,
                f"{where}, but {action.name} cannot be reversed{why}; the rule does not let such a write execute "
                "without a person",
                system,
            )
        spent = limits.budget_spent(scope, budgets, amount, impact.currency)
        if spent:
            return _person(rule, f"{where}, but {spent}", system)
    return Decision(
        mode=band.mode,
        reason=where,
        rule=rule,
        band=band,
        approver=band.approver,
        approver_group=band.approver_group,
        sla=band.sla,
        review_group=band.review_group if band.mode == DecisionMode.DUAL else None,
        review_timing=band.review_timing if band.mode == DecisionMode.DUAL else "",
        review_within=band.review_within if band.mode == DecisionMode.DUAL else None,
        max_age=rule.max_age,
        counted=earlier.as_json() if earlier else None,
    )


def choose_band(rule: ThresholdRule, amount: Decimal, payload: dict[str, Any] | None) -> ThresholdBand | None:
    """The band for `amount`: among the bands whose range covers it, one whose condition the payload matches wins over
    one without a condition (the most specific condition first); a band whose condition does not match never applies."""
    covering = [
        band
        for band in rule.bands.all()
        if band.min_amount <= amount and (band.max_amount is None or amount < band.max_amount) and band.matches(payload)
    ]
    covering.sort(key=lambda band: -len(band.condition or {}))
    return covering[0] if covering else None


def _person(rule: ThresholdRule, reason: str, system: System) -> Decision:
    """A decision the rule's auto band may not take alone: its first one-approver band's approver and SLA decide;
    without one, the fallback (one approver from the Approvers role)."""
    single = next((band for band in rule.bands.all() if band.mode == DecisionMode.SINGLE and not band.condition), None)
    if single is None:
        return _human(reason, system, rule.max_age)
    return Decision(
        mode=DecisionMode.SINGLE,
        reason=f"{reason}: one approver decides",
        rule=rule,
        approver=single.approver,
        approver_group=single.approver_group,
        sla=single.sla,
        max_age=rule.max_age,
    )
