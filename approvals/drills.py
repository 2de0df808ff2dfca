"""Rollback drills: prove on a staging system that Gatehouse can undo what it writes, and keep the proof.

A drill takes one record of a staging system (`System.drill_record_id`), notes it, writes to it once with each
reversible action (through the real execution path, as the built-in agent `gatehouse-drill`), reverses those writes
with the real reversal machinery, reads the record again and compares. The drill is recorded with its result and
duration; the readiness checklist asks for a passed one.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from approvals.choices import DecisionMode, ProposalStatus
from approvals.execution import ExecutionOutcome, proposal_execute
from approvals.killswitch import SwitchTarget, may_pull
from approvals.models import Drill, Proposal
from approvals.reversal import ReversalRefused, reversal_plan, reversal_report
from approvals.reversal_rounds import reversal_run_here
from approvals.transitions import record_event
from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors.base import Connector, ConnectorError
from connectors.registry import connector_for
from core.tasks import queue_task
from governance.choices import AgentStatus, Compensation, Environment
from governance.models import ActionType, Agent, System

DRILL_AGENT = "gatehouse-drill"
DRILL_TASK = "approvals.run_drill"  # the task's stable name (approvals/tasks.py)
# Fields a system changes on every write: not part of "the record is back".
VOLATILE_FIELDS = frozenset({"version", "updated_at", "modified_at", "etag"})
RUN_TIMEOUT = 60.0  # seconds for the reversal rounds of a drill (it retries a flaky staging system meanwhile)

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class DrillRefused(Exception):
    """The drill cannot run on this system (not staging, no drill record, nothing reversible)."""


def drill_target(system: System) -> System:
    """The staging system to drill: the system itself when it is staging, else its staging twin."""
    if system.environment == Environment.STAGING:
        return system
    if system.staging_twin is not None:
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


def drill_payload(action: ActionType, record: dict[str, Any], *, stamp: str) -> dict[str, Any] | None:
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


def drill_request(*, system: System, user: User, channel: Channel | str) -> System:
    """Ask the workers for a drill on `system` (or its staging twin), as `user`; returns the system to be drilled.

    The same checks as a drill run here: who may (the kill switch's rule: operators, or the system's owner) and
    whether the system can be drilled at all (DrillRefused)."""
    if not may_pull(user, SwitchTarget(system=system)):
        raise PermissionDenied(f"You may not run drills on {system}.")
    target = drill_target(system)
    queue_task(DRILL_TASK, args=[target.pk, user.pk])
    return target


def rollback_drill_by_id(*, system_id: int, user_id: int | None) -> Drill:
    """The drill a worker runs for `drill_request`, as the person who asked for it."""
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    return rollback_drill(system=System.objects.get(pk=system_id), user=user, channel=Channel.ADMIN)


def rollback_drill(*, system: System, user: User | None = None, channel: Channel | str) -> Drill:
    """Run a drill on `system` (or its staging twin) and record it, passed or failed.

    `user` None is an operator at the command line; a person must be allowed to pull the system's kill switch."""
    if not may_pull(user, SwitchTarget(system=system)):
        raise PermissionDenied(f"You may not run drills on {system}.")
    target = drill_target(system)
    if not target.drill_record_id:
        raise DrillRefused(f"Set a drill record on {target} (a record drills may write to) first.")
    actions = list(
        target.action_types.exclude(compensation=Compensation.NONE).select_related("resource").order_by("name")
    )
    if not actions:
        raise DrillRefused(f"{target} has no reversible action to drill.")
    run = _DrillRun(
        drill=Drill.objects.create(system=target, performed_by=user, channel=str(channel)),
        agent=_drill_agent(target),
        actions=actions,
        user=user,
        channel=channel,
    )
    clock = time.monotonic()
    try:
        run.write_and_reverse()
    except (ConnectorError, ReversalRefused) as exc:
        run.failure = f"{type(exc).__name__}: {exc}"
    return run.finish(duration=timedelta(seconds=time.monotonic() - clock))


