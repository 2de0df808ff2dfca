"""Execution: the outbox that hands approved proposals to the workers, the claim, the call to the system, the result.

Approval commits, then (on_commit) the outbox row is published as the task "approvals.execute_proposal"; a periodic
sweep publishes again whatever no worker took up. A worker claims the proposal under its row lock, checks the kill
switch once more, calls the system's connector with the proposal id as the idempotency key, and records the result:
executed with the state before and after, or failed after bounded retries. A second delivery finds it claimed or
finished and does nothing (counted as a duplicate).
"""

from __future__ import annotations

import functools
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from approvals import notify
from approvals.choices import TERMINAL_STATUSES, ProposalStatus
from approvals.freshness import Recheck, proposal_recheck
from approvals.models import OutboxMessage, Proposal
from approvals.readiness import execution_pause
from approvals.transitions import RELATED, InvalidTransition, lock_rows, locked, move
from audit.choices import Channel, Verb
from connectors.base import PermanentError, RecordChanged, Result, TransientError
from connectors.limits import CallDeferred
from connectors.registry import connector_for
from core.tasks import queue_task
from governance.gate import kill_switch_stop, write_granted

logger = logging.getLogger(__name__)

EXECUTE_TASK = "approvals.execute_proposal"  # the task's stable name (approvals/tasks.py)

# --- Outbox -----------------------------------------------------------------------------------------------------

# Redis serves a queue's priority lists in order, 0 first (kombu's emulation; the filesystem broker has none). A write
# a person approved, who is waiting to see it done, goes ahead of auto-approved ones, which under load queue for
# seconds (bench/reliability.py). Reversals and drills publish without a priority: 0, first too.
PRIORITY_DECIDED_BY_A_PERSON = 0
PRIORITY_AUTO = 3


def execution_priority(proposal: Proposal) -> int:
    return PRIORITY_DECIDED_BY_A_PERSON if proposal.decided_by_id else PRIORITY_AUTO


def queue_execution(proposal: Proposal) -> None:
    """In the caller's transaction (the approval's): the outbox row. After the commit: publish it. Nothing approved is
    lost if the broker is down, since the sweeper publishes what is left in the outbox."""
    OutboxMessage.objects.filter(proposal=proposal).delete()  # an earlier approval's (before a hold, or stale)
    message = OutboxMessage.objects.create(proposal=proposal)
    transaction.on_commit(lambda: _publish([message]))


def outbox_publish(*, message_ids: list[int]) -> int:
    """Hand outbox messages to Celery. A broker that is down is noted, not raised: the sweeper tries again."""
    return _publish(list(OutboxMessage.objects.filter(pk__in=message_ids).select_related("proposal")))


def _publish(messages: list[OutboxMessage]) -> int:
    published = 0
    for message in messages:
        now = timezone.now()
        try:
            queue_task(EXECUTE_TASK, args=[str(message.proposal_id)], priority=execution_priority(message.proposal))
        except Exception as exc:  # any broker failure: the row stays for the sweeper
            logger.warning("outbox: publishing %s failed: %s", message.proposal_id, exc)
            OutboxMessage.objects.filter(pk=message.pk).update(
                publish_attempts=message.publish_attempts + 1, last_error=str(exc)[:300]
            )
            continue
        OutboxMessage.objects.filter(pk=message.pk).update(
            published_at=now, publish_attempts=message.publish_attempts + 1, last_error=""
        )
        published += 1
    return published


def outbox_sweep(now: datetime | None = None) -> int:
    """Publish again whatever approved work no worker has taken up: never-published messages, messages lost in the
    broker, executions whose worker died (lease expired) or whose retry message was lost. Duplicates are harmless:
    a second delivery finds the proposal claimed and returns."""
    now = now or timezone.now()
    lease = execution_lease()
    stale_publish = now - settings.GATEHOUSE_OUTBOX_REPUBLISH_AFTER
    unpublished = OutboxMessage.objects.filter(published_at__isnull=True, created_at__lt=now - timedelta(seconds=2))
    lost = OutboxMessage.objects.filter(proposal__status=ProposalStatus.APPROVED, published_at__lt=stale_publish)
    abandoned = OutboxMessage.objects.filter(
        proposal__status=ProposalStatus.EXECUTING, proposal__claimed_at__lt=now - lease
    )
    waiting_retry = OutboxMessage.objects.filter(
        proposal__status=ProposalStatus.EXECUTING,
        proposal__claimed_at__isnull=True,
        proposal__updated_at__lt=now
        - settings.GATEHOUSE_EXECUTION_BACKOFF_MAX
        - settings.GATEHOUSE_OUTBOX_REPUBLISH_AFTER,
    )
    ids: set[int] = set()
    for queryset in (unpublished, lost, abandoned, waiting_retry):
        ids.update(queryset.values_list("pk", flat=True)[:500])
    return outbox_publish(message_ids=sorted(ids)) if ids else 0


