"""Proposal lifecycle: create, decide, cancel, execute. Transitions happen only here, under a row lock, each with
exactly one audit event in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jsonschema
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from approvals import notify
from approvals.choices import AWAITING_DECISION, TERMINAL_STATUSES, DecisionMode, ProposalStatus, ReviewOutcome
from approvals.models import IdempotencyRecord, OutboxMessage, Proposal
from approvals.policy import compute_impact, decide
from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import PermanentError, RecordNotFound, TransientError
from connectors.limits import CallDeferred, retry_after_header
from connectors.registry import connector_for
from core.errors import (
    IdempotencyConflict,
    InvalidPayload,
    InvalidState,
    NotFound,
    SystemUnavailable,
)
from governance.choices import AgentStatus, WriteMode
from governance.gate import Target, ensure_may_act, find_system, refuse, writable_action
from governance.models import Agent, GlobalSwitch

logger = logging.getLogger(__name__)


class InvalidTransition(Exception):
    """The proposal is not in a state that allows this step (already decided, already executed, …)."""


class NotYourDecision(Exception):
    """The person may not decide this proposal (not its approver, or separation of duties)."""


def _audit_proposal(proposal: Proposal, **fields: Any):
    """An audit event about `proposal`, with its system, resource, record and id filled in."""
    return audit_record(
        system=proposal.system,
        resource=proposal.action_type.resource.name,
        record_id=proposal.record_id,
        proposal_id=proposal.pk,
        agent=proposal.agent,
        **fields,
    )


def _transition(proposal: Proposal, status: str, **audit: Any):
    """Move a proposal (locked by the caller) to `status` and write that transition's audit event, in the caller's
    transaction: a status saved without its event, or an event without its status, cannot happen. (An approval that
    is the first of two, a review, and a claim retaken after a lease save and audit by themselves: whether there is
    a new status, or an event, depends on more than the move.)"""
    proposal.status = status
    proposal.save()
    return _audit_proposal(proposal, **audit)


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


# --- Create -----------------------------------------------------------------------------------------------------


def _schema_errors(schema: dict[str, Any], payload: Any) -> dict[str, str]:
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors: dict[str, str] = {}
    for error in sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path)):
        path = ".".join(["payload", *(str(part) for part in error.absolute_path)])
        if error.validator == "additionalProperties":
            extra = sorted(set(payload) - set(schema.get("properties", {}))) if isinstance(payload, dict) else []
            for name in extra:
                errors.setdefault(f"payload.{name}", "Unknown field: this action does not take it.")
            continue
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            errors.setdefault(f"payload.{missing}" if missing else path, "This field is required.")
            continue
        errors.setdefault(path, error.message[:300])
    # PostgreSQL's jsonb cannot hold NUL (\u0000): refuse it here rather than fail when the proposal is stored.
    stack: list[tuple[Any, str]] = [(payload, "payload")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            errors.setdefault(path, "Null characters are not allowed.")
        elif isinstance(item, dict):
            for key, value in item.items():
                if "\x00" in str(key):
                    errors.setdefault(f"{path}.{key}", "Null characters are not allowed.")
                stack.append((value, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((value, f"{path}.{index}") for index, value in enumerate(item))
    return errors


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
    try:
        stored = idempotent_replay(agent=agent, key=idempotency_key, fingerprint=fingerprint)
    except IdempotencyConflict as exc:
        raise refuse(
            exc, agent=agent, channel=channel, target=Target(detail={"idempotency_key": idempotency_key})
        ) from None
    if stored is not None:
        proposal = Proposal.objects.select_related("system").get(pk=stored.response_body["id"])
        # The kill switch holds for replays too: while it is engaged, no call gets a 2xx.
        replay = Target(system=proposal.system, record_id=proposal.record_id, detail={"action": request.action})
        ensure_may_act(agent, channel=channel, target=replay, write=True)
        return proposal, stored.response_body

    try:
        system = find_system(request.system)
    except NotFound as exc:
        raise refuse(exc, agent=agent, channel=channel, target=Target(detail={"system": request.system})) from None
    target = Target(system=system, record_id=request.record_id, detail={"action": request.action})
    ensure_may_act(agent, channel=channel, target=target, write=True)
    action = writable_action(agent, system, request.action, channel=channel, record_id=request.record_id)
    target = Target(
        system=system,
        resource=action.resource.name,
        record_id=request.record_id,
        detail={"action": action.name, "payload": request.payload},
    )
    errors = _schema_errors(action.payload_schema, request.payload)
    if errors:
        raise refuse(
            InvalidPayload(f"The payload does not fit {action.name}.", errors=errors),
            agent=agent,
            channel=channel,
            target=target,
        )

    record: dict[str, Any] | None = None
    needs_record = action.impact_kind == "delta" or "record_exists" in action.preconditions
    if needs_record:
        try:
            record = connector_for(system).read(action.resource.name, request.record_id)
        except RecordNotFound:
            raise refuse(
                InvalidPayload(
                    f"No {action.resource.label} {request.record_id} in {system}.",
                    errors={"record_id": f"No {action.resource.label} with this id in {system}."},
                ),
                agent=agent,
                channel=channel,
                target=target,
            ) from None
        except (TransientError, PermanentError) as exc:
            raise refuse(
                SystemUnavailable(
                    f"{system} could not be read to check the proposal: {exc}",
                    headers={"Retry-After": retry_after_header(exc)},
                ),
                agent=agent,
                channel=channel,
                target=target,
            ) from exc

    impact = compute_impact(action, request.payload, record)
    decision = decide(system=system, action=action, impact=impact)
    snapshot_fields = list(
        (action.operation or {}).get("fields") or ([action.impact_field] if action.impact_field else [])
    )
    snapshot = {name: record.get(name) for name in snapshot_fields} if record else {}

    try:
        with transaction.atomic():
            proposal = _record_proposal(
                agent=agent,
                request=request,
                channel=channel,
                action=action,
                system=system,
                impact=impact,
                decision=decision,
                snapshot=snapshot,
            )
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


def _record_proposal(*, agent, request, channel, action, system, impact, decision, snapshot) -> Proposal:
    now = timezone.now()
    auto = decision.mode == DecisionMode.AUTO
    proposal = Proposal.objects.create(
        agent=agent,
        system=system,
        action_type=action,
        record_id=request.record_id,
        payload=request.payload,
        reason=request.reason,
        status=ProposalStatus.APPROVED if auto else ProposalStatus.PENDING_APPROVAL,
        channel=str(channel),
        request_id=_request_id(),
        impact_amount=impact.amount,
        impact_currency=impact.currency,
        mode=decision.mode,
        decision={**decision.as_json(), "impact_basis": impact.basis},
        rule=decision.rule,
        approver=decision.approver,
        approver_group=decision.approver_group,
        review_group=decision.review_group,
        review_timing=decision.review_timing,
        review_within=decision.review_within,
        sla_due_at=now + decision.sla if decision.sla and not auto else None,
        expires_at=now + decision.max_age if not auto else None,
        record_snapshot=snapshot,
        decided_at=now if auto else None,
    )
    amount = "" if impact.amount is None else f" (impact {impact.amount} {impact.currency})"
    common = {
        "channel": channel,
        "system": system,
        "resource": action.resource.name,
        "record_id": request.record_id,
        "proposal_id": proposal.pk,
        "decision": proposal.decision,
        "state_before": snapshot or None,
    }
    audit_record(
        verb=Verb.PROPOSED,
        actor=agent,
        input={"action": action.name, "payload": request.payload, "reason": request.reason},
        summary=f"{agent.slug} proposed {action.name} on {action.resource.label} {request.record_id}{amount}.",
        **common,
    )
    if not auto:
        transaction.on_commit(lambda: notify.notify_awaiting(proposal))
    if auto:
        audit_record(
            verb=Verb.AUTO_APPROVED,
            actor=None,
            summary=f"Auto-approved by rule: {decision.reason}.",
            **common,
        )
        _queue_execution(proposal)
    return proposal


def _request_id() -> str:
    from core.request_context import current_request_id

    return current_request_id()


# --- Decide -----------------------------------------------------------------------------------------------------


def may_decide(user, proposal: Proposal) -> str | None:
    """None when `user` may approve or reject the proposal; otherwise the reason they may not."""
    if not user.is_active:
        return "your account is inactive"
    if proposal.approver_id and proposal.approver_id != user.pk:
        return f"it is assigned to {proposal.approver.get_username()}"
    if not proposal.approver_id:
        if proposal.approver_group_id is None:
            return "no approver is assigned"
        if not user.groups.filter(pk=proposal.approver_group_id).exists():
            return f"you are not in the {proposal.approver_group.name} group"
    rule = proposal.rule
    if (rule is None or rule.owner_may_not_approve) and proposal.agent.owner_id == user.pk:
        return f"you own the agent {proposal.agent.slug} (separation of duties)"
    return None


# Lock the proposal row only, and only against other writers of it (FOR NO KEY UPDATE). Without `of`, PostgreSQL
# would also lock the joined system and agent rows FOR UPDATE, and an audit insert referencing them (waiting on our
# lock while holding the audit chain's lock, which we wait for next) would deadlock with us.
_LOCK = {"of": ("self",), "no_key": True}


def _locked(proposal_id: uuid.UUID | str) -> Proposal:
    related = ("system", "action_type__resource", "agent")
    return Proposal.objects.select_for_update(**_LOCK).select_related(*related).get(pk=proposal_id)


def _audit_refused_decision(proposal: Proposal, *, user, channel: Channel | str, step: str, refusal: str) -> None:
    _audit_proposal(
        proposal,
        verb=Verb.DENIED,
        actor=user,
        channel=channel,
        outcome="not_your_decision",
        summary=f"{user.get_username()} may not {step} this proposal: {refusal}.",
    )


def proposal_approve(*, proposal_id, user, channel: Channel | str, comment: str = "") -> Proposal:
    """Record an approval; queue execution once the commit lands (or a manual task on a propose-only system).

    Two approvers racing: the row lock makes the second one see a decided proposal. A refusal is audited as `denied`,
    and NotYourDecision is raised only after the block has committed, so the exception does not roll the event back.
    """
    with transaction.atomic():
        proposal = _locked(proposal_id)
        expired = _expire_if_due(proposal)
        if not expired:
            _require_awaiting(proposal)
            refusal = may_decide(user, proposal)
            if refusal:
                _audit_refused_decision(proposal, user=user, channel=channel, step="approve", refusal=refusal)
            else:
                _approve(proposal, user=user, channel=channel, comment=comment)
    if expired:
        raise InvalidTransition("This proposal expired before it was decided.")
    if refusal:
        raise NotYourDecision(f"You may not approve this proposal: {refusal}.")
    return proposal


def _require_awaiting(proposal: Proposal) -> None:
    if proposal.status not in AWAITING_DECISION:
        raise InvalidTransition(f"This proposal is already {proposal.get_status_display().lower()}.")
    if proposal.decided_by_id:
        raise InvalidTransition(
            f"{proposal.decided_by.get_username()} already approved this proposal; it awaits the second review."
        )


def _expire_if_due(proposal: Proposal) -> bool:
    """Past its maximum age by the database clock: expire it now, so an approval racing the expiry job cannot win."""
    if proposal.status not in AWAITING_DECISION or proposal.expires_at is None:
        return False
    if not Proposal.objects.filter(pk=proposal.pk, expires_at__lte=Now()).exists():
        return False
    _transition(
        proposal,
        ProposalStatus.EXPIRED,
        verb=Verb.EXPIRED,
        actor=None,
        channel=Channel.TASK,
        summary=f"{proposal.action_type.name} on {proposal.record_id} expired undecided "
        f"(maximum age reached at {proposal.expires_at:%Y-%m-%d %H:%M} UTC).",
    )
    return True


def _approve(proposal: Proposal, *, user, channel: Channel | str, comment: str) -> None:
    proposal.decided_by, proposal.decided_at, proposal.decision_comment = user, timezone.now(), comment
    dual = proposal.mode == DecisionMode.DUAL
    if dual:
        proposal.review_due_at = timezone.now() + (proposal.review_within or timedelta(hours=24))
    # Dual with review before execution: the first of two approvals; the proposal keeps waiting for the reviewer.
    first_of_two = dual and proposal.review_timing == "before"
    manual = not first_of_two and proposal.system.write_mode == WriteMode.PROPOSE_ONLY
    if not first_of_two:
        proposal.status = ProposalStatus.MANUAL_TASK if manual else ProposalStatus.APPROVED
    proposal.save()
    if first_of_two:
        tail = f"; a second reviewer from {proposal.review_group} must review it before it executes."
    elif manual:
        tail = " (a manual task: the system is propose-only)."
    else:
        tail = "."
    _audit_proposal(
        proposal,
        verb=Verb.APPROVED,
        actor=user,
        channel=channel,
        decision=proposal.decision,
        input={"comment": comment} if comment else None,
        summary=f"{user.get_username()} approved {proposal.action_type.name} on {proposal.record_id}{tail}",
    )
    if not first_of_two and not manual:
        _queue_execution(proposal)
    if dual:
        transaction.on_commit(lambda: notify.notify_review(proposal))


def proposal_reject(*, proposal_id, user, channel: Channel | str, reason: str) -> Proposal:
    """Record a rejection with its reason, which the agent sees. Refusals are audited like approvals'."""
    if not reason.strip():
        raise ValueError("A rejection needs a reason.")
    refusal = None
    with transaction.atomic():
        proposal = _locked(proposal_id)
        expired = _expire_if_due(proposal)  # past its maximum age it expires, whoever acts on it, as for an approval
        if not expired:
            if proposal.status not in AWAITING_DECISION:
                raise InvalidTransition(f"This proposal is already {proposal.get_status_display().lower()}.")
            if proposal.decided_by_id:  # dual, first approval given: now only the second reviewer may stop it
                raise InvalidTransition("This proposal was approved and awaits the second review; flag it there.")
            refusal = may_decide(user, proposal)
            if refusal:
                _audit_refused_decision(proposal, user=user, channel=channel, step="reject", refusal=refusal)
            else:
                proposal.decided_by, proposal.decided_at, proposal.decision_comment = user, timezone.now(), reason
                _transition(
                    proposal,
                    ProposalStatus.REJECTED,
                    verb=Verb.REJECTED,
                    actor=user,
                    channel=channel,
                    input={"reason": reason},
                    summary=f"{user.get_username()} rejected {proposal.action_type.name} on {proposal.record_id}: "
                    f"{reason}",
                )
    if expired:
        raise InvalidTransition("This proposal expired before it was decided.")
    if refusal:
        raise NotYourDecision(f"You may not reject this proposal: {refusal}.")
    return proposal


