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
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.utils import timezone

from approvals import notify
from approvals.choices import TERMINAL_STATUSES, ProposalStatus
from approvals.freshness import Recheck, proposal_recheck
from approvals.models import Drill, OutboxMessage, Proposal
from approvals.readiness import WriteFacts, execution_pause
from approvals.transitions import RELATED, InvalidTransition, lock_rows, move
from audit.choices import Channel, Verb
from connectors.base import PermanentError, RecordChanged, Result, ToolChanged, TransientError
from connectors.limits import CallDeferred
from connectors.mcp.pinning import action_tool_changed
from connectors.models import AgentCredential, Credential
from connectors.registry import connector_for
from core.compiled_query import CompiledQuery
from core.tasks import queue_task
from core.tracing import Step, span
from governance.choices import Access
from governance.gate import kill_switch_stop, write_granted
from governance.models import GlobalSwitch, ScopeGrant

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
    # One statement: a new message, or an earlier approval's (before a hold, or stale) made new again in place.
    fresh = OutboxMessage(proposal=proposal, created_at=timezone.now())
    (message,) = OutboxMessage.objects.bulk_create(
        [fresh],
        update_conflicts=True,
        unique_fields=["proposal"],
        update_fields=["created_at", "published_at", "publish_attempts", "last_error"],
    )
    if message.pk is None:  # a database that does not return ids from an upsert: look it up
        message.pk = OutboxMessage.objects.values_list("pk", flat=True).get(proposal=proposal)
    transaction.on_commit(lambda: _publish([message]))


def outbox_publish(*, message_ids: list[int]) -> int:
    """Hand outbox messages to Celery. A broker that is down is noted, not raised: the sweeper tries again."""
    return _publish(list(OutboxMessage.objects.filter(pk__in=message_ids).select_related("proposal")))


def _publish(messages: list[OutboxMessage]) -> int:
    """Publish each message, in its proposal's trace: the execution continues the trace of the request that decided
    it, also when a person's approval or the sweeper publishes it (linked to that request's span, core.tracing)."""
    published = 0
    for message in messages:
        now = timezone.now()
        proposal = message.proposal
        try:
            with span("gatehouse.outbox.publish", parent=proposal.trace_parent, proposal_id=message.proposal_id):
                queue_task(EXECUTE_TASK, args=[str(message.proposal_id)], priority=execution_priority(proposal))
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


# --- The claim's one statement ---------------------------------------------------------------------------------
#
# Everything the worker checks before it calls the system, read with the proposal under its row lock: the global
# stop, the credential the write is made with, the staging twin's last passed drill, the rule that approved it and the
# agent's current write grants on the resource. One round trip instead of seven (issue 18); the checks themselves are
# the same functions as before (kill_switch_stop, execution_pause, the write grant's action list).