@dataclass
class _DrillRun:
    """One drill under way: the writes it made, what became of each, and the first failure."""

    drill: Drill
    agent: Agent
    actions: list[ActionType]
    user: User | None
    channel: Channel | str
    report: list[dict[str, Any]] = field(default_factory=list)
    failure: str = ""

    def write_and_reverse(self) -> None:
        target, record_id = self.drill.system, self.drill.system.drill_record_id
        started = timezone.now()
        connector = connector_for(target)
        resource = self.actions[0].resource.name
        before = connector.read(resource, record_id)
        self._write_each(connector, resource, record_id, stamp=f"{started:%Y-%m-%d %H:%M}")
        reversal = reversal_plan(
            agent=self.agent,
            system=target,
            hours=(timezone.now() - started).total_seconds() / 3600 + 1 / 60,
            user=self.user,
            channel=self.channel,
            reason=f"rollback drill {self.drill.pk}",
        )
        self.drill.reversal = reversal
        steps = reversal_report(reversal_run_here(reversal_id=reversal.pk, timeout=RUN_TIMEOUT))
        for step in steps["done"]:
            _mark(self.report, step.proposal_id, reversed=True)
        for key in ("held", "failed", "remaining", "not_reversible", "skipped"):
            for step in steps[key]:
                _mark(
                    self.report, step.proposal_id, reversed=False, why=f"{key}: {step.last_error or step.explanation}"
                )
        self._compare(before, connector.read(resource, record_id), record_id)

    def _write_each(self, connector: Connector, resource: str, record_id: str, *, stamp: str) -> None:
        """One write with each reversible action, through the real execution path; stops at the first that fails."""
        for action in self.actions:
            payload = drill_payload(action, connector.read(resource, record_id), stamp=stamp)
            if payload is None:
                self.report.append({"action": action.name, "skipped": "no harmless payload can be made for it"})
                continue
            proposal = _drill_proposal(
                self.agent, self.drill.system, action, record_id, payload, drill=self.drill, channel=self.channel
            )
            outcome = proposal_execute(proposal_id=proposal.pk)
            entry = {"action": action.name, "payload": payload, "proposal": str(proposal.pk), **_outcome(outcome)}
            self.report.append(entry)
            if outcome.status != "executed":
                self.failure = f"{action.name} did not execute: {outcome.detail or outcome.status}"
                return

    def _compare(self, before: dict[str, Any], after: dict[str, Any], record_id: str) -> None:
        differences = {
            name: {"before": _comparable(before).get(name), "after": value}
            for name, value in _comparable(after).items()
            if _comparable(before).get(name) != value
        }
        if not self.failure and any(not entry.get("reversed", "skipped" in entry) for entry in self.report):
            self.failure = "not every drill write was reversed"
        if not self.failure and differences:
            self.failure = "the record is not back as it was: " + ", ".join(sorted(differences))
        self.report.append({"record": record_id, "back_as_before": not differences, "differences": differences})

    def finish(self, *, duration: timedelta) -> Drill:
        drill = self.drill
        drill.passed = not self.failure
        drill.failure = self.failure
        drill.report = self.report
        drill.finished_at = timezone.now()
        drill.duration = duration
        drill.save()
        failure = f": {self.failure}" if self.failure else ""
        audit_record(
            verb=Verb.DRILL,
            actor=self.user,
            channel=self.channel,
            system=drill.system,
            record_id=drill.system.drill_record_id,
            input={"drill": drill.pk, "reversal": drill.reversal_id},
            outcome="passed" if drill.passed else "failed",
            summary=f"Rollback drill on {drill.system} {'passed' if drill.passed else 'FAILED'} in "
            f"{duration.total_seconds():.1f} s{failure}.",
        )
        return drill


def _outcome(outcome: ExecutionOutcome) -> dict[str, Any]:
    return {"executed": outcome.status == "executed", **({"detail": outcome.detail} if outcome.detail else {})}


def _mark(report: list[dict[str, Any]], proposal_id: uuid.UUID, **fields: Any) -> None:
    for entry in report:
        if entry.get("proposal") == str(proposal_id):
            entry.update(fields)


@transaction.atomic
def _drill_proposal(
    agent: Agent,
    system: System,
    action: ActionType,
    record_id: str,
    payload: dict[str, Any],
    *,
    drill: Drill,
    channel: Channel | str,
) -> Proposal:
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
    record_event(
        proposal,
        verb=Verb.PROPOSED,
        actor=agent,
        channel=channel,
        input={"action": action.name, "payload": payload, "reason": proposal.reason},
        decision=proposal.decision,
        summary=f"Rollback drill {drill.pk}: {action.name} on {system} {record_id}.",
    )
    return proposal