def may_review(user, proposal: Proposal) -> str | None:
    """None when `user` may give the second review; otherwise why not (separation of duties)."""
    if not user.is_active:
        return "your account is inactive"
    if proposal.decided_by_id == user.pk:
        return "you approved it: the second reviewer must be someone else"
    if proposal.review_group_id is None or not user.groups.filter(pk=proposal.review_group_id).exists():
        group = proposal.review_group.name if proposal.review_group_id else "no review group"
        return f"you are not in the review group ({group})"
    rule = proposal.rule
    if (rule is None or rule.owner_may_not_approve) and proposal.agent.owner_id == user.pk:
        return f"you own the agent {proposal.agent.slug} (separation of duties)"
    return None


def proposal_review(*, proposal_id, user, channel: Channel | str, flag: bool, comment: str = "") -> Proposal:
    """The second reviewer's verdict on a dual-approval proposal.

    Before execution: fine → approved and queued; flagged → rejected. After execution: the verdict is recorded, and a
    flagged action is offered for reversal.
    """
    if flag and not comment.strip():
        raise ValueError("Say why you flag it.")
    with transaction.atomic():
        proposal = _locked(proposal_id)
        # Review before execution is the second half of the approval: past the maximum age it expires, like approve.
        expired = proposal.awaiting_review and _expire_if_due(proposal)
        if not expired:
            if not proposal.awaiting_review:
                raise InvalidTransition("This proposal does not await a second review.")
            refusal = may_review(user, proposal)
            if refusal:
                _audit_refused_decision(proposal, user=user, channel=channel, step="review", refusal=refusal)
            else:
                _review(proposal, user=user, channel=channel, flag=flag, comment=comment)
    if expired:
        raise InvalidTransition("This proposal expired before it was reviewed.")
    if refusal:
        raise NotYourDecision(f"You may not review this proposal: {refusal}.")
    return proposal


