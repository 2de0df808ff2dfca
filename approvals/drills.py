"""Rollback drills: prove on a staging system that Gatehouse can undo what it writes, and keep the proof.

A drill takes one record of a staging system (`System.drill_record_id`), notes it, writes to it once with each
reversible action (through the real execution path, as the built-in agent `gatehouse-drill`), reverses those writes
with the real reversal machinery, reads the record again and compares. The drill is recorded with its result and
duration; the readiness checklist asks for a passed one.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals.choices import DecisionMode, ProposalStatus
from approvals.models import Drill, Proposal
from approvals.reversal import ReversalRefused, reversal_plan, reversal_report, reversal_run_here
from approvals.services import _audit_proposal, proposal_execute
from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import ConnectorError
from connectors.registry import connector_for
from governance.choices import AgentStatus, Compensation, Environment
from governance.models import Agent, System

DRILL_AGENT = "gatehouse-drill"
# Fields a system changes on every write: not part of "the record is back".
VOLATILE_FIELDS = frozenset({"version", "updated_at", "modified_at", "etag"})
RUN_TIMEOUT = 60.0  # seconds for the reversal rounds of a drill (it retries a flaky staging system meanwhile)


class DrillRefused(Exception):
    """The drill cannot run on this system (not staging, no drill record, nothing reversible)."""


def drill_target(system: System) -> System:
    """The staging system to drill: the system itself when it is staging, else its staging twin."""
    if system.environment == Environment.STAGING:
        return system
    if system.staging_twin_id:
        return system.staging_twin
    raise DrillRefused(f"{system} is a production system without a staging twin: drills only write to staging.")


def _drill_agent(system: System) -> Agent:
    agent, _ = Agent.objects.get_or_create(
        slug=DRILL_AGENT,
        defaults={
            "name": "Gatehouse rollback drills",
            "description": "Built in: makes the writes of rollback drills on staging systems. It has no tokens and "
            "no grants, so no one can call Gatehouse as it.",
            "owner": system.owner,
        },
    )
    if agent.status != AgentStatus.ACTIVE:
        raise DrillRefused(f"The drill agent {DRILL_AGENT} is disabled: {agent.disabled_reason}")
    return agent


def drill_payload(action, record: dict[str, Any], *, stamp: str) -> dict[str, Any] | None:
    """A harmless, valid change for each field of the action's schema; None when one cannot be made up."""
    properties = (action.payload_schema or {}).get("properties", {})
    payload: dict[str, Any] = {}
    for name, spec in properties.items():
        current = record.get(name)
        if "enum" in spec:
            others = [value for value in spec["enum"] if value != current]
            if not others:
                return None
            payload[name] = others[0]
        elif spec.get("type") in ("number", "integer"):
            payload[name] = (current or 0) + 1
        elif spec.get("type") == "string":
            try:
                payload[name] = f"{Decimal(str(current)) + 1:.2f}" if current is not None else None
            except (InvalidOperation, ValueError):
                payload[name] = None
            if payload[name] is None:
                payload[name] = f"Rollback drill {stamp}"[: spec.get("maxLength", 200)]
        else:
            return None
    return payload or None


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name not in VOLATILE_FIELDS}


