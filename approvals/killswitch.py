"""The kill switch: stop one agent, freeze writes to one system, or stop everything — and resume, each audited.

Which switches hold an agent is decided in one place, `governance.gate.kill_switch_stop`: the gate asks it on every
call from any door, so a switch is effective on the next request. Work already in Gatehouse is held as well:
proposals waiting for a decision or for a worker go `on_hold` (remembering where they were), and a worker that takes
up an approved proposal asks again before it calls the system (`approvals.execution.proposal_claim`). Turning the
switch off releases what it held: back to waiting for a decision, or back to the workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from approvals.choices import AWAITING_DECISION, ProposalStatus
from approvals.execution import queue_execution
from approvals.models import Proposal
from approvals.transitions import move
from audit.choices import Channel, Verb
from audit.models import AuditEvent
from audit.services import audit_record
from governance.choices import AgentStatus, Role
from governance.gate import kill_switch_stop
from governance.models import Agent, GlobalSwitch, System

# What a switch holds: waiting for a person, waiting for a worker, or between retries of an execution.
HOLDABLE = Q(status__in=[*AWAITING_DECISION, ProposalStatus.APPROVED]) | Q(
    status=ProposalStatus.EXECUTING, claimed_at__isnull=True
)
REASON_MAX = 300


@dataclass(frozen=True)
class SwitchTarget:
    """One agent, one system, or (neither) everything."""

    agent: Agent | None = None
    system: System | None = None

    def __post_init__(self) -> None:
        if self.agent is not None and self.system is not None:
            raise ValidationError("Name one agent or one system, not both (or neither, for everything).")

    @property
    def label(self) -> str:
        if self.agent is not None:
            return f"agent {self.agent.slug}"
        if self.system is not None:
            return f"writes to {self.system.slug}"
        return "every agent (global stop)"

    def proposals(self):
        if self.agent is not None:
            return Proposal.objects.filter(agent=self.agent)
        if self.system is not None:
            return Proposal.objects.filter(system=self.system)
        return Proposal.objects.all()


@dataclass(frozen=True)
class SwitchResult:
    changed: bool  # False: it already was in that position
    proposals: int  # held (on) or released (off)
    message: str


def may_pull(user: User | None, target: SwitchTarget) -> bool:
    """Superusers and operators anywhere; an agent's owner for that agent; a system's owner for that system."""
    if user is None:  # a management command: whoever has shell access to the server
        return True
    if not user.is_active:
        return False
    if user.is_superuser or user.groups.filter(name=Role.OPERATORS).exists():
        return True
    if target.agent is not None:
        return target.agent.owner_id == user.pk
    if target.system is not None:
        return target.system.owner_id == user.pk
    return False


# Who pulled a switch decides who may release it: the same rank or above. An owner may stop their own agent and let
# it go again, but not release a switch an operator pulled during an incident.
OWNER, OPERATOR, SUPERUSER = 1, 2, 3


def rank(user: User | None) -> int:
    """A person's rank for the kill switch; None (the command line, with the server's shell) ranks highest."""
    if user is None or user.is_superuser:
        return SUPERUSER
    return OPERATOR if user.groups.filter(name=Role.OPERATORS).exists() else OWNER


def pulled_by(target: SwitchTarget) -> tuple[int, str]:
    """The rank of whoever last turned this switch on, and their name, from the audit trail (where it was recorded
    when they did); a switch with no such event (set before Gatehouse kept it) counts as pulled by an operator."""
    events = AuditEvent.objects.filter(verb=Verb.KILL_SWITCH_ON).select_related("person")
    if target.agent is not None:
        events = events.filter(agent=target.agent, system__isnull=True)
    elif target.system is not None:
        events = events.filter(system=target.system, agent__isnull=True)
    else:
        events = events.filter(system__isnull=True, agent__isnull=True)
    event = events.order_by("-occurred_at", "-id").first()
    if event is None:
        return OPERATOR, "an operator"
    person = event.person
    return rank(person), person.get_username() if person else "the command line"


def may_release(user: User | None, target: SwitchTarget) -> str | None:
    """None when `user` may turn the target's switch off; else why not."""
    if not may_pull(user, target):
        return f"you may not release the kill switch for {target.label}"
    needed, who = pulled_by(target)
    if rank(user) < needed:
        return f"{who} turned it on, and only someone of that rank or above turns it off"
    return None


def _clean_reason(reason: str) -> str:
    reason = " ".join((reason or "").split())
    if not reason:
        raise ValidationError("Say why: a reason is required to turn the kill switch on or off.")
    if len(reason) > REASON_MAX:
        raise ValidationError(f"The reason is longer than {REASON_MAX} characters.")
    return reason


def is_on(target: SwitchTarget) -> bool:
    if target.agent is not None:
        return Agent.objects.filter(pk=target.agent.pk, status=AgentStatus.DISABLED).exists()
    if target.system is not None:
        return System.objects.filter(pk=target.system.pk, writes_frozen=True).exists()
    return GlobalSwitch.is_engaged()[0]