def _review(proposal: Proposal, *, user, channel: Channel | str, flag: bool, comment: str) -> None:
    proposal.reviewed_by, proposal.reviewed_at, proposal.review_comment = user, timezone.now(), comment
    proposal.review_outcome = ReviewOutcome.FLAGGED if flag else ReviewOutcome.REVIEWED
    before_execution = proposal.status in AWAITING_DECISION
    manual = before_execution and proposal.system.write_mode == WriteMode.PROPOSE_ONLY
    if before_execution:
        if flag:
            proposal.status = ProposalStatus.REJECTED
            proposal.decision_comment = comment
        else:  # as in _approve: a propose-only system gets a manual task, never a queued write
            proposal.status = ProposalStatus.MANUAL_TASK if manual else ProposalStatus.APPROVED
    proposal.save()
    what = f"{proposal.action_type.name} on {proposal.record_id}"
    if flag:
        summary = f"{user.get_username()} flagged {what}" + (
            f" before execution, so it will not run: {comment}" if before_execution else f" for reversal: {comment}"
        )
    else:
        now = "a manual task (the system is propose-only)" if manual else "approved for execution"
        summary = f"{user.get_username()} reviewed {what} (second review)" + (
            f"; it is now {now}." if before_execution else "."
        )
    _audit_proposal(
        proposal,
        verb=Verb.FLAGGED if flag else Verb.REVIEWED,
        actor=user,
        channel=channel,
        input={"comment": comment} if comment else None,
        summary=summary,
    )
    if before_execution and not flag and not manual:
        _queue_execution(proposal)


