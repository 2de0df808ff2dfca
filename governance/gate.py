"""The checks every agent call passes, from any door: the kill switch, then scope. Each refusal is audited.

A door makes one call here per request and gets back what its service needs, or an audited refusal: `check_read`
for a record, `check_events` for batch events, `check_proposal` for a proposal (system, kill switch, write grant,
payload), `ensure_may_act` alone for calls that touch no system (the agent itself, its own proposals).

These functions run outside the caller's transaction on purpose: a refusal raises, and its audit event must
survive the rollback that raising causes.
"""

from __future__ import annotations

import functools
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.validators import slug_re
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from core.compiled_query import CompiledQuery
from core.errors import (
    ActionPaused,
    AgentDisabled,
    GatehouseError,
    InvalidPayload,
    NotFound,
    ScopeDenied,
    SystemFrozen,
    UnknownAction,
)
from core.request_context import current_request_serial
from core.schema import null_character_paths, schema_errors
from governance import policy_cache
from governance.choices import Access, AgentStatus, IntegrationPattern, WriteMode
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


# --- The kill switch -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stop:
    """A kill switch holding an agent: its own (`agent`), the system's (`system`) or everyone's (`global`)."""

    switch: str
    reason: str


def kill_switch_stop(
    agent: Agent, system: System | None = None, *, writes: bool = True, global_stop: tuple[bool, str] | None = None
) -> Stop | None:
    """The switch that stops `agent` now (acting on `system`, writing or not), or None. The one place that says which
    switches hold an agent: the gate before every call, the worker before every write, the release of a hold."""
    if agent.status != AgentStatus.ACTIVE:
        return Stop("agent", agent.disabled_reason)
    engaged, reason = global_stop if global_stop is not None else GlobalSwitch.is_engaged()
    if engaged:
        return Stop("global", reason)
    if writes and system is not None and system.writes_frozen:
        return Stop("system", system.frozen_reason)
    return None


# The token lookup reads the global stop in the same query (agent_authenticate). The first kill-switch check of that
# request uses the reading instead of asking again; it is dropped once used, and ignored when older than this, so no
# reading ever outlives the request that made it.
_NOTED_STOP_TTL = 1.0  # seconds


# Kept for the call in progress (its request id), not on the agent: a cached agent is shared by the calls of a process.
_noted_stop: ContextVar[tuple[int, int, float, tuple[bool, str]] | None] = ContextVar(
    "gatehouse_noted_stop", default=None
)


def note_global_stop(agent: Agent, state: tuple[bool, str]) -> None:
    _noted_stop.set((agent.pk, current_request_serial(), time.monotonic(), state))


def _global_stop(agent: Agent) -> tuple[bool, str]:
    noted = _noted_stop.get()
    _noted_stop.set(None)
    if noted is not None:
        agent_id, serial, at, state = noted
        if agent_id == agent.pk and serial == current_request_serial() and time.monotonic() - at < _NOTED_STOP_TTL:
            return state
    return policy_cache.cached(("global_stop",), GlobalSwitch.is_engaged)


def ensure_may_act(agent: Agent, *, channel: Channel | str, target: Target = Target(), write: bool) -> None:
    """The kill switch, checked on every call (the agent, the global stop, the system's write freeze), then whether
    the system takes calls at all (disabled) and writes (read-only)."""
    system = target.system
    stop = kill_switch_stop(agent, system, writes=write, global_stop=_global_stop(agent))
    retry = {"Retry-After": "60"}
    if stop is not None and stop.switch == "agent":
        raise refuse(AgentDisabled(f"Agent {agent.slug} is disabled: {stop.reason}"), **_at(agent, channel, target))
    if stop is not None and stop.switch == "global":
        error: GatehouseError = SystemFrozen(f"Gatehouse is stopped for all agents: {stop.reason}", headers=retry)
        raise refuse(error, **_at(agent, channel, target))
    if system is None:
        return
    if system.write_mode == WriteMode.DISABLED:
        raise refuse(SystemFrozen(f"{system} is disabled in Gatehouse.", headers=retry), **_at(agent, channel, target))
    if stop is not None:  # the system's own switch: writes only
        error = SystemFrozen(f"Writes to {system} are frozen: {stop.reason}", headers=retry)
        raise refuse(error, **_at(agent, channel, target))
    if write and system.write_mode == WriteMode.READ_ONLY:
        error = ScopeDenied(f"{system} is read-only in Gatehouse: no agent may propose writes to it.")
        raise refuse(error, **_at(agent, channel, target))