_ID_SENTINEL = uuid.UUID("74471044-7100-4000-8000-000000000001")
_NOW_SENTINEL = datetime(1901, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


def _claim_queryset(proposal_id: Any, now: datetime) -> models.QuerySet[Proposal]:
    grants = ScopeGrant.objects.filter(
        agent_id=OuterRef("agent_id"),
        system_id=OuterRef("system_id"),
        resource_id=OuterRef("action_type__resource_id"),
        access=Access.WRITE,
    ).current(now)
    drills = Drill.objects.filter(system_id=OuterRef("system__staging_twin_id"), passed=True, finished_at__isnull=False)
    own = AgentCredential.objects.filter(system_id=OuterRef("system_id"), agent_id=OuterRef("agent_id"))
    switch = GlobalSwitch.objects.filter(pk=1)
    return lock_rows(
        Proposal.objects.select_related(*RELATED, "system__credential", "rule")
        .filter(pk=proposal_id)
        .annotate(
            claim_stop_engaged=Subquery(switch.values("engaged")[:1]),
            claim_stop_reason=Subquery(switch.values("reason")[:1]),
            claim_own_credential=Subquery(own.values("pk")[:1]),
            claim_last_drill=Subquery(drills.order_by("-finished_at").values("finished_at")[:1]),
            claim_grants=Subquery(
                grants.order_by().values("agent_id").annotate(n=Count("pk")).values("n"),
                output_field=models.IntegerField(),
            ),
            claim_grant_actions=Subquery(grants.values("actions")[:1], output_field=models.JSONField()),
        )
    )


# The id reaches the SQL as the backend stores it: a UUID (PostgreSQL), 32 hex digits (SQLite).
_CLAIM = {
    native: CompiledQuery(_claim_queryset, proposal_id=_ID_SENTINEL if native else _ID_SENTINEL.hex, now=_NOW_SENTINEL)
    for native in (True, False)
}


# transitions.locked(), compiled once: the worker records every execution's result under it.
_LOCKED = {
    native: CompiledQuery(
        lambda proposal_id: lock_rows(Proposal.objects.select_related(*RELATED)).filter(pk=proposal_id),
        proposal_id=_ID_SENTINEL if native else _ID_SENTINEL.hex,
    )
    for native in (True, False)
}


def _db_id(proposal_id: uuid.UUID | str) -> tuple[bool, Any]:
    pk = Proposal._meta.pk.to_python(proposal_id)  # a malformed id raises ValidationError, as a filter on it did
    native = connection.features.has_native_uuid_field
    return native, (pk if native else pk.hex)


def _locked(proposal_id: uuid.UUID | str) -> Proposal:
    """The proposal, its row locked until the caller's transaction ends, with what its events name."""
    native, pk = _db_id(proposal_id)
    found = _LOCKED[native].run(proposal_id=pk)
    if not found:
        raise Proposal.DoesNotExist(f"No proposal {proposal_id}.")
    return found[0]


def _claim_read(proposal_id: uuid.UUID | str, now: datetime) -> Proposal | None:
    """The proposal, its row locked until the caller's transaction ends, with its `claim_*` facts; None if none."""
    native, pk = _db_id(proposal_id)
    found = _CLAIM[native].run(proposal_id=pk, now=now)
    return found[0] if found else None


@dataclass(frozen=True)
class _Facts:
    """The facts of the claim's statement, as the checks take them."""

    global_stop: tuple[bool, str]
    write: WriteFacts
    grants: int  # current write grants of the agent on the resource
    grant_actions: list[str] | None  # the actions of one of them (all that is needed when there is one)

    @classmethod
    def of(cls, proposal: Proposal) -> _Facts:
        facts: dict[str, Any] = proposal.__dict__
        engaged = facts.pop("claim_stop_engaged")
        reason = facts.pop("claim_stop_reason")
        own = facts.pop("claim_own_credential")
        credential: Credential | AgentCredential | None
        if own is not None:
            credential = AgentCredential.objects.get(pk=own)
        else:
            credential = getattr(proposal.system, "credential", None)  # read with the system
        return cls(
            global_stop=(bool(engaged), reason) if engaged is not None else (False, ""),  # as GlobalSwitch.is_engaged
            write=WriteFacts(credential=credential, last_drill=facts.pop("claim_last_drill")),
            grants=facts.pop("claim_grants") or 0,
            grant_actions=facts.pop("claim_grant_actions"),
        )

    def write_granted(self, proposal: Proposal) -> bool:
        """governance.gate.write_granted, on what the claim read: one current grant is judged here; several are
        left to the gate's own query."""
        if self.grants == 0:
            return False
        if self.grants == 1:
            return proposal.action_type.name in (self.grant_actions or [])
        return write_granted(proposal.agent, proposal.action_type)


def _hold_reason(proposal: Proposal, facts: _Facts) -> str | None:
    """The kill switch and the readiness of production writes, checked again just before calling the system."""
    stop = kill_switch_stop(proposal.agent, proposal.system, global_stop=facts.global_stop)
    if stop is None:
        return execution_pause(proposal, known=facts.write)
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
    facts: _Facts | None = None  # what the claim read with the proposal (when it took it up)


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
        proposal = _claim_read(proposal_id, now)
        if proposal is None:
            logger.warning("execution of proposal %s suppressed: no such proposal", proposal_id)
            return Claim(None, why_not="no such proposal")
        claimable = proposal.status == ProposalStatus.APPROVED or (
            proposal.status == ProposalStatus.EXECUTING
            and (proposal.claimed_at is None or proposal.claimed_at < now - execution_lease())
        )
        if not claimable:
            return _not_claimable(proposal, now)
        facts = _Facts.of(proposal)
        hold = _hold_reason(proposal, facts)
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
    return Claim(proposal, facts=facts)


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
    proposal = _locked(proposal_id)
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
    proposal = _locked(proposal_id)
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
    with span("gatehouse.proposal.execute", proposal_id=proposal_id) as step:
        outcome = _execute(proposal_id, step)
        step.set(outcome=outcome.status)
        return outcome


def _execute(proposal_id: uuid.UUID | str, step: Step) -> ExecutionOutcome:
    with span("gatehouse.proposal.claim", proposal_id=proposal_id):
        claim = _claim(proposal_id)
    proposal, facts = claim.proposal, claim.facts
    if proposal is None or facts is None:
        return ExecutionOutcome("suppressed", detail=claim.why_not, duplicate=claim.duplicate)
    step.set(agent=proposal.agent.slug, system=proposal.system.slug, action=proposal.action_type.name)
    # A rollback drill's write is its own approval, on staging, by the built-in drill agent that holds no grants.
    if not proposal.decision.get("drill") and not facts.write_granted(proposal):
        reason = f"not written: {proposal.agent.slug}'s write grant for {proposal.action_type.name} was withdrawn"
        proposal_record_failure(proposal_id=proposal.pk, reason=reason)
        return ExecutionOutcome("failed", detail=reason)
    if proposal.attempts > settings.GATEHOUSE_EXECUTION_MAX_ATTEMPTS:
        reason = f"{proposal.attempts - 1} attempts did not finish (workers died or timed out)"
        proposal_record_failure(proposal_id=proposal.pk, reason=reason)
        return ExecutionOutcome("failed", detail=reason)
    try:
        written = _write(proposal, facts.write.credential)
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
    except ToolChanged as exc:  # nothing was called: the tool is not the one approved
        return _hold_for_changed_tool(proposal, exc)
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


def _hold_for_changed_tool(proposal: Proposal, exc: ToolChanged) -> ExecutionOutcome:
    """The connector found the action's MCP tool changed (or gone) just before calling it, between two periodic
    checks: the action is paused as the check would have (audited, its owner told), and this proposal waits on hold
    with the others until the new definition is approved (paused_executions_resume)."""
    action_tool_changed(action_id=proposal.action_type_id, definition=exc.definition, channel=Channel.TASK)
    with transaction.atomic():
        held = _locked(proposal.pk)
        if held.status != ProposalStatus.EXECUTING:
            raise InvalidTransition(f"Cannot hold a {held.status} proposal.")
        held.claimed_at = None
        held.hold_reason = f"readiness: {exc}"[:300]
        move(
            held,
            ProposalStatus.ON_HOLD,
            verb=Verb.HELD,
            actor=None,
            channel=Channel.TASK,
            outcome="on_hold",
            summary=f"Execution of {held.action_type.name} on {held.record_id} put on hold: {exc}.",
        )
    return ExecutionOutcome("suppressed", detail=f"put on hold: {exc}")


RECHECKS = 3  # reads and writes a record that keeps changing under us gets, before the task retries later


def _write(proposal: Proposal, credential: Credential | AgentCredential | None) -> Result | Recheck:
    """The write, made only while the fields its decision rested on still hold (approvals/freshness.py).

    The record is read just before and judged under the row lock; the connector is handed what was read, so a system
    that versions its records refuses the write (RecordChanged) when it moved on in between, and the loop judges it
    again. An action whose decision rested on no field of the record is written without reading it. `credential`: the
    one the claim read (connectors.models.credential_for), so it is not looked up again."""
    if credential is None:
        connector = connector_for(proposal.system, agent=proposal.agent)
    else:
        connector = connector_for(proposal.system, agent=proposal.agent, secret=credential.reveal(), vaulted=credential)
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