def proposals_escalate_and_expire() -> tuple[int, int]:
    """Beat job. Past the SLA (database clock): escalated, never approved. Past the maximum age: expired.

    Each row is re-checked under its lock, so a decision made meanwhile wins and nothing moves twice.
    """
    escalated = expired = 0
    # decided_by set: a dual approval already approved, now on the second review's own clock (review_due_at).
    due = Proposal.objects.filter(status=ProposalStatus.PENDING_APPROVAL, decided_by__isnull=True, sla_due_at__lt=Now())
    for proposal_id in due.values_list("pk", flat=True)[:1000]:
        with transaction.atomic():
            proposal = (
                due.select_for_update(skip_locked=True, **_LOCK)
                .select_related("system", "action_type__resource", "agent")
                .filter(pk=proposal_id)
                .first()
            )
            if proposal is None:
                continue
            _transition(
                proposal,
                ProposalStatus.ESCALATED,
                verb=Verb.ESCALATED,
                actor=None,
                channel=Channel.TASK,
                summary=f"{proposal.action_type.name} on {proposal.record_id} passed its SLA "
                f"({proposal.sla_due_at:%Y-%m-%d %H:%M} UTC) undecided: escalated to the on-call contact.",
            )
            transaction.on_commit(lambda proposal=proposal: notify.notify_escalated(proposal))
            escalated += 1
    old = Proposal.objects.filter(status__in=AWAITING_DECISION, expires_at__lt=Now())
    for proposal_id in old.values_list("pk", flat=True)[:1000]:
        with transaction.atomic():
            proposal = (
                Proposal.objects.select_for_update(skip_locked=True, **_LOCK)
                .select_related("system", "action_type__resource", "agent")
                .filter(pk=proposal_id)
                .first()
            )
            if proposal is not None and _expire_if_due(proposal):
                expired += 1
    return escalated, expired