def _at(agent: Agent, channel: Channel | str, target: Target) -> dict[str, Any]:
    return {"agent": agent, "channel": channel, "target": target}


# --- Compiled lookups ------------------------------------------------------------------------------------------------

# Sentinels for the compiled queries below: values of the right type that no real call passes.
_ID = -7_447_104_471_001
_NAME = "\x00gatehouse-sentinel-name"
_SLUG = "\x00gatehouse-sentinel-slug"

# `.first()` of each queryset: they are ordered (Meta.ordering), so first() is [:1].
_SYSTEM = CompiledQuery(lambda slug: System.objects.select_related("credential").filter(slug=slug)[:1], slug=_SLUG)
# Grants are looked up whatever their expiry, and compared with the clock at each use (`_current`): the answers are
# cached per process under the policy generation (policy_cache), and time moves no generation.
_READ_GRANTS = CompiledQuery(
    lambda agent_id, slug, name: (
        ScopeGrant.objects.filter(agent_id=agent_id, system__slug=slug, resource__name=name, access=Access.READ)
        .select_related("system__credential", "resource")
        .order_by("pk")
    ),  # the grants all tie on the default ordering (agent, system, resource, access)
    agent_id=_ID,
    slug=_SLUG,
    name=_NAME,
)
_ACTION = CompiledQuery(
    lambda system_id, name: ActionType.objects.select_related("resource").filter(system_id=system_id, name=name)[:1],
    system_id=_ID,
    name=_NAME,
)
_WRITE_GRANTS = CompiledQuery(
    lambda agent_id, system_id, resource_id: ScopeGrant.objects.filter(
        agent_id=agent_id, system_id=system_id, resource_id=resource_id, access=Access.WRITE
    ),
    agent_id=_ID,
    system_id=_ID - 1,
    resource_id=_ID - 2,
)


def _current(grants: list[ScopeGrant], now: datetime) -> list[ScopeGrant]:
    """The grants not expired at `now` (ScopeGrant.objects.current, on grants already read)."""
    return [grant for grant in grants if grant.expires_at is None or grant.expires_at > now]


def write_granted(agent: Agent, action: ActionType, *, now: datetime | None = None) -> bool:
    """Whether `agent` holds a current write grant naming `action` (checked again just before a write is made)."""
    key = ("write_grants", agent.pk, action.system_id, action.resource_id)
    grants = policy_cache.cached(
        key,
        functools.partial(
            _WRITE_GRANTS.run, agent_id=agent.pk, system_id=action.system_id, resource_id=action.resource_id
        ),
    )
    return any(action.name in grant.actions for grant in _current(grants, now or timezone.now()))


def find_system(slug: str) -> System:
    # What cannot be a slug names no system, and must not reach the database: PostgreSQL refuses a NUL in a query.
    found = (
        policy_cache.cached(("system", slug), functools.partial(_SYSTEM.run, slug=slug), keep=bool)
        if slug_re.match(slug)
        else None
    )
    system = found[0] if found else None
    if system is None:
        raise NotFound(f"No system {slug!r}.")
    return system


# --- Reads -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadScope:
    """What an agent may read of one resource: the system (with its credential), the resource, the granted fields."""

    system: System
    resource: Resource
    fields: list[str]


def check_read(
    agent: Agent, *, system_slug: str, resource_name: str, record_id: str, channel: Channel | str
) -> ReadScope:
    """The checks of a record read, in order (system → kill switch → scope), in one query on the happy path."""
    key = ("read_grants", agent.pk, system_slug, resource_name)
    found = policy_cache.cached(
        key, functools.partial(_READ_GRANTS.run, agent_id=agent.pk, slug=system_slug, name=resource_name)
    )
    grants = _current(found, timezone.now())
    system = grants[0].system if grants else find_system(system_slug)
    target = Target(system=system, resource=resource_name, record_id=record_id)
    ensure_may_act(agent, channel=channel, target=target, write=False)
    if not grants:
        # Only now tell "no such resource" (404) from "no grant on it" (403): the happy path costs one query.
        if not Resource.objects.filter(system=system, name=resource_name).exists():
            raise NotFound(f"{system} has no resource {resource_name!r}.")
        error = ScopeDenied(f"{agent.slug} has no read grant on {system}/{resource_name}.")
        raise refuse(error, agent=agent, channel=channel, target=target)
    resource = grants[0].resource
    return ReadScope(system=system, resource=resource, fields=granted_fields(resource, grants))


