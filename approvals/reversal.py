"""The way back: reverse a window of executed writes, newest first, each step checked, idempotent and audited.

A reversal is planned, then run:

- **Plan** (`reversal_plan`): the executed writes of an agent or a system in the last N hours, newest first. Each is
  *reversible* (its compensation will run), *blocked* (the record changed since, by someone else: the current value
  is shown and the write is left for a person), *not reversible* (the action's note says why) or *already reversed*.
  A record written several times in the window is followed back through its writes: the newest must still show what
  it wrote, each older one must find what the newer one found before it.
- **Run** (`reversal_run`, by a Celery worker): the reversible steps in plan order. Before each compensation the
  record is read again, and a value changed since the plan holds the step for a person; where the system versions
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
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from approvals.choices import ProposalStatus
from approvals.models import Proposal, Reversal, ReversalStep
from approvals.transitions import locked, move, record_event
from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import PermanentError, RecordChanged, RecordNotFound, TransientError
from connectors.limits import CallDeferred
from connectors.registry import connector_for
from core.numbers import finite_decimal
from core.tasks import queue_task
from governance.choices import AgentStatus, Compensation
from governance.models import GlobalSwitch

logger = logging.getLogger(__name__)

MAX_HOURS = 24 * 30
STEP_ATTEMPTS = 5  # a step whose system keeps failing transiently is reported failed after this many tries
ROUND_BACKOFF = timedelta(seconds=2)  # first pause between rounds; doubles each round
ROUND_BACKOFF_MAX = timedelta(minutes=2)
REVERSAL_TASK = "approvals.run_reversal"  # the task's stable name (approvals/tasks.py)
REVERSAL_LEASE = timedelta(minutes=10)  # a running reversal whose worker went silent this long may be taken up


class ReversalRefused(Exception):
    """The reversal cannot be planned or started as asked (bad window, nothing in scope, already running)."""


def idempotency_key(proposal: Proposal) -> str:
    return f"reverse-{proposal.pk}"


def _same(a: Any, b: Any) -> bool:
    """Equal as the system would compare them: "5000.00" and 5000 are the same limit."""
    if a == b:
        return True
    x, y = finite_decimal(a), finite_decimal(b)
    return x is not None and x == y


def _window_moving(*, agent, system) -> bool:
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
    *, agent=None, system=None, hours: float = 24, user=None, channel: Channel | str, reason: str = "", now=None
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
    writes = list(
        writes.select_related("action_type__resource", "system", "agent").order_by("-executed_at", "-created_at")
    )
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
        expected: dict[tuple[int, str], _Expected] = {}
        reads: dict[tuple[int, str], dict[str, Any] | str] = {}
        steps = []
        for position, proposal in enumerate(writes, start=1):
            kind, explanation, current = _classify(proposal, expected=expected, reads=reads)
            steps.append(
                ReversalStep(
                    reversal=reversal,
                    proposal=proposal,
                    position=position,
                    kind=kind,
                    status=(
                        ReversalStep.Status.PLANNED
                        if kind == ReversalStep.Kind.REVERSIBLE
                        else ReversalStep.Status.HELD
                        if kind == ReversalStep.Kind.BLOCKED
                        else ReversalStep.Status.SKIPPED
                    ),
                    explanation=explanation,
                    current=current,
                )
            )
        ReversalStep.objects.bulk_create(steps)
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


def _changed_fields(proposal: Proposal) -> list[str]:
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
    fields = _changed_fields(proposal)
    key = (proposal.system_id, proposal.record_id)
    if key not in expected:
        try:
            record = connector_for(proposal.system).read(action.resource.name, proposal.record_id)
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
    changed = [name for name in fields if not _same(state.values.get(name), proposal.state_after.get(name))]
    if changed:
        state.blocked = True
        described = ", ".join(
            f"{name} is {state.values.get(name)!s} (this write set {proposal.state_after.get(name)!s})"
            for name in changed
        )
        return (
            ReversalStep.Kind.BLOCKED,
            f"Changed since, by someone else: {described}. Left for a person to decide.",
            current,
        )
    for name in fields:
        state.values[name] = proposal.state_before.get(name)
    return ReversalStep.Kind.REVERSIBLE, _compensation_text(proposal), current


def _compensation_text(proposal: Proposal) -> str:
    if proposal.action_type.compensation == Compensation.DELETE_CREATED:
        return "Will delete what this write created."
    restore = ", ".join(f"{name} back to {value}" for name, value in (proposal.state_before or {}).items())
    return f"Will set {restore}." if restore else "Will run the action's compensation."


# --- Run --------------------------------------------------------------------------------------------------------


def reversal_start(*, reversal_id: int, user=None, channel: Channel | str) -> Reversal:
    """Hand a planned reversal to the workers (after the commit). Starting a running or finished one is refused."""
    with transaction.atomic():
        reversal = Reversal.objects.select_for_update().get(pk=reversal_id)
        if reversal.status != Reversal.Status.PLANNED:
            raise ReversalRefused(f"Reversal {reversal.pk} is {reversal.get_status_display().lower()}, not planned.")
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
        transaction.on_commit(lambda: _queue(reversal.pk, countdown=0))
    return reversal


def _queue(reversal_id: int, *, countdown: float) -> None:
    try:
        queue_task(REVERSAL_TASK, args=[reversal_id], countdown=countdown)
    except Exception as exc:  # broker down: the sweeper (reversals_resume) takes it up again
        logger.warning("reversal %s: could not queue: %s", reversal_id, exc)


@dataclass(frozen=True)
class RunOutcome:
    finished: bool
    retry_in: float | None = None


def reversal_run(*, reversal_id: int) -> RunOutcome:
    """One round over the steps still to do, in plan order. Finished when nothing is left to retry.

    One worker at a time: a round claims the reversal (a lease, so a worker that died does not keep it), and a
    second delivery of the same task finds it claimed and leaves.
    """
    now = timezone.now()
    claimed = (
        Reversal.objects.filter(pk=reversal_id, status=Reversal.Status.RUNNING)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - REVERSAL_LEASE))
        .update(rounds=F("rounds") + 1, claimed_at=now)
    )
    if not claimed:
        return RunOutcome(True)
    try:
        reversal = Reversal.objects.select_related("agent", "system", "requested_by").get(pk=reversal_id)
        _round(reversal)
    finally:
        Reversal.objects.filter(pk=reversal_id).update(claimed_at=None)
    if reversal.steps.filter(kind=ReversalStep.Kind.REVERSIBLE, status=ReversalStep.Status.RETRYING).exists():
        delay = min(ROUND_BACKOFF.total_seconds() * 2 ** (reversal.rounds - 1), ROUND_BACKOFF_MAX.total_seconds())
        return RunOutcome(False, retry_in=delay)
    _finish(reversal, now=timezone.now())
    return RunOutcome(True)


def reversal_run_here(*, reversal_id: int, timeout: float = 60.0) -> Reversal:
    """Start a planned reversal and run its rounds in this process (drills; a single operator's shell)."""
    import time

    Reversal.objects.filter(pk=reversal_id, status=Reversal.Status.PLANNED).update(
        status=Reversal.Status.RUNNING, started_at=timezone.now()
    )
    deadline = time.monotonic() + timeout
    while True:
        outcome = reversal_run(reversal_id=reversal_id)
        if outcome.finished or time.monotonic() > deadline:
            break
        time.sleep(min(outcome.retry_in or 1.0, max(0.0, deadline - time.monotonic())))
    return Reversal.objects.get(pk=reversal_id)


def _round(reversal: Reversal) -> None:
    stuck: set[tuple[int, str]] = set()  # records with a newer write failed or held: older ones stay with it
    pending: set[tuple[int, str]] = set()  # records with a newer write still to retry: older ones wait
    steps = (
        reversal.steps.filter(kind=ReversalStep.Kind.REVERSIBLE)
        .select_related("proposal__action_type__resource", "proposal__system", "proposal__agent")
        .order_by("position")
    )
    for step in steps:
        record = (step.proposal.system_id, step.proposal.record_id)
        if step.status in (ReversalStep.Status.DONE, ReversalStep.Status.SKIPPED):
            continue
        if step.status in (ReversalStep.Status.FAILED, ReversalStep.Status.HELD):
            stuck.add(record)
            continue
        if record in stuck:
            _hold(
                reversal,
                step,
                current=None,
                why="A newer write on this record could not be reversed; this older one is left with it.",
            )
            continue
        if record in pending:
            _note(step, status=ReversalStep.Status.RETRYING, error="Waits for the newer write on this record.")
            continue
        _run_step(reversal, step)
        step.refresh_from_db(fields=["status"])
        if step.status == ReversalStep.Status.RETRYING:
            pending.add(record)
        elif step.status in (ReversalStep.Status.FAILED, ReversalStep.Status.HELD):
            stuck.add(record)


def _note(step: ReversalStep, *, status: str, error: str = "", current=None) -> None:
    fields = {"status": status, "last_error": error[:2000]}
    if current is not None:
        fields["current"] = current
    if status in (ReversalStep.Status.DONE, ReversalStep.Status.FAILED, ReversalStep.Status.HELD):
        fields["finished_at"] = timezone.now()
    ReversalStep.objects.filter(pk=step.pk).update(**fields)


def _run_step(reversal: Reversal, step: ReversalStep) -> None:
    proposal = step.proposal
    action = proposal.action_type
    if proposal.status == ProposalStatus.REVERSED:
        _note(step, status=ReversalStep.Status.SKIPPED, error="Already reversed (by another reversal).")
        return
    ReversalStep.objects.filter(pk=step.pk).update(attempts=F("attempts") + 1)
    attempts = step.attempts + 1
    connector = connector_for(proposal.system)
    try:
        current = record = None
        if action.compensation == Compensation.RESTORE_FIELDS:
            fields = _changed_fields(proposal)
            record = connector.read(action.resource.name, proposal.record_id)
            current = {name: record.get(name) for name in fields}
            restored = all(_same(current[name], proposal.state_before.get(name)) for name in fields)
            as_written = all(_same(current[name], proposal.state_after.get(name)) for name in fields)
            if restored and not as_written and attempts > 1:
                # Our own compensation landed before a crash kept us from recording it.
                _record_reversed(reversal, step, current=current, note="found already restored")
                return
            if not as_written:
                changed = ", ".join(
                    f"{name} is {current[name]} (this write set {proposal.state_after.get(name)})"
                    for name in fields
                    if not _same(current[name], proposal.state_after.get(name))
                )
                _hold(reversal, step, current=current, why=f"Changed since the plan, by someone else: {changed}.")
                return
        try:
            result = connector.compensate(
                action, proposal.record_id, proposal.compensation, idempotency_key(proposal), expected=record
            )
        except RecordChanged as exc:
            # Someone changed it between the check above and the write: the system refused the stale version.
            why = f"Changed by someone else while reversing, so not overwritten: {exc}."
            _hold(reversal, step, current=current, why=why)
            return
        except RecordNotFound:
            if action.compensation != Compensation.DELETE_CREATED:
                raise
            _record_reversed(reversal, step, current=current, note="already gone in the system")
            return
    except CallDeferred as exc:  # the system's rate limit or open breaker: not called, so not an attempt
        ReversalStep.objects.filter(pk=step.pk).update(attempts=F("attempts") - 1)
        _note(step, status=ReversalStep.Status.RETRYING, error=f"waiting: {exc}")
        return
    except TransientError as exc:
        if attempts >= STEP_ATTEMPTS:
            _fail(reversal, step, why=f"gave up after {attempts} attempts: {exc}")
        else:
            _note(step, status=ReversalStep.Status.RETRYING, error=f"attempt {attempts}: {exc}")
        return
    except PermanentError as exc:
        _fail(reversal, step, why=str(exc))
        return
    _record_reversed(reversal, step, current=current, after=result.after)


@transaction.atomic
def _record_reversed(reversal: Reversal, step: ReversalStep, *, current=None, after=None, note: str = "") -> None:
    proposal = locked(step.proposal_id)
    if proposal.status != ProposalStatus.EXECUTED:
        _note(step, status=ReversalStep.Status.SKIPPED, error=f"The write is {proposal.status} now.")
        return
    proposal.reversed_at = timezone.now()
    _note(step, status=ReversalStep.Status.DONE, error=note, current=current)
    restored = after or proposal.state_before or {}
    change = ", ".join(f"{name} back to {value}" for name, value in restored.items() if not isinstance(value, dict))
    move(
        proposal,
        ProposalStatus.REVERSED,
        verb=Verb.REVERSED,
        actor=reversal.requested_by,
        channel=Channel.TASK,
        input={"reversal": reversal.pk, "step": step.position, "note": note},
        state_before=current or proposal.state_after,
        state_after=restored,
        summary=f"Reversed {proposal.action_type.name} on {proposal.record_id} (reversal {reversal.pk})"
        + (f": {change}" if change else "")
        + (f" — {note}" if note else "")
        + ".",
    )


def _hold(reversal: Reversal, step: ReversalStep, *, current, why: str) -> None:
    _note(step, status=ReversalStep.Status.HELD, error=why, current=current)
    proposal = step.proposal
    record_event(
        proposal,
        verb=Verb.REVERSAL_HELD,
        actor=None,
        channel=Channel.TASK,
        input={"reversal": reversal.pk, "step": step.position},
        state_before=current,
        outcome="held",
        summary=f"Reversal {reversal.pk} left {proposal.action_type.name} on {proposal.record_id} for a person: {why}",
    )


def _fail(reversal: Reversal, step: ReversalStep, *, why: str) -> None:
    _note(step, status=ReversalStep.Status.FAILED, error=why)
    proposal = step.proposal
    record_event(
        proposal,
        verb=Verb.REVERSAL_STEP_FAILED,
        actor=None,
        channel=Channel.TASK,
        input={"reversal": reversal.pk, "step": step.position},
        outcome="failed",
        summary=f"Reversal {reversal.pk} could not reverse {proposal.action_type.name} on {proposal.record_id}: "
        f"{why[:300]}",
    )


def _finish(reversal: Reversal, *, now) -> None:
    report = reversal_report(reversal)
    complete = not report["failed"] and not report["held"]
    Reversal.objects.filter(pk=reversal.pk, status=Reversal.Status.RUNNING).update(
        status=Reversal.Status.DONE if complete else Reversal.Status.INCOMPLETE, finished_at=now
    )
    audit_record(
        verb=Verb.REVERSAL_FINISHED,
        actor=None,
        channel=Channel.TASK,
        system=reversal.system,
        agent=reversal.agent,
        input={"reversal": reversal.pk, **{key: len(value) for key, value in report.items()}},
        outcome="done" if complete else "incomplete",
        summary=f"Reversal {reversal.pk} of {reversal.scope_label} finished: {len(report['done'])} reversed, "
        f"{len(report['held'])} held for a person, {len(report['failed'])} failed, "
        f"{len(report['not_reversible'])} not reversible.",
    )


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


def reversals_resume(now=None) -> int:
    """Beat: queue again running reversals no worker is on (a lost message, a dead worker, a broker that was down)."""
    now = now or timezone.now()
    idle = Reversal.objects.filter(status=Reversal.Status.RUNNING, started_at__lt=now - timedelta(minutes=1)).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - REVERSAL_LEASE)
    )
    ids = list(idle.values_list("pk", flat=True)[:100])
    for reversal_id in ids:
        _queue(reversal_id, countdown=0)
    return len(ids)


def validate_hours(value: Any) -> float:
    try:
        hours = float(value)
    except (TypeError, ValueError):
        raise ValidationError("Hours must be a number.") from None
    if not 0 < hours <= MAX_HOURS:
        raise ValidationError(f"Hours must be more than 0 and at most {MAX_HOURS}.")
    return hours