def _set(target: SwitchTarget, *, on: bool, reason: str, user: User | None) -> bool:
    """Flip the switch under a row lock; False when it already was in that position."""
    if target.agent is not None:
        agent = Agent.objects.select_for_update().get(pk=target.agent.pk)
        if (agent.status == AgentStatus.DISABLED) == on:
            return False
        agent.status = AgentStatus.DISABLED if on else AgentStatus.ACTIVE
        agent.disabled_reason = reason if on else ""
        agent._change_reason = f"kill switch {'on' if on else 'off'}: {reason}"
        agent.save(update_fields=["status", "disabled_reason"])
        target.agent.status, target.agent.disabled_reason = agent.status, agent.disabled_reason
        return True
    if target.system is not None:
        system = System.objects.select_for_update().get(pk=target.system.pk)
        if system.writes_frozen == on:
            return False
        system.writes_frozen = on
        system.frozen_reason = reason if on else ""
        system._change_reason = f"kill switch {'on' if on else 'off'}: {reason}"
        system.save(update_fields=["writes_frozen", "frozen_reason"])
        target.system.writes_frozen, target.system.frozen_reason = system.writes_frozen, system.frozen_reason
        return True
    switch, _ = GlobalSwitch.objects.select_for_update().get_or_create(pk=1)
    if switch.engaged == on:
        return False
    switch.engaged, switch.reason = on, reason
    switch.changed_by, switch.changed_at = user, timezone.now()
    switch._change_reason = f"kill switch {'on' if on else 'off'}: {reason}"  # type: ignore[attr-defined]
    switch.save()
    return True


def _still_stopped(proposal: Proposal) -> bool:
    """Another switch (the agent's, the system's or the global stop) still holds this proposal."""
    return kill_switch_stop(proposal.agent, proposal.system) is not None


def kill_switch_on(
    *, target: SwitchTarget, reason: str, user: User | None = None, channel: Channel | str
) -> SwitchResult:
    """Stop the target at once and hold its pending work. Idempotent: a second call changes nothing."""
    reason = _clean_reason(reason)
    if not may_pull(user, target):
        raise PermissionDenied(f"You may not pull the kill switch for {target.label}.")
    with transaction.atomic():
        if not _set(target, on=True, reason=reason, user=user):
            return SwitchResult(False, 0, f"The kill switch for {target.label} was already on.")
        held = 0
        for proposal in (
            target.proposals()
            .filter(HOLDABLE)
            .select_for_update(of=("self",))
            .select_related("action_type__resource", "system", "agent")
        ):
            was = proposal.status
            proposal.hold_reason = f"kill switch for {target.label}: {reason}"[:300]
            move(
                proposal,
                ProposalStatus.ON_HOLD,
                verb=Verb.HELD,
                actor=user,
                channel=channel,
                outcome="on_hold",
                summary=f"Put on hold by the kill switch for {target.label} (was {was}).",
            )
            held += 1
        message = f"Kill switch ON for {target.label}: {reason}." + (
            f" {held} proposal(s) put on hold." if held else ""
        )
        audit_record(
            verb=Verb.KILL_SWITCH_ON,
            actor=user,
            channel=channel,
            system=target.system,
            agent=target.agent,
            input={"target": target.label, "agent": getattr(target.agent, "slug", None), "reason": reason},
            outcome="on",
            summary=f"{_who(user)} turned the kill switch on for {target.label}: {reason}. Held {held} proposal(s).",
        )
    return SwitchResult(True, held, message)


def kill_switch_off(
    *, target: SwitchTarget, reason: str, user: User | None = None, channel: Channel | str
) -> SwitchResult:
    """Resume: its own audited act with a reason. Held proposals go back where they were, unless another switch
    still holds them (the agent stays held while its system is frozen, and the other way round)."""
    reason = _clean_reason(reason)
    refusal = may_release(user, target)
    if refusal:
        raise PermissionDenied(f"You may not release the kill switch for {target.label}: {refusal}.")
    with transaction.atomic():
        if not _set(target, on=False, reason=reason, user=user):
            return SwitchResult(False, 0, f"The kill switch for {target.label} was already off.")
        released = 0
        for proposal in (
            target.proposals()
            .filter(status=ProposalStatus.ON_HOLD)
            .exclude(hold_reason__startswith="readiness:")  # paused for readiness: released when it holds again
            .select_for_update(of=("self",))
            .select_related("action_type__resource", "system", "agent")
        ):
            if _still_stopped(proposal):
                continue
            back = proposal.held_from or ProposalStatus.PENDING_APPROVAL
            if back == ProposalStatus.EXECUTING:
                back = ProposalStatus.APPROVED  # taken up again from the start: the idempotency key guards the call
            proposal.hold_reason = ""
            move(
                proposal,
                back,
                verb=Verb.RELEASED,
                actor=user,
                channel=channel,
                outcome=back,
                summary=f"Released from hold: the kill switch for {target.label} is off ({back} again).",
            )
            if back == ProposalStatus.APPROVED:
                queue_execution(proposal)
            released += 1
        audit_record(
            verb=Verb.KILL_SWITCH_OFF,
            actor=user,
            channel=channel,
            system=target.system,
            agent=target.agent,
            input={"target": target.label, "agent": getattr(target.agent, "slug", None), "reason": reason},
            outcome="off",
            summary=f"{_who(user)} turned the kill switch off for {target.label}: {reason}. "
            f"Released {released} proposal(s).",
        )
    message = f"Kill switch OFF for {target.label}: {reason}." + (
        f" {released} proposal(s) released." if released else ""
    )
    return SwitchResult(True, released, message)


def _who(user: User | None) -> str:
    if user is None:
        return "An operator (command line)"
    return user.get_full_name() or user.get_username()