def granted_fields(resource: Resource, grants: list[ScopeGrant]) -> list[str]:
    """The fields of `resource` the read grants allow, in the grants' order (a grant without fields: every field)."""
    allowed: list[str] = []
    for grant in grants:
        for name in grant.fields or resource.fields:
            if name not in allowed and name in resource.fields:
                allowed.append(name)
    return allowed


@dataclass(frozen=True)
class EventScope:
    """What batch events an agent may read: one system's or (None) every event-queue system's, fields by resource."""

    system: System | None
    fields_by_resource: dict[int, list[str]]


def check_events(agent: Agent, *, system_slug: str | None, channel: Channel | str) -> EventScope:
    """The checks of an event read: the system named (if any), the kill switch, then the read grants on event-queue
    systems; naming a system the agent holds no such grant on is refused."""
    system = find_system(system_slug) if system_slug else None
    ensure_may_act(agent, channel=channel, target=Target(system=system), write=False)
    grants = ScopeGrant.objects.filter(
        agent=agent, access=Access.READ, system__integration_pattern=IntegrationPattern.EVENT_QUEUE
    ).current(timezone.now())
    if system is not None:
        grants = grants.filter(system=system)
    fields_by_resource: dict[int, list[str]] = {}
    for grant in grants.select_related("resource"):
        allowed = fields_by_resource.setdefault(grant.resource_id, [])
        allowed.extend(name for name in (grant.fields or grant.resource.fields) if name not in allowed)
    if system is not None and not fields_by_resource:
        error = ScopeDenied(f"{agent.slug} may not read events of {system}.")
        raise refuse(error, agent=agent, channel=channel, target=Target(system=system))
    return EventScope(system=system, fields_by_resource=fields_by_resource)


# --- Proposals ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposalScope:
    """The system and the action a proposal may name, once every check before reading the record has passed."""

    system: System
    action: ActionType

    def target(self, record_id: str, payload: Any) -> Target:
        return Target(
            system=self.system,
            resource=self.action.resource.name,
            record_id=record_id,
            detail={"action": self.action.name, "payload": payload},
        )


def check_proposal(
    agent: Agent, *, system_slug: str, action_name: str, record_id: str, payload: Any, channel: Channel | str
) -> ProposalScope:
    """The checks of a proposal, in order: the system exists, the kill switch and write mode, a current write grant
    naming the action, the action not paused (its MCP tool changed on the server), and the payload against the
    action's schema (unknown fields refused)."""
    try:
        system = find_system(system_slug)
    except NotFound as exc:
        raise refuse(exc, agent=agent, channel=channel, target=Target(detail={"system": system_slug})) from None
    target = Target(system=system, record_id=record_id, detail={"action": action_name})
    ensure_may_act(agent, channel=channel, target=target, write=True)
    key = ("action", system.pk, action_name)
    found = policy_cache.cached(key, functools.partial(_ACTION.run, system_id=system.pk, name=action_name), keep=bool)
    if not found:
        error: GatehouseError = UnknownAction(f"{system} has no action {action_name!r}.")
        raise refuse(error, agent=agent, channel=channel, target=target)
    scope = ProposalScope(system=system, action=found[0])
    if not write_granted(agent, scope.action):
        error = ScopeDenied(f"{agent.slug} has no write grant for {action_name} on {system}.")
        target = Target(system=system, resource=scope.action.resource.name, record_id=record_id, detail=target.detail)
        raise refuse(error, agent=agent, channel=channel, target=target)
    if scope.action.paused:  # after the grant: only an agent that may propose it learns that it is paused
        error = ActionPaused(f"{action_name} on {system} is paused: {scope.action.paused_reason}")
        raise refuse(error, agent=agent, channel=channel, target=scope.target(record_id, payload))
    errors = schema_errors(scope.action.payload_schema, payload, prefix="payload")
    # PostgreSQL's jsonb cannot hold NUL (\u0000): refuse it here rather than fail when the proposal is stored.
    for path in null_character_paths(payload, "payload"):
        errors.setdefault(path, "Null characters are not allowed.")
    if errors:
        error = InvalidPayload(f"The payload does not fit {action_name}.", errors=errors)
        raise refuse(error, agent=agent, channel=channel, target=scope.target(record_id, payload))
    return scope