def may_complete(user, proposal: Proposal) -> bool:
    """Who records a manual task: whoever approved it, the approver group, operators, superusers."""
    from governance.querysets import sees_everything

    if not user.is_active:
        return False
    if proposal.decided_by_id == user.pk or proposal.reviewed_by_id == user.pk or sees_everything(user):
        return True
    return bool(proposal.approver_group_id and user.groups.filter(pk=proposal.approver_group_id).exists())


def proposal_manual_complete(*, proposal_id, user, channel: Channel | str, done: bool, note: str = "") -> Proposal:
    """A person reports the manual task of a propose-only system as performed (executed) or not possible (failed)."""
    if not done and not note.strip():
        raise ValueError("Say why the task could not be done.")
    with transaction.atomic():
        proposal = _locked(proposal_id)
        if proposal.status != ProposalStatus.MANUAL_TASK:
            raise InvalidTransition(f"This proposal is {proposal.get_status_display().lower()}, not a manual task.")
        if not may_complete(user, proposal):
            raise NotYourDecision("Only its approver, the approver group or an operator records a manual task.")
        if done:
            proposal.executed_at = timezone.now()
            proposal.state_after = {"performed_by": user.get_username(), "note": note}
        else:
            proposal.failure_reason = note
        what = f"{proposal.action_type.name} on {proposal.record_id} in {proposal.system}"
        _transition(
            proposal,
            ProposalStatus.EXECUTED if done else ProposalStatus.FAILED,
            verb=Verb.EXECUTED if done else Verb.FAILED,
            actor=user,
            channel=channel,
            outcome="ok" if done else "failed",
            input={"note": note} if note else None,
            summary=f"{user.get_username()} performed {what} by hand" + (f": {note}" if note else ".")
            if done
            else f"{user.get_username()} could not perform {what}: {note}",
        )
    return proposal


