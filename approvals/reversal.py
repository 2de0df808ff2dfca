"""The way back: reverse a window of executed writes, newest first, each step checked, idempotent and audited.

A reversal is planned, then run:

- **Plan** (`reversal_plan`): the executed writes of an agent or a system in the last N hours, newest first. Each is
  *reversible* (its compensation will run), *blocked* (the record changed since, by someone else: the current value
  is shown and the write is left for a person), *not reversible* (the action's note says why) or *already reversed*.
  A record written several times in the window is followed back through its writes: the newest must still show what
  it wrote, each older one must find what the newer one found before it.
- **Run** (`reversal_run` in approvals/reversal_rounds.py, by a Celery worker): the reversible steps in plan order.
  Before each compensation the record is read again, and a value changed since the plan holds the step for a person;
  where the system versions
  its records (an http system's `version_field`), the compensation is conditional on the version just read, so a
  change made between that read and the write is refused by the system and held too, never overwritten. Each
  compensation goes to the system with the idempotency key `reverse-<proposal id>`, so a step retried after a crash,
  or a second reversal of the same window, cannot apply it twice. A failing step does not stop the rest: transient
  failures are retried in later rounds with backoff, and an older write of the same record waits for the newer one to
  be reversed first.

Reversed writes are not proposals, so a reversal is never itself reversed: to change a value again, an agent or a
person makes a new proposal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from approvals.choices import ProposalStatus
from approvals.models import Proposal, Reversal, ReversalStep
from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import PermanentError, TransientError
from connectors.registry import connector_for
from core.numbers import finite_decimal
from core.tasks import queue_task
from governance.choices import AgentStatus, Compensation
from governance.models import Agent, GlobalSwitch, System

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

MAX_HOURS = 24 * 30
REVERSAL_TASK = "approvals.run_reversal"  # the task's stable name (approvals/tasks.py)
REVERSAL_LEASE = timedelta(minutes=10)  # a running reversal whose worker went silent this long may be taken up


class ReversalRefused(Exception):
    """The reversal cannot be planned or started as asked (bad window, nothing in scope, already running)."""


def idempotency_key(proposal: Proposal) -> str:
    return f"reverse-{proposal.pk}"


def same_value(a: Any, b: Any) -> bool:
    """Equal as the system would compare them: "5000.00" and 5000 are the same limit."""
    if a == b:
        return True
    x, y = finite_decimal(a), finite_decimal(b)
    return x is not None and x == y


def _window_moving(*, agent: Agent | None, system: System | None) -> bool:
    """Could the writes in scope still change while the reversal runs? Then the plan says the window is moving."""
    if GlobalSwitch.is_engaged()[0]:
        return False
    if agent is not None and agent.status == AgentStatus.DISABLED:
        return False
    return not (system is not None and system.writes_frozen)


@dataclass
class _Expected:
    """What a record should hold now, walking its writes from newest to oldest."""

    values: dict[str, Any]
    blocked: bool = False


def reversal_plan(
    *,
    agent: Agent | None = None,
    system: System | None = None,
    hours: float = 24,
    user: User | None = None,
    channel: Channel | str,
    reason: str = "",
    now: datetime | None = None,
) -> Reversal:
    """Plan the reversal of the executed writes in scope during the last `hours`, newest first (nothing runs)."""
    if agent is None and system is None:
        raise ReversalRefused("Name an agent or a system whose writes to reverse.")
    if not 0 < hours <= MAX_HOURS:
        raise ReversalRefused(f"The window must be more than 0 and at most {MAX_HOURS} hours.")
    now = now or timezone.now()
    writes = Proposal.objects.filter(
        status__in=[ProposalStatus.EXECUTED, ProposalStatus.REVERSED],
        executed_at__gte=now - timedelta(hours=hours),
        executed_at__lte=now,
    )
    if agent is not None:
        writes = writes.filter(agent=agent)
    if system is not None:
        writes = writes.filter(system=system)
    writes = writes.select_related("action_type__resource", "system", "agent").order_by("-executed_at", "-created_at")
    with transaction.atomic():
        reversal = Reversal.objects.create(
            agent=agent,
            system=system,
            window_start=now - timedelta(hours=hours),
            window_end=now,
            requested_by=user,
            channel=str(channel),
            reason=reason[:300],
            moving=_window_moving(agent=agent, system=system),
        )
        steps = ReversalStep.objects.bulk_create(plan_steps(reversal, list(writes)))
        counts = {kind: sum(step.kind == kind for step in steps) for kind in ReversalStep.Kind.values}
        audit_record(
            verb=Verb.REVERSAL_PLANNED,
            actor=user,
            channel=channel,
            system=system,
            agent=agent,
            input={"reversal": reversal.pk, "hours": hours, "reason": reason, **counts},
            outcome="moving" if reversal.moving else "ok",
            summary=f"Reversal {reversal.pk} planned for {reversal.scope_label}, last {hours:g} h: "
            f"{counts['reversible']} reversible, {counts['blocked']} blocked, {counts['not_reversible']} not "
            f"reversible, {counts['already_reversed']} already reversed"
            + (" (window moving: writes are not stopped)" if reversal.moving else "")
            + ".",
        )
    return reversal


_STEP_STATUS: dict[str, str] = {
    ReversalStep.Kind.REVERSIBLE: ReversalStep.Status.PLANNED,
    ReversalStep.Kind.BLOCKED: ReversalStep.Status.HELD,
}


def plan_steps(reversal: Reversal, writes: list[Proposal]) -> list[ReversalStep]:
    """One step per write, newest first, each classified against what the record should hold by then (unsaved).
    Also the one step of a single write's reversal (approvals/reversal_single.py)."""
    expected: dict[tuple[int, str], _Expected] = {}
    reads: dict[tuple[int, str], dict[str, Any] | str] = {}
    steps = []
    for position, proposal in enumerate(writes, start=1):
        kind, explanation, current = _classify(proposal, expected=expected, reads=reads)
        status = _STEP_STATUS.get(kind, ReversalStep.Status.SKIPPED)
        steps.append(
            ReversalStep(
                reversal=reversal,
                proposal=proposal,
                position=position,
                kind=kind,
                status=status,
                explanation=explanation,
                current=current,
            )
        )
    return steps


