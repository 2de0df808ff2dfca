"""The checks every agent call passes, from any door: kill switch, then scope. Each refusal is audited.

These functions run outside the caller's transaction on purpose: a refusal raises, and its audit event must
survive the rollback that raising causes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.validators import slug_re
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from core.errors import AgentDisabled, GatehouseError, NotFound, ScopeDenied, SystemFrozen
from governance.choices import Access, WriteMode
from governance.models import ActionType, Agent, GlobalSwitch, Resource, ScopeGrant, System
from governance.querysets import CompiledQuery


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


# The token lookup reads the global stop in the same query (agent_authenticate). The first kill-switch check of that
# request uses the reading instead of asking again; it is dropped once used, and ignored when older than this, so no
# reading ever outlives the request that made it.
_NOTED_STOP_TTL = 1.0  # seconds


def note_global_stop(agent: Agent, state: tuple[bool, str]) -> None:
    agent.__dict__["_noted_global_stop"] = (time.monotonic(), state)


def _global_stop(agent: Agent) -> tuple[bool, str]:
    noted = agent.__dict__.pop("_noted_global_stop", None)
    if noted is not None and time.monotonic() - noted[0] < _NOTED_STOP_TTL:
        return noted[1]
    return GlobalSwitch.is_engaged()


def ensure_may_act(agent: Agent, *, channel: Channel | str, target: Target = Target(), write: bool) -> None:
    """The kill switch, checked on every call: the agent, the global stop, the system's write freeze."""
    if not agent.is_active:
        raise refuse(
            AgentDisabled(f"Agent {agent.slug} is disabled: {agent.disabled_reason}"),
            agent=agent,
            channel=channel,
            target=target,
        )
    engaged, reason = _global_stop(agent)
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


# Sentinels for the compiled queries below: values of the right type that no real call passes.
_ID = -7_447_104_471_001
_NAME = "\x00gatehouse-sentinel-name"
_SLUG = "\x00gatehouse-sentinel-slug"
_NOW = datetime(1901, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)

# `.first()` of each queryset: they are ordered (Meta.ordering), so first() is [:1].
_SYSTEM = CompiledQuery(lambda slug: System.objects.select_related("credential").filter(slug=slug)[:1], slug=_SLUG)
_READ_GRANTS = CompiledQuery(
    lambda agent_id, slug, name, now: (
        ScopeGrant.objects.filter(agent_id=agent_id, system__slug=slug, resource__name=name, access=Access.READ)
        .current(now)
        .select_related("system__credential", "resource")
        .order_by("pk")
    ),  # the grants all tie on the default ordering (agent, system, resource, access)
    agent_id=_ID,
    slug=_SLUG,
    name=_NAME,
    now=_NOW,
)
_ACTION = CompiledQuery(
    lambda system_id, name: ActionType.objects.select_related("resource").filter(system_id=system_id, name=name)[:1],
    system_id=_ID,
    name=_NAME,
)
_WRITE_GRANTS = CompiledQuery(
    lambda agent_id, system_id, resource_id, now: ScopeGrant.objects.filter(
        agent_id=agent_id, system_id=system_id, resource_id=resource_id, access=Access.WRITE
    ).current(now),
    agent_id=_ID,
    system_id=_ID - 1,
    resource_id=_ID - 2,
    now=_NOW,
)


def find_system(slug: str) -> System:
    # What cannot be a slug names no system, and must not reach the database: PostgreSQL refuses a NUL in a query.
    found = _SYSTEM.run(slug=slug) if slug_re.match(slug) else None
    system = found[0] if found else None
    if system is None:
        raise NotFound(f"No system {slug!r}.")
    return system


def read_grants(agent: Agent, system_slug: str, resource_name: str) -> list[ScopeGrant]:
    """The agent's current read grants on one resource, each with its system (and credential) and resource."""
    return _READ_GRANTS.run(agent_id=agent.pk, slug=system_slug, name=resource_name, now=timezone.now())


def readable_fields(
    agent: Agent,
    system: System,
    resource_name: str,
    *,
    channel: Channel | str,
    record_id: str = "",
    grants: list[ScopeGrant] | None = None,
):
    """The resource and the fields this agent may read of it; refuses (audited) without a current read grant.

    `grants`, when given, are this agent's current read grants on `system`/`resource_name` (`read_grants`).
    """
    target = Target(system=system, resource=resource_name, record_id=record_id)
    if grants is None:
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
    found = _ACTION.run(system_id=system.pk, name=action_name)
    action = found[0] if found else None
    if action is None:
        from core.errors import UnknownAction

        raise refuse(
            UnknownAction(f"{system} has no action {action_name!r}."), agent=agent, channel=channel, target=target
        )
    target = Target(system=system, resource=action.resource.name, record_id=record_id, detail={"action": action_name})
    granted = any(
        action_name in grant.actions
        for grant in _WRITE_GRANTS.run(
            agent_id=agent.pk, system_id=system.pk, resource_id=action.resource_id, now=timezone.now()
        )
    )
    if not granted:
        raise refuse(
            ScopeDenied(f"{agent.slug} has no write grant for {action_name} on {system}."),
            agent=agent,
            channel=channel,
            target=target,
        )
    return action