def proposal_current_record(*, proposal: Proposal, user) -> tuple[dict[str, Any] | None, str]:
    """The record as it is now in the system, for the person deciding; the read is audited like an agent's.

    Returns (record, "") or (None, why it could not be read).
    """
    resource = proposal.action_type.resource
    try:
        record = connector_for(proposal.system).read(resource.name, proposal.record_id)
    except (TransientError, PermanentError) as exc:
        return None, str(exc)
    _audit_proposal(
        proposal,
        verb=Verb.READ,
        actor=user,
        channel=Channel.ADMIN,
        input={"fields": sorted(record)},
        summary=f"{user.get_username()} looked at {resource.label} {proposal.record_id} to decide a proposal.",
    )
    return record, ""


def proposal_cancel(*, proposal_id, agent: Agent, channel: Channel | str) -> Proposal:
    """The agent withdraws its own proposal while it still awaits a decision."""
    ensure_may_act(agent, channel=channel, write=True)
    with transaction.atomic():
        proposal = Proposal.objects.visible_to(agent).select_for_update(**_LOCK).filter(pk=proposal_id).first()
        if proposal is None:
            raise NotFound("No such proposal.")
        expired = _expire_if_due(proposal)  # past its maximum age it expires, as for an approval or a rejection
        if not expired:
            if proposal.status not in AWAITING_DECISION:
                raise InvalidState(f"Only a pending proposal can be cancelled; this one is {proposal.status}.")
            if proposal.decided_by_id:
                raise InvalidState(
                    "This proposal was already approved and awaits its second review; it cannot be withdrawn."
                )
            _transition(
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


# --- Outbox -----------------------------------------------------------------------------------------------------


# Redis serves a queue's priority lists in order, 0 first (kombu's emulation; the filesystem broker has none). A write
# a person approved, who is waiting to see it done, goes ahead of auto-approved ones, which under load queue for
# seconds (bench/reliability.py). Reversals and drills publish without a priority: 0, first too.
PRIORITY_DECIDED_BY_A_PERSON = 0
PRIORITY_AUTO = 3


def execution_priority(proposal: Proposal) -> int:
    return PRIORITY_DECIDED_BY_A_PERSON if proposal.decided_by_id else PRIORITY_AUTO


def _queue_execution(proposal: Proposal) -> None:
    """Same transaction as the approval: the outbox row. After the commit: publish it."""
    message = OutboxMessage.objects.create(proposal=proposal)
    transaction.on_commit(lambda: _publish([message]))


def outbox_publish(*, message_ids: list[int]) -> int:
    """Hand outbox messages to Celery. A broker that is down is noted, not raised: the sweeper tries again."""
    return _publish(list(OutboxMessage.objects.filter(pk__in=message_ids).select_related("proposal")))


def _publish(messages: list[OutboxMessage]) -> int:
    from approvals.tasks import execute_proposal

    published = 0
    for message in messages:
        now = timezone.now()
        try:
            execute_proposal.apply_async(
                args=[str(message.proposal_id)], retry=False, priority=execution_priority(message.proposal)
            )
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


def outbox_sweep(now=None) -> int:
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
    ids = set()
    for queryset in (unpublished, lost, abandoned, waiting_retry):
        ids.update(queryset.values_list("pk", flat=True)[:500])
    return outbox_publish(message_ids=sorted(ids)) if ids else 0


# --- Execute ----------------------------------------------------------------------------------------------------


def execution_lease() -> timedelta:
    """A claim older than this belongs to a worker that died: the hard time limit has killed any task by then."""
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 5)