# --- Execute ----------------------------------------------------------------------------------------------------


def execution_lease() -> timedelta:
    """A claim older than this belongs to a worker that died: the hard time limit has killed any task by then."""
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 5)


def _hold_reason(proposal: Proposal) -> str | None:
    """The kill switch and the readiness of production writes, checked again just before calling the system."""
    stop = kill_switch_stop(proposal.agent, proposal.system)
    if stop is None:
        return execution_pause(proposal)
    if stop.switch == "agent":
        return f"agent {proposal.agent.slug} is disabled"
    if stop.switch == "global":
        return f"the global stop is engaged: {stop.reason}"
    return f"writes to {proposal.system} are frozen"


@dataclass(frozen=True)
class Claim:
    """What one delivery of an execution task found: the proposal to execute, or why there is nothing to do."""

    proposal: Proposal | None
    why_not: str = ""
    duplicate: bool = False  # a second delivery of work already taken up or finished (counted on the proposal)


def proposal_claim(*, proposal_id: uuid.UUID | str) -> Proposal | None:
    """Take up a proposal for execution (waiting for a concurrent claim or record to finish). None when there is
    nothing to do: another worker holds a live claim, it is finished, on hold, or not approved."""
    return _claim(proposal_id).proposal


def _claim(proposal_id: uuid.UUID | str) -> Claim:
    """Claim under the row lock, or say why not. A duplicate delivery (the proposal is executing under a live claim,
    or finished) is counted on the proposal and logged: not a transition, so no audit event. A delivery that finds
    the proposal on hold is not one: the hold was audited when the kill switch took it."""
    now = timezone.now()
    with transaction.atomic():
        # Another transaction may hold the row (a concurrent delivery claiming it, the worker recording its result,
        # the kill switch): those are short, so wait for it and judge this delivery by what it left.
        proposal = lock_rows(Proposal.objects.select_related(*RELATED)).filter(pk=proposal_id).first()
        if proposal is None:
            logger.warning("execution of proposal %s suppressed: no such proposal", proposal_id)
            return Claim(None, why_not="no such proposal")
        claimable = proposal.status == ProposalStatus.APPROVED or (
            proposal.status == ProposalStatus.EXECUTING
            and (proposal.claimed_at is None or proposal.claimed_at < now - execution_lease())
        )
        if not claimable:
            return _not_claimable(proposal, now)
        hold = _hold_reason(proposal)
        if hold:
            proposal.hold_reason = hold[:300]
            move(
                proposal,
                ProposalStatus.ON_HOLD,
                verb=Verb.HELD,
                actor=None,
                channel=Channel.TASK,
                outcome="on_hold",
                summary=f"Execution of {proposal.action_type.name} on {proposal.record_id} put on hold: {hold}.",
            )
            if hold.startswith("readiness:"):  # the owners fix it; a kill switch's puller knows already
                transaction.on_commit(functools.partial(notify.notify_paused, proposal))
            return Claim(None, why_not=f"put on hold: {hold}")
        proposal.claimed_at = now
        proposal.attempts += 1
        if proposal.status == ProposalStatus.APPROVED:
            move(
                proposal,
                ProposalStatus.EXECUTING,
                verb=Verb.EXECUTING,
                actor=None,
                channel=Channel.TASK,
                summary=f"Executing {proposal.action_type.name} on {proposal.record_id} in {proposal.system}.",
            )
        else:  # a claim retaken after its lease ran out: the same move, already audited when it was first made
            proposal.save()
    return Claim(proposal)


def _not_claimable(proposal: Proposal, now: datetime) -> Claim:
    """Inside the claim's transaction, the row locked: count a duplicate, or say why this delivery does nothing."""
    if proposal.status == ProposalStatus.ON_HOLD:
        logger.info("execution of proposal %s suppressed: on hold (kill switch)", proposal.pk)
        return Claim(None, why_not="on hold by the kill switch")
    if proposal.status == ProposalStatus.EXECUTING and proposal.claimed_at is not None:
        why = f"already executing under a live claim (taken {(now - proposal.claimed_at).total_seconds():.1f} s ago)"
    elif proposal.status in TERMINAL_STATUSES:
        why = f"already {proposal.status}"
    else:  # awaiting a decision, or a manual task: nothing a worker may execute, and no delivery of earlier work
        logger.warning("execution of proposal %s suppressed: it is %s", proposal.pk, proposal.status)
        return Claim(None, why_not=f"not approved for execution ({proposal.status})")
    # update(), not save(): no updated_at bump, which the sweeper reads as "last moved by its worker".
    Proposal.objects.filter(pk=proposal.pk).update(duplicate_deliveries=F("duplicate_deliveries") + 1)
    logger.warning(
        "duplicate delivery of proposal %s suppressed: %s (duplicate %d)",
        proposal.pk,
        why,
        proposal.duplicate_deliveries + 1,
        extra={"proposal_id": str(proposal.pk)},
    )
    return Claim(None, why_not=why, duplicate=True)


