"""The checks every agent call passes, from any door: kill switch, then scope. Each refusal is audited.

These functions run outside the caller's transaction on purpose: a refusal raises, and its audit event must
survive the rollback that raising causes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from governance.choices import Access, WriteMode
from governance.errors import AgentDisabled, GatehouseError, NotFound, ScopeDenied, SystemFrozen
from governance.models import ActionType, Agent, GlobalSwitch, Resource, ScopeGrant, System


@dataclass(frozen=True)
class Target:
    """What a call is about, for the audit event of a refusal."""

    system: System | None = None
    resource: str = ""
    record_id: str = ""
    detail: dict[str, Any] | None = None


def refuse(error: GatehouseError, *, agent: Agent, channel: Channel | str, target: Target = Target()) -> GatehouseError:
    """Audit a refusal as `denied` and hand the error back for the caller to raise."""
    audit_record(
        verb=Verb.DENIED,
        actor=agent,
        channel=channel,
        system=target.system,
        resource=target.resource,
        record_id=target.record_id,
        input=target.detail or {},
        outcome=error.code,
        summary=f"{agent.slug} was refused ({error.code}): {error.detail}",
    )
    return error


def ensure_may_act(agent: Agent, *, channel: Channel | str, target: Target = Target(), write: bool) -> None:
    """The kill switch, checked on every call: the agent, the global stop, the system's write freeze."""
    if not agent.is_active:
        raise refuse(
            AgentDisabled(f"Agent {agent.slug} is disabled: {agent.disabled_reason}"),
            agent=agent,
            channel=channel,
            target=target,
        )
    engaged, reason = GlobalSwitch.is_engaged()
    if engaged:
        raise refuse(
            SystemFrozen(f"Gatehouse is stopped for all agents: {reason}", headers={"Retry-After": "60"}),
            agent=agent,
            channel=channel,
            target=target,
        )
    system = target.system
    if system is None:
        return
    if system.write_mode == WriteMode.DISABLED:
        raise refuse(
            SystemFrozen(f"{system} is disabled in Gatehouse.", headers={"Retry-After": "60"}),
            agent=agent,
            channel=channel,
            target=target,
        )
    if write and system.writes_frozen:
        raise refuse(
            SystemFrozen(f"Writes to {system} are frozen: {system.frozen_reason}", headers={"Retry-After": "60"}),
            agent=agent,
            channel=channel,
            target=target,
        )
    if write and system.write_mode == WriteMode.READ_ONLY:
        raise refuse(
            ScopeDenied(f"{system} is read-only in Gatehouse: no agent may propose writes to it."),
            agent=agent,
            channel=channel,
            target=target,
        )


def find_system(slug: str) -> System:
    system = System.objects.select_related("credential").filter(slug=slug).first()
    if system is None:
        raise NotFound(f"No system {slug!r}.")
    return system


def readable_fields(agent: Agent, system: System, resource_name: str, *, channel: Channel | str, record_id: str = ""):
    """The resource and the fields this agent may read of it; refuses (audited) without a current read grant."""
    target = Target(system=system, resource=resource_name, record_id=record_id)
    grants = list(
        ScopeGrant.objects.filter(agent=agent, system=system, resource__name=resource_name, access=Access.READ)
        .current(timezone.now())
        .select_related("resource")
    )
    if not grants:
        # Only now tell "no such resource" (404) from "no grant on it" (403): the happy path costs one query.
        if not Resource.objects.filter(system=system, name=resource_name).exists():
            raise NotFound(f"{system} has no resource {resource_name!r}.")
        raise refuse(
            ScopeDenied(f"{agent.slug} has no read grant on {system}/{resource_name}."),
            agent=agent,
            channel=channel,
            target=target,
        )
    resource = grants[0].resource
    allowed: list[str] = []
    for grant in grants:
        for name in grant.fields or resource.fields:
            if name not in allowed and name in resource.fields:
                allowed.append(name)
    return resource, allowed


def writable_action(agent: Agent, system: System, action_name: str, *, channel: Channel | str, record_id: str = ""):
    """The action, if this agent holds a current write grant naming it; else refused (audited)."""
    target = Target(system=system, record_id=record_id, detail={"action": action_name})
    action = ActionType.objects.select_related("resource").filter(system=system, name=action_name).first()
    if action is None:
        from governance.errors import UnknownAction

        raise refuse(
            UnknownAction(f"{system} has no action {action_name!r}."), agent=agent, channel=channel, target=target
        )
    target = Target(system=system, resource=action.resource.name, record_id=record_id, detail={"action": action_name})
    granted = any(
        action_name in grant.actions
        for grant in ScopeGrant.objects.filter(
            agent=agent, system=system, resource=action.resource, access=Access.WRITE
        ).current(timezone.now())
    )
    if not granted:
        raise refuse(
            ScopeDenied(f"{agent.slug} has no write grant for {action_name} on {system}."),
            agent=agent,
            channel=channel,
            target=target,
        )
    return action
