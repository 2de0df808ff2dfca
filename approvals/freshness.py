"""Decisions that hold while the world moves: a proposal is decided on the record as it was, and written only while
the fields that decision rested on still hold (DESIGN.md, "Execution re-checks").

The fields a decision rests on are those the action writes and the one its impact is computed from
(`watched_fields`); the proposal keeps them as `record_snapshot`. Before the write, the worker reads the record again
(and a system that versions its records is sent the version just read, so a change in between is refused by the
system itself). When a watched field moved on:

- the impact is computed and the rules consulted again on the record as it is now (`redecide`);
- an auto-approved proposal still in the auto band goes ahead on the new figures (`refreshed`, audited);
- anything else is not written: it goes back to a person as `stale`, with each changed field's then and now, the
  new impact and the decision's new terms (who decides, by when), and they are told.

A field that already holds the value the proposal writes is no change: an earlier attempt of this very write landed
(a worker died before recording it), and the system's idempotency key answers the retry.

The same check runs when a person approves: if the record moved since the proposal was made, the proposal is decided
again on the new figures and the approval does not count until they approve what they now see.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals import notify
from approvals.choices import DecisionMode, ProposalStatus
from approvals.models import Proposal
from approvals.policy import FALLBACK_MAX_AGE, Decision, Impact, compute_impact, decide
from approvals.reversal import same_value
from approvals.transitions import locked, move, record_event
from audit.choices import Channel, Verb
from governance.choices import ImpactKind
from governance.models import ActionType


def watched_fields(action: ActionType) -> list[str]:
    """The record's fields a decision on `action` rests on: what it writes, and what its impact is computed from."""
    names = list((action.operation or {}).get("fields") or [])
    if action.impact_kind == ImpactKind.DELTA and action.impact_field and action.impact_field not in names:
        names.append(action.impact_field)
    return names


def watched_values(action: ActionType, record: dict[str, Any] | None) -> dict[str, Any]:
    """The watched fields of `record`, as the proposal keeps them ({} when nothing was read)."""
    return {name: record.get(name) for name in watched_fields(action)} if record else {}


def moved(proposal: Proposal, current: dict[str, Any]) -> dict[str, list[Any]]:
    """Each watched field that changed since the decision, as [then, now]; {} when the decision still holds.

    A field now holding the very value this proposal writes is not a change: its own write already landed."""
    changes: dict[str, list[Any]] = {}
    for name, then in (proposal.record_snapshot or {}).items():
        now = current.get(name)
        if same_value(now, then) or (name in proposal.payload and same_value(now, proposal.payload[name])):
            continue
        changes[name] = [then, now]
    return changes


@dataclass(frozen=True)
class Redecision:
    impact: Impact
    decision: Decision
    snapshot: dict[str, Any]


def redecide(proposal: Proposal, current: dict[str, Any]) -> Redecision:
    """The impact and decision of `proposal` on the record as it is now (its own amount not counted twice)."""
    action = proposal.action_type
    impact = compute_impact(action, proposal.payload, current)
    decision = decide(
        system=proposal.system,
        action=action,
        impact=impact,
        agent=proposal.agent,
        record_id=proposal.record_id,
        payload=proposal.payload,
        exclude=proposal.pk,
    )
    return Redecision(impact, decision, watched_values(action, current))


def apply_terms(proposal: Proposal, impact: Impact, decision: Decision, *, now: datetime) -> None:
    """Give `proposal` the impact and the decision's terms (who decides, by when). The caller saves it. Used for a new
    proposal and for one decided again; a decision that waits for a person starts its SLA and maximum age now."""
    auto = decision.mode == DecisionMode.AUTO
    proposal.impact_amount, proposal.impact_currency = impact.amount, impact.currency
    proposal.mode = decision.mode
    proposal.decision = {**decision.as_json(), "impact_basis": impact.basis}
    proposal.rule = decision.rule
    proposal.approver, proposal.approver_group = decision.approver, decision.approver_group
    proposal.review_group, proposal.review_timing = decision.review_group, decision.review_timing
    proposal.review_within = decision.review_within
    proposal.sla_due_at = now + decision.sla if decision.sla and not auto else None
    proposal.expires_at = now + decision.max_age if not auto else None
    # Whoever an escalation handed the old decision to does not inherit the new one (a higher band, say).
    proposal.reassigned_to = proposal.reassigned_group = proposal.reassigned_at = None