def rollback_drill(*, system: System, user=None, channel: Channel | str) -> Drill:
    """Run a drill on `system` (or its staging twin) and record it, passed or failed."""
    target = drill_target(system)
    if not target.drill_record_id:
        raise DrillRefused(f"Set a drill record on {target} (a record drills may write to) first.")
    actions = list(
        target.action_types.exclude(compensation=Compensation.NONE).select_related("resource").order_by("name")
    )
    if not actions:
        raise DrillRefused(f"{target} has no reversible action to drill.")
    agent = _drill_agent(target)
    started = timezone.now()
    clock = time.monotonic()
    drill = Drill.objects.create(system=target, performed_by=user, channel=str(channel))
    report: list[dict[str, Any]] = []
    failure = ""
    record_id = target.drill_record_id
    try:
        connector = connector_for(target)
        resource = actions[0].resource.name
        before = connector.read(resource, record_id)
        for action in actions:
            payload = drill_payload(action, connector.read(resource, record_id), stamp=f"{started:%Y-%m-%d %H:%M}")
            if payload is None:
                report.append({"action": action.name, "skipped": "no harmless payload can be made for it"})
                continue
            proposal = _drill_proposal(agent, target, action, record_id, payload, drill=drill, channel=channel)
            outcome = proposal_execute(proposal_id=proposal.pk)
            report.append(
                {"action": action.name, "payload": payload, "proposal": str(proposal.pk), **_outcome(outcome)}
            )
            if outcome.status != "executed":
                failure = f"{action.name} did not execute: {outcome.detail or outcome.status}"
                break
        reversal = reversal_plan(
            agent=agent,
            system=target,
            hours=(timezone.now() - started).total_seconds() / 3600 + 1 / 60,
            user=user,
            channel=channel,
            reason=f"rollback drill {drill.pk}",
        )
        drill.reversal = reversal
        reversal = reversal_run_here(reversal_id=reversal.pk, timeout=RUN_TIMEOUT)
        steps = reversal_report(reversal)
        for step in steps["done"]:
            _mark(report, step.proposal_id, reversed=True)
        for key in ("held", "failed", "remaining", "not_reversible", "skipped"):
            for step in steps[key]:
                _mark(report, step.proposal_id, reversed=False, why=f"{key}: {step.last_error or step.explanation}")
        after = connector.read(resource, record_id)
        differences = {
            name: {"before": _comparable(before).get(name), "after": value}
            for name, value in _comparable(after).items()
            if _comparable(before).get(name) != value
        }
        if not failure and any(not entry.get("reversed", "skipped" in entry) for entry in report):
            failure = "not every drill write was reversed"
        if not failure and differences:
            failure = "the record is not back as it was: " + ", ".join(sorted(differences))
        report.append({"record": record_id, "back_as_before": not differences, "differences": differences})
    except (ConnectorError, ReversalRefused) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    duration = timedelta(seconds=time.monotonic() - clock)
    drill.passed = not failure
    drill.failure = failure
    drill.report = report
    drill.finished_at = timezone.now()
    drill.duration = duration
    drill.save()
    audit_record(
        verb=Verb.DRILL,
        actor=user,
        channel=channel,
        system=target,
        record_id=record_id,
        input={"drill": drill.pk, "reversal": drill.reversal_id},
        outcome="passed" if drill.passed else "failed",
        summary=f"Rollback drill on {target} {'passed' if drill.passed else 'FAILED'} in "
        f"{duration.total_seconds():.1f} s" + (f": {failure}" if failure else "") + ".",
    )
    return drill


def _outcome(outcome) -> dict[str, Any]:
    return {"executed": outcome.status == "executed", **({"detail": outcome.detail} if outcome.detail else {})}


def _mark(report: list[dict[str, Any]], proposal_id, **fields) -> None:
    for entry in report:
        if entry.get("proposal") == str(proposal_id):
            entry.update(fields)


@transaction.atomic
def _drill_proposal(agent, system, action, record_id: str, payload, *, drill: Drill, channel) -> Proposal:
    """An approved proposal of the drill agent: a drill is its own approval, on staging only."""
    proposal = Proposal.objects.create(
        agent=agent,
        system=system,
        action_type=action,
        record_id=record_id,
        payload=payload,
        reason=f"rollback drill {drill.pk}",
        status=ProposalStatus.APPROVED,
        channel=str(channel),
        mode=DecisionMode.AUTO,
        decision={"drill": drill.pk, "reason": "rollback drill on a staging system"},
    )
    _audit_proposal(
        proposal,
        verb=Verb.PROPOSED,
        actor=agent,
        channel=channel,
        input={"action": action.name, "payload": payload, "reason": proposal.reason},
        decision=proposal.decision,
        summary=f"Rollback drill {drill.pk}: {action.name} on {system} {record_id}.",
    )
    return proposal