def changed_fields(proposal: Proposal) -> list[str]:
    """The fields a write changed: those it recorded both before and after."""
    return [name for name in (proposal.state_after or {}) if name in (proposal.state_before or {})]


def _classify(
    proposal: Proposal, *, expected: dict[tuple[int, str], _Expected], reads: dict[tuple[int, str], Any]
) -> tuple[str, str, dict[str, Any] | None]:
    action = proposal.action_type
    if proposal.status == ProposalStatus.REVERSED:
        return (
            ReversalStep.Kind.ALREADY_REVERSED,
            f"Already reversed at {timezone.localtime(proposal.reversed_at):%Y-%m-%d %H:%M}. A reversal is not "
            "itself reversed: to change the value again, make a new proposal.",
            None,
        )
    if action.compensation == Compensation.NONE or not proposal.compensation:
        note = action.not_reversible_note or "The action has no compensation."
        return ReversalStep.Kind.NOT_REVERSIBLE, note, None
    if action.compensation != Compensation.RESTORE_FIELDS:
        return ReversalStep.Kind.REVERSIBLE, _compensation_text(proposal), None
    fields = changed_fields(proposal)
    key = (proposal.system_id, proposal.record_id)
    if key not in expected:
        try:
            record = connector_for(proposal.system, agent=proposal.agent).read(action.resource.name, proposal.record_id)
        except (TransientError, PermanentError) as exc:
            reads[key] = str(exc)
            expected[key] = _Expected(values={}, blocked=False)
        else:
            reads[key] = record
            expected[key] = _Expected(values=dict(record))
    state = expected[key]
    if isinstance(reads[key], str):
        return (
            ReversalStep.Kind.REVERSIBLE,
            _compensation_text(proposal) + f" The current value could not be read now ({reads[key]}); it is "
            "checked again just before the compensation runs.",
            None,
        )
    current = {name: state.values.get(name) for name in fields}
    if state.blocked:
        return (
            ReversalStep.Kind.BLOCKED,
            "A newer write to this record is held for a person; this older one waits with it.",
            current,
        )
    before, after = proposal.state_before or {}, proposal.state_after or {}
    changed = [name for name in fields if not same_value(state.values.get(name), after.get(name))]
    if changed:
        state.blocked = True
        described = ", ".join(
            f"{name} is {state.values.get(name)!s} (this write set {after.get(name)!s})" for name in changed
        )
        return (
            ReversalStep.Kind.BLOCKED,
            f"Changed since, by someone else: {described}. Left for a person to decide.",
            current,
        )
    for name in fields:
        state.values[name] = before.get(name)
    return ReversalStep.Kind.REVERSIBLE, _compensation_text(proposal), current