def _hold_reason(proposal: Proposal) -> str | None:
    """The kill switch, checked again just before calling the system."""
    if proposal.agent.status != AgentStatus.ACTIVE:
        return f"agent {proposal.agent.slug} is disabled"
    engaged, reason = GlobalSwitch.is_engaged()
    if engaged:
        return f"the global stop is engaged: {reason}"
    if proposal.system.writes_frozen:
        return f"writes to {proposal.system} are frozen"
    return None


@dataclass(frozen=True)
class Claim:
    """What one delivery of an execution task found: the proposal to execute, or why there is nothing to do."""

    proposal: Proposal | None
    why_not: str = ""
    duplicate: bool = False  # a second delivery of work already taken up or finished (counted on the proposal)


def proposal_claim(*, proposal_id) -> Proposal | None:
    """Take up a proposal for execution (waiting for a concurrent claim or record to finish). None when there is
    nothing to do: another worker holds a live claim, it is finished, on hold, or not approved."""
    return _claim(proposal_id).proposal


def _claim(proposal_id) -> Claim:
    """Claim under the row lock, or say why not. A duplicate delivery (the proposal is executing under a live claim,
    or finished) is counted on the proposal and logged: not a transition, so no audit event. A delivery that finds
    the proposal on hold is not one: the hold was audited when the kill switch took it."""
    now = timezone.now()
    with transaction.atomic():
        # Another transaction may hold the row (a concurrent delivery claiming it, the worker recording its result,
        # the kill switch): those are short, so wait for it and judge this delivery by what it left.
        proposal = (
            Proposal.objects.select_related("system", "action_type__resource", "agent")
            .select_for_update(**_LOCK)
            .filter(pk=proposal_id)
            .first()
        )
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
            proposal.held_from = proposal.status
            _transition(
                proposal,
                ProposalStatus.ON_HOLD,
                verb=Verb.HELD,
                actor=None,
                channel=Channel.TASK,
                outcome="on_hold",
                summary=f"Execution of {proposal.action_type.name} on {proposal.record_id} put on hold: {hold}.",
            )
            return Claim(None, why_not=f"put on hold: {hold}")
        first_claim = proposal.status == ProposalStatus.APPROVED
        proposal.status = ProposalStatus.EXECUTING
        proposal.claimed_at = now
        proposal.attempts += 1
        proposal.save()
        if first_claim:
            _audit_proposal(
                proposal,
                verb=Verb.EXECUTING,
                actor=None,
                channel=Channel.TASK,
                summary=f"Executing {proposal.action_type.name} on {proposal.record_id} in {proposal.system}.",
            )
    return Claim(proposal)


