"""A reversal's rounds, run by a worker: each reversible step in plan order, checked, idempotent and audited.

See approvals/reversal.py for the plan. Before each compensation the record is read again, and a value changed since
the plan holds the step for a person; where the system versions its records, the compensation is conditional on the
version just read, so a change made between that read and the write is refused by the system and held too. A
failing step does not stop the rest: transient failures are retried in later rounds with backoff, and an older write
of the same record waits for the newer one to be reversed first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from approvals.choices import ProposalStatus
from approvals.models import Reversal, ReversalStep
from approvals.reversal import (
    REVERSAL_LEASE,
    changed_fields,
    idempotency_key,
    queue_reversal,
    reversal_report,
    same_value,
)
from approvals.transitions import locked, move, record_event
from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import PermanentError, RecordChanged, RecordNotFound, TransientError
from connectors.limits import CallDeferred
from connectors.registry import connector_for
from governance.choices import Compensation

STEP_ATTEMPTS = 5  # a step whose system keeps failing transiently is reported failed after this many tries
ROUND_BACKOFF = timedelta(seconds=2)  # first pause between rounds; doubles each round
ROUND_BACKOFF_MAX = timedelta(minutes=2)


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


def _note(step: ReversalStep, *, status: str, error: str = "", current: dict[str, Any] | None = None) -> None:
    fields: dict[str, Any] = {"status": status, "last_error": error[:2000]}
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
    connector = connector_for(proposal.system, agent=proposal.agent)
    try:
        current = record = None
        if action.compensation == Compensation.RESTORE_FIELDS:
            fields = changed_fields(proposal)
            record = connector.read(action.resource.name, proposal.record_id)
            current = {name: record.get(name) for name in fields}
            before, after = proposal.state_before or {}, proposal.state_after or {}
            restored = all(same_value(current[name], before.get(name)) for name in fields)
            as_written = all(same_value(current[name], after.get(name)) for name in fields)
            if restored and not as_written and attempts > 1:
                # Our own compensation landed before a crash kept us from recording it.
                _record_reversed(reversal, step, current=current, note="found already restored")
                return
            if not as_written:
                changed = ", ".join(
                    f"{name} is {current[name]} (this write set {after.get(name)})"
                    for name in fields
                    if not same_value(current[name], after.get(name))
                )
                _hold(reversal, step, current=current, why=f"Changed since the plan, by someone else: {changed}.")
                return
        try:
            result = connector.compensate(
                action, proposal.record_id, proposal.compensation or {}, idempotency_key(proposal), expected=record
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
def _record_reversed(
    reversal: Reversal,
    step: ReversalStep,
    *,
    current: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str = "",
) -> None:
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


def _hold(reversal: Reversal, step: ReversalStep, *, current: dict[str, Any] | None, why: str) -> None:
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


def _finish(reversal: Reversal, *, now: datetime) -> None:
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


def reversals_resume(now: datetime | None = None) -> int:
    """Beat: queue again running reversals no worker is on (a lost message, a dead worker, a broker that was down)."""
    now = now or timezone.now()
    idle = Reversal.objects.filter(status=Reversal.Status.RUNNING, started_at__lt=now - timedelta(minutes=1)).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - REVERSAL_LEASE)
    )
    ids = list(idle.values_list("pk", flat=True)[:100])
    for reversal_id in ids:
        queue_reversal(reversal_id, countdown=0)
    return len(ids)