def _compensation_text(proposal: Proposal) -> str:
    if proposal.action_type.compensation == Compensation.DELETE_CREATED:
        return "Will delete what this write created."
    restore = ", ".join(f"{name} back to {value}" for name, value in (proposal.state_before or {}).items())
    return f"Will set {restore}." if restore else "Will run the action's compensation."


def reversal_start(*, reversal_id: int, user: User | None = None, channel: Channel | str) -> Reversal:
    """Hand a planned reversal to the workers (after the commit). Starting a running or finished one is refused, and
    so is starting one that waits for an approver."""
    with transaction.atomic():
        reversal = Reversal.objects.select_for_update().get(pk=reversal_id)
        if reversal.status != Reversal.Status.PLANNED:
            raise ReversalRefused(f"Reversal {reversal.pk} is {reversal.get_status_display().lower()}, not planned.")
        if reversal.awaits_approval and reversal.approved_by_id is None:
            # A flag asked for it: it runs once the write's approver agrees (approvals/reversal_single.py).
            raise ReversalRefused(f"Reversal {reversal.pk} waits for the approval of the write's approver.")
        reversal.status = Reversal.Status.RUNNING
        reversal.started_at = timezone.now()
        reversal.save(update_fields=["status", "started_at"])
        audit_record(
            verb=Verb.REVERSAL_PLANNED,
            actor=user,
            channel=channel,
            system=reversal.system,
            agent=reversal.agent,
            input={"reversal": reversal.pk, "started": True},
            outcome="started",
            summary=f"Reversal {reversal.pk} of {reversal.scope_label} started by "
            f"{user.get_username() if user else 'an operator (command line)'}.",
        )
        transaction.on_commit(lambda: queue_reversal(reversal.pk, countdown=0))
    return reversal


def queue_reversal(reversal_id: int, *, countdown: float) -> None:
    """Hand a running reversal to the workers (its next round); a broker that is down is noted, not raised."""
    try:
        queue_task(REVERSAL_TASK, args=[reversal_id], countdown=countdown)
    except Exception as exc:  # broker down: the sweeper (reversals_resume) takes it up again
        logger.warning("reversal %s: could not queue: %s", reversal_id, exc)


def reversal_report(reversal: Reversal) -> dict[str, list[ReversalStep]]:
    """The steps by what became of them, in plan order."""
    report: dict[str, list[ReversalStep]] = {
        "done": [],
        "remaining": [],
        "held": [],
        "failed": [],
        "not_reversible": [],
        "skipped": [],
    }
    for step in reversal.steps.select_related("proposal__action_type", "proposal__system").order_by("position"):
        if step.kind == ReversalStep.Kind.NOT_REVERSIBLE:
            report["not_reversible"].append(step)
        elif step.status == ReversalStep.Status.DONE:
            report["done"].append(step)
        elif step.status == ReversalStep.Status.HELD:
            report["held"].append(step)
        elif step.status == ReversalStep.Status.FAILED:
            report["failed"].append(step)
        elif step.status in (ReversalStep.Status.PLANNED, ReversalStep.Status.RETRYING):
            report["remaining"].append(step)
        else:
            report["skipped"].append(step)
    return report


def validate_hours(value: Any) -> float:
    try:
        hours = float(value)
    except (TypeError, ValueError):
        raise ValidationError("Hours must be a number.") from None
    if not 0 < hours <= MAX_HOURS:
        raise ValidationError(f"Hours must be more than 0 and at most {MAX_HOURS}.")
    return hours