def _not_claimable(proposal: Proposal, now) -> Claim:
    """Inside the claim's transaction, the row locked: count a duplicate, or say why this delivery does nothing."""
    if proposal.status == ProposalStatus.ON_HOLD:
        logger.info("execution of proposal %s suppressed: on hold (kill switch)", proposal.pk)
        return Claim(None, why_not="on hold by the kill switch")
    if proposal.status == ProposalStatus.EXECUTING:
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
def proposal_record_executed(*, proposal_id, before: dict, after: dict, compensation: dict) -> Proposal:
    proposal = _locked(proposal_id)
    if proposal.status != ProposalStatus.EXECUTING:
        raise InvalidTransition(f"Cannot record an execution of a {proposal.status} proposal.")
    proposal.executed_at = timezone.now()
    proposal.claimed_at = None
    proposal.state_before, proposal.state_after, proposal.compensation = before, after, compensation
    change = ", ".join(f"{name} {before.get(name)} → {value}" for name, value in after.items()) if before else ""
    _transition(
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
def proposal_record_failure(*, proposal_id, reason: str) -> Proposal:
    proposal = _locked(proposal_id)
    if proposal.status != ProposalStatus.EXECUTING:
        raise InvalidTransition(f"Cannot record a failure of a {proposal.status} proposal.")
    proposal.claimed_at = None
    proposal.failure_reason = reason[:2000]
    _transition(
        proposal,
        ProposalStatus.FAILED,
        verb=Verb.FAILED,
        actor=None,
        channel=Channel.TASK,
        outcome="failed",
        summary=f"{proposal.action_type.name} on {proposal.record_id} failed after {proposal.attempts} attempt(s): "
        f"{reason[:300]}",
    )
    transaction.on_commit(lambda: _tell_owner_of_failure(proposal))
    return proposal


def _tell_owner_of_failure(proposal: Proposal) -> None:
    from django.core.mail import send_mail

    recipients = [address for address in (proposal.agent.owner.email, proposal.system.oncall_contact) if address]
    if not recipients:
        return
    try:
        send_mail(
            subject=f"[Gatehouse] {proposal.action_type.name} on {proposal.system} {proposal.record_id} failed",
            message=f"{proposal.failure_reason}\n\n{settings.BASE_URL}/admin/approvals/proposal/{proposal.pk}/change/",
            from_email=None,
            recipient_list=recipients,
        )
    except Exception:  # a mail server down must not undo or repeat the failure record
        logger.exception("could not notify about failed proposal %s", proposal.pk)


def _release_for_retry(proposal_id, *, not_attempted: bool = False) -> None:
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
    status: str  # executed | failed | retry | suppressed
    retry_in: float | None = None
    detail: str = ""
    duplicate: bool = False  # suppressed as a duplicate delivery (not: on hold, or put on hold now)


def proposal_execute(*, proposal_id) -> ExecutionOutcome:
    """Claim, call the system with the proposal id as idempotency key, record the result.

    Transient errors release the claim and ask for a retry until the attempts run out; permanent ones fail at once.
    A call the system's rate limit or open breaker holds back (connectors/limits.py) is not an attempt: the claim is
    given back and the task comes back when the limit says.
    """
    claim = _claim(proposal_id)
    proposal = claim.proposal
    if proposal is None:
        return ExecutionOutcome("suppressed", detail=claim.why_not, duplicate=claim.duplicate)
    if proposal.attempts > settings.GATEHOUSE_EXECUTION_MAX_ATTEMPTS:
        reason = f"{proposal.attempts - 1} attempts did not finish (workers died or timed out)"
        proposal_record_failure(proposal_id=proposal.pk, reason=reason)
        return ExecutionOutcome("failed", detail=reason)
    try:
        result = connector_for(proposal.system).execute(
            proposal.action_type, proposal.record_id, proposal.payload, idempotency_key=str(proposal.pk)
        )
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
    proposal_record_executed(
        proposal_id=proposal.pk, before=result.before, after=result.after, compensation=result.compensation
    )
    return ExecutionOutcome("executed")
