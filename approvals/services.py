"""Proposals from agents: create one (checked, decided, recorded, and queued when the rule says auto) and withdraw one.

A person's decisions on a proposal are in approvals/decisions.py, its execution in approvals/execution.py; every
status change goes through approvals/transitions.py with its audit event, in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import notify
from approvals.choices import AWAITING_DECISION, DecisionMode, ProposalStatus
from approvals.decisions import expire_if_due
from approvals.execution import queue_execution
from approvals.freshness import apply_terms, watched_fields, watched_values
from approvals.models import IdempotencyRecord, Proposal
from approvals.policy import Decision, Impact, compute_impact, decide
from approvals.transitions import lock_rows, move
from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import PermanentError, RecordNotFound, TransientError
from connectors.limits import retry_after_header
from connectors.registry import connector_for
from core.errors import IdempotencyConflict, InvalidPayload, InvalidState, NotFound, SystemUnavailable
from core.request_context import current_request_id
from core.tracing import current_traceparent, span
from governance.gate import ProposalScope, Target, check_proposal, ensure_may_act, refuse
from governance.models import Agent

# --- Idempotency ------------------------------------------------------------------------------------------------


def request_fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def idempotent_replay(*, agent: Agent, key: str | None, fingerprint: str) -> IdempotencyRecord | None:
    """The stored first response for this key, or None. The same key with another request is a conflict."""
    if not key:
        return None
    cutoff = timezone.now() - settings.GATEHOUSE_IDEMPOTENCY_TTL
    record = IdempotencyRecord.objects.filter(agent=agent, key=key, created_at__gte=cutoff).first()
    if record is not None and record.request_hash != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was used for a different request; use a new key for a new request."
        )
    return record


def idempotency_records_purge() -> int:
    """Beat job: forget idempotency keys older than GATEHOUSE_IDEMPOTENCY_TTL (and an hour's margin)."""
    cutoff = timezone.now() - settings.GATEHOUSE_IDEMPOTENCY_TTL - timedelta(hours=1)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


# --- Create -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposalRequest:
    system: str
    action: str
    record_id: str
    payload: dict[str, Any]
    reason: str = ""

    @classmethod
    def from_validated(cls, data: dict[str, Any]) -> ProposalRequest:
        """From the proposal serializer's validated data: the same request from the REST API and the MCP tools."""
        return cls(
            system=data["system"],
            action=data["action"],
            record_id=data["record_id"],
            payload=data["payload"],
            reason=data["reason"],
        )


def proposal_create(
    *,
    agent: Agent,
    request: ProposalRequest,
    channel: Channel | str,
    idempotency_key: str | None = None,
    respond: Callable[[Proposal], dict[str, Any]] | None = None,
) -> tuple[Proposal, dict[str, Any] | None]:
    """Check, validate, decide and record a proposal; queue its execution when the rule says auto.

    With an idempotency key, the first response (built by `respond`) is stored with the proposal in one transaction;
    a concurrent request with the same key loses the race and gets that stored response instead of a second proposal.
    Returns the proposal and, for a replay, the stored body.
    """
    fingerprint = request_fingerprint(request.__dict__)
    replayed = _replay(agent=agent, request=request, channel=channel, key=idempotency_key, fingerprint=fingerprint)
    if replayed is not None:
        return replayed
    scope = check_proposal(
        agent,
        system_slug=request.system,
        action_name=request.action,
        record_id=request.record_id,
        payload=request.payload,
        channel=channel,
    )
    record = _current_record(agent=agent, scope=scope, request=request, channel=channel)
    impact = compute_impact(scope.action, request.payload, record)
    step = span("gatehouse.proposal.decide", agent=agent.slug, system=scope.system.slug, action=scope.action.name)
    try:
        with step, transaction.atomic():
            # Decided in the transaction that records it: where the agent's earlier proposals count, decide() holds a
            # lock per agent and system (or record) until the commit, so a proposal made at the same instant counts
            # this one (approvals.limits).
            decision = decide(
                system=scope.system,
                action=scope.action,
                impact=impact,
                agent=agent,
                record_id=request.record_id,
                payload=request.payload,
            )
            step.set(decision=decision.mode, band=decision.band)
            proposal = _record(
                agent=agent,
                request=request,
                channel=channel,
                scope=scope,
                impact=impact,
                decision=decision,
                snapshot=watched_values(scope.action, record),
            )
            step.set(proposal_id=proposal.pk)
            body = respond(proposal) if respond else None
            if idempotency_key:
                IdempotencyRecord.objects.create(
                    agent=agent, key=idempotency_key, request_hash=fingerprint, response_status=201, response_body=body
                )
    except IntegrityError:
        stored = idempotent_replay(agent=agent, key=idempotency_key, fingerprint=fingerprint)
        if stored is None:
            raise
        return Proposal.objects.get(pk=stored.response_body["id"]), stored.response_body
    return proposal, None


def _replay(
    *, agent: Agent, request: ProposalRequest, channel: Channel | str, key: str | None, fingerprint: str
) -> tuple[Proposal, dict[str, Any]] | None:
    """The first answer to this idempotency key, or None for a new request. The kill switch holds for replays too:
    while it is engaged, no call gets a 2xx."""
    try:
        stored = idempotent_replay(agent=agent, key=key, fingerprint=fingerprint)
    except IdempotencyConflict as exc:
        raise refuse(exc, agent=agent, channel=channel, target=Target(detail={"idempotency_key": key})) from None
    if stored is None:
        return None
    proposal = Proposal.objects.select_related("system").get(pk=stored.response_body["id"])
    replay = Target(system=proposal.system, record_id=proposal.record_id, detail={"action": request.action})
    ensure_may_act(agent, channel=channel, target=replay, write=True)
    return proposal, stored.response_body


def _current_record(
    *, agent: Agent, scope: ProposalScope, request: ProposalRequest, channel: Channel | str
) -> dict[str, Any] | None:
    """The record as the system of record has it, when the impact or a precondition needs it; refusals audited."""
    action = scope.action
    if not watched_fields(action) and "record_exists" not in action.preconditions:
        return None  # nothing a decision rests on: the write is judged without the record
    target = scope.target(request.record_id, request.payload)
    try:
        return connector_for(scope.system, agent=agent).read(action.resource.name, request.record_id)
    except RecordNotFound:
        error = InvalidPayload(
            f"No {action.resource.label} {request.record_id} in {scope.system}.",
            errors={"record_id": f"No {action.resource.label} with this id in {scope.system}."},
        )
        raise refuse(error, agent=agent, channel=channel, target=target) from None
    except (TransientError, PermanentError) as exc:
        unavailable = SystemUnavailable(
            f"{scope.system} could not be read to check the proposal: {exc}",
            headers={"Retry-After": retry_after_header(exc)},
        )
        raise refuse(unavailable, agent=agent, channel=channel, target=target) from exc


def _record(
    *,
    agent: Agent,
    request: ProposalRequest,
    channel: Channel | str,
    scope: ProposalScope,
    impact: Impact,
    decision: Decision,
    snapshot: dict[str, Any] | None = None,
) -> Proposal:
    """The proposal row and its events (proposed; auto-approved with its outbox row), in the caller's transaction."""
    now = timezone.now()
    auto = decision.mode == DecisionMode.AUTO
    proposal = Proposal(
        agent=agent,
        system=scope.system,
        action_type=scope.action,
        record_id=request.record_id,
        payload=request.payload,
        reason=request.reason,
        status=ProposalStatus.APPROVED if auto else ProposalStatus.PENDING_APPROVAL,
        channel=str(channel),
        request_id=current_request_id(),
        trace_parent=current_traceparent(),
        record_snapshot=snapshot or {},
        decided_at=now if auto else None,
    )
    apply_terms(proposal, impact, decision, now=now)
    proposal.save(force_insert=True)
    _record_events(proposal, agent=agent, request=request, channel=channel, impact=impact, decision=decision)
    return proposal


def _record_events(
    proposal: Proposal,
    *,
    agent: Agent,
    request: ProposalRequest,
    channel: Channel | str,
    impact: Impact,
    decision: Decision,
) -> None:
    """A new proposal's events: `proposed`, then either `auto_approved` with its outbox row, or (after the commit)
    the e-mail to whoever decides."""
    action = proposal.action_type
    amount = "" if impact.amount is None else f" (impact {impact.amount} {impact.currency})"
    common = {
        "channel": channel,
        "system": proposal.system,
        "resource": action.resource.name,
        "record_id": request.record_id,
        "proposal_id": proposal.pk,
        "decision": proposal.decision,
        "state_before": proposal.record_snapshot or None,
    }
    audit_record(
        verb=Verb.PROPOSED,
        actor=agent,
        input={"action": action.name, "payload": request.payload, "reason": request.reason},
        summary=f"{agent.slug} proposed {action.name} on {action.resource.label} {request.record_id}{amount}.",
        **common,
    )
    if decision.mode == DecisionMode.AUTO:
        audit_record(
            verb=Verb.AUTO_APPROVED, actor=None, summary=f"Auto-approved by rule: {decision.reason}.", **common
        )
        queue_execution(proposal)
    else:
        transaction.on_commit(lambda: notify.notify_awaiting_later(proposal))


# --- Withdraw ---------------------------------------------------------------------------------------------------


def proposal_cancel(*, proposal_id: uuid.UUID | str, agent: Agent, channel: Channel | str) -> Proposal:
    """The agent withdraws its own proposal while it still awaits a decision."""
    ensure_may_act(agent, channel=channel, write=True)
    with transaction.atomic():
        proposal = lock_rows(Proposal.objects.visible_to(agent)).filter(pk=proposal_id).first()
        if proposal is None:
            raise NotFound("No such proposal.")
        expired = expire_if_due(proposal)  # past its maximum age it expires, as for an approval or a rejection
        if not expired:
            if proposal.status not in AWAITING_DECISION:
                raise InvalidState(f"Only a pending proposal can be cancelled; this one is {proposal.status}.")
            if proposal.decided_by_id:
                raise InvalidState(
                    "This proposal was already approved and awaits its second review; it cannot be withdrawn."
                )
            move(
                proposal,
                ProposalStatus.CANCELLED,
                verb=Verb.CANCELLED,
                actor=agent,
                channel=channel,
                summary=f"{agent.slug} withdrew its proposal {proposal.action_type.name} on {proposal.record_id}.",
            )
    if expired:  # raised after the block, so the expiry it recorded is kept
        raise InvalidState("This proposal expired before it was decided; there is nothing left to withdraw.")
    return proposal