def terms_for_a_person(proposal: Proposal, again: Redecision, *, now: datetime) -> None:
    """Decided again while a person decides it (or decided it): the new impact and terms, except that a decision the
    rules would now take alone still waits for the person it waited for, on the fallback SLA. The caller saves."""
    if again.decision.mode != DecisionMode.AUTO:
        apply_terms(proposal, again.impact, again.decision, now=now)
        return
    proposal.impact_amount, proposal.impact_currency = again.impact.amount, again.impact.currency
    proposal.decision = {
        **proposal.decision,
        "reason": f"{again.decision.reason}; a person decides, as the record changed after the decision was taken",
        "impact_basis": again.impact.basis,
    }
    proposal.sla_due_at = now + settings.GATEHOUSE_FALLBACK_SLA
    proposal.expires_at = now + (again.decision.max_age or FALLBACK_MAX_AGE)


def _said(changes: dict[str, list[Any]]) -> str:
    return ", ".join(f"{name} {then} → {now}" for name, (then, now) in changes.items())


def _amount(impact: Impact) -> str:
    return "could not be computed" if impact.amount is None else f"{impact.amount} {impact.currency}"


# --- At execution ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recheck:
    """What the re-check before a write decided: write (with the record just read), or not (now stale)."""

    proceed: bool
    detail: str = ""


@transaction.atomic
def proposal_recheck(*, proposal_id: Any, current: dict[str, Any]) -> Recheck:
    """The worker read `current` just before the write. Under the row lock: go ahead unchanged, go ahead on new
    figures (auto before, auto still), or stop and hand it back to a person as `stale`."""
    proposal = locked(proposal_id)
    if proposal.status != ProposalStatus.EXECUTING:
        return Recheck(False, f"it is {proposal.status} now")
    changes = moved(proposal, current)
    if not changes:
        return Recheck(True)
    again = redecide(proposal, current)
    now = timezone.now()
    what = f"{proposal.action_type.name} on {proposal.record_id}"
    common = {
        "actor": None,
        "channel": Channel.TASK,
        "state_before": proposal.record_snapshot,
        "state_after": again.snapshot,
        "input": {"changed": changes},
    }
    if proposal.mode == DecisionMode.AUTO and again.decision.mode == DecisionMode.AUTO:
        proposal.record_snapshot = again.snapshot
        apply_terms(proposal, again.impact, again.decision, now=now)
        proposal.decided_at = now
        proposal.save()
        record_event(
            proposal,
            verb=Verb.REFRESHED,
            decision=proposal.decision,
            summary=f"The record changed before {what} was written ({_said(changes)}); decided again: the impact is "
            f"now {_amount(again.impact)}, still auto-approved by rule ({again.decision.reason}).",
            **common,
        )
        return Recheck(True, "refreshed")
    proposal.stale_changes = changes
    proposal.record_snapshot = again.snapshot
    terms_for_a_person(proposal, again, now=now)
    proposal.decided_by = None  # nobody approved what it now is
    proposal.decided_at = None
    proposal.decision_comment = ""
    proposal.review_due_at = None
    proposal.claimed_at = None
    proposal.attempts = 0  # a new decision, a new write: its own attempts
    move(
        proposal,
        ProposalStatus.STALE,
        verb=Verb.STALE,
        outcome="stale",
        decision=proposal.decision,
        summary=f"Not written: the record changed since {what} was decided ({_said(changes)}). The impact is now "
        f"{_amount(again.impact)}; it waits for a person again ({again.decision.reason}).",
        **common,
    )
    transaction.on_commit(functools.partial(notify.notify_stale, proposal))
    return Recheck(False, f"stale: {_said(changes)}")


# --- At approval ------------------------------------------------------------------------------------------------


class RecordMoved(Exception):
    """An approval that did not count: the record changed since the proposal was decided, which is now decided again
    on the record as it is; the person approves what they now see, or not."""


def proposal_refresh_if_moved(*, proposal: Proposal, current: dict[str, Any], user: Any, channel: Any) -> str:
    """In the approval's transaction, the row locked: when the record moved since the proposal was decided, decide it
    again on the record as it is now and say so ("" when it did not). The approval being made does not count: the
    person approves what they now see, or not."""
    changes = moved(proposal, current)
    if not changes:
        return ""
    again = redecide(proposal, current)
    before = proposal.record_snapshot
    proposal.stale_changes = changes
    proposal.record_snapshot = again.snapshot
    terms_for_a_person(proposal, again, now=timezone.now())
    proposal.save()
    said = (
        f"the record changed since it was proposed ({_said(changes)}): the impact is now {_amount(again.impact)} "
        f"({again.decision.reason})"
    )
    record_event(
        proposal,
        verb=Verb.REFRESHED,
        actor=user,
        channel=channel,
        decision=proposal.decision,
        state_before=before,
        state_after=again.snapshot,
        input={"changed": changes},
        summary=f"{user.get_username()}'s approval did not count: {said}. Decided again on the record as it is now.",
    )
    return said