@transaction.atomic
def proposal_record_executed(
    *, proposal_id: uuid.UUID | str, before: dict[str, Any], after: dict[str, Any], compensation: dict[str, Any]
) -> Proposal:
    proposal = locked(proposal_id)
    if proposal.status != ProposalStatus.EXECUTING:
        raise InvalidTransition(f"Cannot record an execution of a {proposal.status} proposal.")
    proposal.executed_at = timezone.now()
    proposal.claimed_at = None
    proposal.state_before, proposal.state_after, proposal.compensation = before, after, compensation
    change = ", ".join(f"{name} {before.get(name)} → {value}" for name, value in after.items()) if before else ""
    move(
        proposal,
        ProposalStatus.EXECUTED,
        verb=Verb.EXECUTED,
        actor=None,
        channel=Channel.TASK,
        person=proposal.decided_by,
        state_before=before,
        state_after=after,
        summary=f"Executed {proposal.action_type.name} on {proposal.action_type.resource.label} {proposal.record_id}"
        + (f": {change}" if change else "")
        + (f" (approved by {proposal.decided_by.get_username()})." if proposal.decided_by else " (auto-approved)."),
    )
    return proposal


@transaction.atomic
def proposal_record_failure(*, proposal_id: uuid.UUID | str, reason: str) -> Proposal:
    proposal = locked(proposal_id)
    if proposal.status != ProposalStatus.EXECUTING:
        raise InvalidTransition(f"Cannot record a failure of a {proposal.status} proposal.")
    proposal.claimed_at = None
    proposal.failure_reason = reason[:2000]
    move(
        proposal,
        ProposalStatus.FAILED,
        verb=Verb.FAILED,
        actor=None,
        channel=Channel.TASK,
        outcome="failed",
        summary=f"{proposal.action_type.name} on {proposal.record_id} failed after {proposal.attempts} attempt(s): "
        f"{reason[:300]}",
    )
    transaction.on_commit(lambda: notify.notify_failed(proposal))
    return proposal


def _release_for_retry(proposal_id: uuid.UUID | str, *, not_attempted: bool = False) -> None:
    """Keep it `executing` but unclaimed, so the scheduled retry (or the sweeper) can take it up again.

    `not_attempted`: the system was never called (its rate limit or breaker said wait), so the claim's attempt is
    given back: waiting for a turn does not spend the retry budget."""
    changes: dict[str, Any] = {"claimed_at": None}
    if not_attempted:
        changes["attempts"] = F("attempts") - 1
    Proposal.objects.filter(pk=proposal_id, status=ProposalStatus.EXECUTING).update(**changes)


def retry_delay(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter, never sooner than the system's own Retry-After."""
    base = settings.GATEHOUSE_EXECUTION_BACKOFF.total_seconds() * (2 ** min(max(0, attempt - 1), 30))
    capped = min(base, settings.GATEHOUSE_EXECUTION_BACKOFF_MAX.total_seconds())
    delay = random.uniform(capped / 2, capped)  # noqa: S311 - jitter, not security
    return max(delay, retry_after or 0.0)


@dataclass(frozen=True)
class ExecutionOutcome:
    status: str  # executed | failed | retry | suppressed | stale
    retry_in: float | None = None
    detail: str = ""
    duplicate: bool = False  # suppressed as a duplicate delivery (not: on hold, or put on hold now)


def proposal_execute(*, proposal_id: uuid.UUID | str) -> ExecutionOutcome:
    """Claim, call the system with the proposal id as idempotency key, record the result.

    Transient errors release the claim and ask for a retry until the attempts run out; permanent ones fail at once.
    A call the system's rate limit or open breaker holds back (connectors/limits.py) is not an attempt: the claim is
    given back and the task comes back when the limit says.
    """
    claim = _claim(proposal_id)
    proposal = claim.proposal
    if proposal is None:
        return ExecutionOutcome("suppressed", detail=claim.why_not, duplicate=claim.duplicate)
    # A rollback drill's write is its own approval, on staging, by the built-in drill agent that holds no grants.
    if not proposal.decision.get("drill") and not write_granted(proposal.agent, proposal.action_type):
        reason = f"not written: {proposal.agent.slug}'s write grant for {proposal.action_type.name} was withdrawn"
        proposal_record_failure(proposal_id=proposal.pk, reason=reason)
        return ExecutionOutcome("failed", detail=reason)
    if proposal.attempts > settings.GATEHOUSE_EXECUTION_MAX_ATTEMPTS:
        reason = f"{proposal.attempts - 1} attempts did not finish (workers died or timed out)"
        proposal_record_failure(proposal_id=proposal.pk, reason=reason)
        return ExecutionOutcome("failed", detail=reason)
    try:
        written = _write(proposal)
    except CallDeferred as exc:
        # Not called: the rate limit makes a queue, the open breaker a pause. Jitter spreads the waiting tasks out,
        # so they do not all come back for the same token.
        _release_for_retry(proposal.pk, not_attempted=True)
        wait = exc.retry_after + random.uniform(0, 1.0 + exc.retry_after / 4)  # noqa: S311 - jitter, not security
        logger.info("execution of %s deferred %.1f s: %s", proposal.pk, wait, exc)
        return ExecutionOutcome("retry", retry_in=wait, detail=f"deferred: {exc}")
    except TransientError as exc:
        if proposal.attempts >= settings.GATEHOUSE_EXECUTION_MAX_ATTEMPTS:
            proposal_record_failure(proposal_id=proposal.pk, reason=f"gave up after retries: {exc}")
            return ExecutionOutcome("failed", detail=str(exc))
        _release_for_retry(proposal.pk)
        return ExecutionOutcome("retry", retry_in=retry_delay(proposal.attempts, exc.retry_after), detail=str(exc))
    except PermanentError as exc:
        proposal_record_failure(proposal_id=proposal.pk, reason=str(exc))
        return ExecutionOutcome("failed", detail=str(exc))
    except Exception:
        # Our own bug or a broken dependency: release the claim so the attempt counts and a retry can follow.
        _release_for_retry(proposal.pk)
        raise
    if isinstance(written, Recheck):  # nothing written: the record moved since the decision
        return ExecutionOutcome("stale", detail=written.detail)
    proposal_record_executed(
        proposal_id=proposal.pk, before=written.before, after=written.after, compensation=written.compensation
    )
    return ExecutionOutcome("executed")


RECHECKS = 3  # reads and writes a record that keeps changing under us gets, before the task retries later


def _write(proposal: Proposal) -> Result | Recheck:
    """The write, made only while the fields its decision rested on still hold (approvals/freshness.py).

    The record is read just before and judged under the row lock; the connector is handed what was read, so a system
    that versions its records refuses the write (RecordChanged) when it moved on in between, and the loop judges it
    again. An action whose decision rested on no field of the record is written without reading it."""
    connector = connector_for(proposal.system, agent=proposal.agent)
    action = proposal.action_type
    for _ in range(RECHECKS):
        current = None
        if proposal.record_snapshot:
            current = connector.read(action.resource.name, proposal.record_id)
            check = proposal_recheck(proposal_id=proposal.pk, current=current)
            if not check.proceed:
                return check
        try:
            return connector.execute(
                action, proposal.record_id, proposal.payload, idempotency_key=str(proposal.pk), expected=current
            )
        except RecordChanged:
            if current is None:
                raise
    raise TransientError(f"{proposal.system}: {proposal.record_id} kept changing while Gatehouse wrote to it")


def paused_executions_resume() -> int:
    """Beat job: proposals whose production writes paused for readiness (`readiness: …`) go back to the workers
    once the system's checklist holds again (the credential rotated, a fresh drill passed). Held by a kill switch,
    they wait for the switch instead. Returns how many resumed."""
    resumed = 0
    paused = Proposal.objects.filter(status=ProposalStatus.ON_HOLD, hold_reason__startswith="readiness:")
    for proposal_id in paused.values_list("pk", flat=True)[:500]:
        with transaction.atomic():
            proposal = lock_rows(paused.select_related(*RELATED), skip_locked=True).filter(pk=proposal_id).first()
            if proposal is None or execution_pause(proposal):
                continue
            if kill_switch_stop(proposal.agent, proposal.system) is not None:
                continue
            was = proposal.hold_reason
            proposal.hold_reason = ""
            move(
                proposal,
                ProposalStatus.APPROVED,
                verb=Verb.RELEASED,
                actor=None,
                channel=Channel.TASK,
                outcome=ProposalStatus.APPROVED,
                summary=f"Released from hold: the system is ready for production writes again (was: {was}).",
            )
            queue_execution(proposal)
            resumed += 1
    return resumed
