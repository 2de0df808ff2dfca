"""Applying a policy document (governance/policy_document.py) to the inventory, as one person, in one transaction.

Each change of the plan (governance/policy_plan.py) is made through the service the admin's page for it uses, so it
is checked and recorded the same way: who may (model permissions, whose rows, who hands over owners and configures
connectors), the models' validation, one `configured` event per change with the person as actor and the command as
channel. A change that gives production writes passes the readiness gate as in the admin (a superuser may override it
with a reason, audited). Threshold rules it changes are left out of force, edited by the person who applied them, until
their business owner signs them off in the admin (four eyes: never the person who applied them).

Here, not in governance: the readiness gate and the kill switch are approvals' (an agent's status is its kill switch),
and governance may not import them (pyproject.toml, the layers contract).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.db.models import ProtectedError

from approvals.killswitch import SwitchTarget, kill_switch_off, kill_switch_on
from approvals.readiness import (
    enables_production_writes,
    production_writes_gate,
    readiness_override,
    system_change_gains_production_writes,
)
from audit.choices import Channel
from governance.choices import AgentStatus
from governance.editing import inventory_delete, inventory_save, may_save, threshold_rule_save
from governance.models import ActionType, Agent, AgentBudget, Resource, ScopeGrant, System, ThresholdBand, ThresholdRule
from governance.policy_document import (
    ACTION,
    AGENT,
    BAND,
    BUDGET,
    GRANT,
    RESOURCE,
    RULE,
    SYSTEM,
    Part,
    PolicyError,
    export_document,
    from_document,
    model_field,
)
from governance.policy_plan import ADD, REMOVE, Change, plan
from governance.services import (
    agent_budget_delete,
    agent_budget_save,
    agent_owner_set,
    system_connection_set,
    system_owner_set,
)

ORIGIN = "apply_policy"
# Changed by their own services, which check and audit them: not by the row's save.
SYSTEM_OWN_SERVICES = ("owner", "connector_kind", "connector_config")
AGENT_OWN_SERVICES = ("owner", "status", "disabled_reason")


@dataclass(frozen=True)
class Applier:
    """Who applies, why, and the superuser's reason to override a failing readiness checklist (empty: none)."""

    user: User
    reason: str
    override_readiness: str = ""
    channel: str = Channel.COMMAND


def policy_apply(*, document: dict[str, Any], user: User, reason: str, override_readiness: str = "") -> list[Change]:
    """Make the inventory say what `document` (canonical, from `load`) says, as `user`; returns the changes made.
    All or nothing: any refusal or invalid change raises PolicyError and nothing is changed."""
    if not user.is_active or not user.is_staff:
        raise PolicyError([f"{user.get_username()} does not use the admin, so may change nothing in it either."])
    if not reason.strip():
        raise PolicyError(["Say why (--reason): it is kept in the audit trail with every change, as in the admin."])
    applier = Applier(user, reason.strip(), override_readiness.strip())
    with transaction.atomic():
        changes = plan(export_document(), document)
        for change in _twins_first(changes):
            try:
                _apply(change, applier)
            except (PermissionDenied, ValidationError, ProtectedError, ValueError) as exc:
                raise PolicyError([f"{change.words[0]} — {message}" for message in _messages(exc)]) from exc
    return changes


def unsigned_rules(changes: list[Change]) -> list[str]:
    """The names of the rules these changes added or changed that are not in force now (a change of their name alone
    keeps a sign-off, as in the admin)."""
    touched = [(change.key[1], change.key[2]) for change in changes if change.kind == "rule" and change.after]
    rules = ThresholdRule.objects.select_related("system", "action_type").prefetch_related("bands")
    return [
        rule.name
        for rule in rules.filter(system__slug__in={system for system, _ in touched})
        if (rule.system.slug, rule.action_type.name if rule.action_type else None) in touched and not rule.is_signed_off
    ]


def _messages(exc: Exception) -> list[str]:
    if isinstance(exc, ValidationError):
        return [message for message in exc.messages]
    if isinstance(exc, ProtectedError):
        return ["other records still refer to it (proposals or history): it cannot be removed."]
    return [str(exc) or "refused."]


def _twins_first(changes: list[Change]) -> list[Change]:
    """A new system's staging twin is made before it (the CRM names its twin when it is made)."""
    added = {change.key[1]: change for change in changes if change.kind == "system" and change.op == ADD}
    ordered: list[Change] = []
    for change in changes:
        if change in ordered:
            continue
        twin = added.get((change.after or {}).get("staging_twin") or "") if change.kind == "system" else None
        if twin is not None and twin not in ordered and twin is not change:
            ordered.append(twin)
        ordered.append(change)
    return ordered


# --- From the document to rows ----------------------------------------------------------------------------------


def _related(field: models.Field, name: str, system: System | None) -> models.Model:
    model = field.related_model
    if model is User:
        return User.objects.get(username=name)
    if model is Group:
        return Group.objects.get(name=name)
    if model in (System, Agent):
        return model.objects.get(slug=name)
    assert model in (Resource, ActionType) and system is not None
    return model.objects.get(system=system, name=name)


def _fill(obj: models.Model, part: Part, entry: dict[str, Any], *, skip: tuple[str, ...] = ()) -> None:
    """Set `obj`'s fields from a canonical entry, related rows looked up by name (within the row's system)."""
    system = getattr(obj, "system", None) if getattr(obj, "system_id", None) else None
    for key in part.keys:
        if key in skip or (key in part.identity and obj.pk is not None and part is not BAND):
            continue
        if key in part.sets and sorted(getattr(obj, key) or []) == entry[key]:
            continue  # the same names in another order: as stored, not a change
        field = model_field(part, key)
        value = from_document(field, entry[key])
        if field.is_relation:
            value = _related(field, value, system) if value is not None else None
        setattr(obj, key, value)


def _system(slug: str) -> System:
    return System.objects.select_for_update().get(slug=slug)


def _agent(slug: str) -> Agent:
    return Agent.objects.select_for_update().get(slug=slug)


def _apply(change: Change, applier: Applier) -> None:
    handler = {
        "system": _apply_system,
        "resource": _apply_system_row,
        "action": _apply_system_row,
        "rule": _apply_rule,
        "agent": _apply_agent,
        "grant": _apply_grant,
        "budget": _apply_budget,
    }[change.kind]
    handler(change, applier)


def _save(obj: models.Model, applier: Applier, **kwargs: Any) -> None:
    inventory_save(obj=obj, user=applier.user, channel=applier.channel, reason=applier.reason, origin=ORIGIN, **kwargs)


def _remove(obj: models.Model, applier: Applier) -> None:
    inventory_delete(obj=obj, user=applier.user, channel=applier.channel, reason=applier.reason)


def _gate(applier: Applier, agents: list[Agent], what: str, **context: Any) -> list[str]:
    if not agents:
        return []
    return production_writes_gate(
        agents, what=what, user=applier.user, override_reason=applier.override_readiness, **context
    )


def _record_override(applier: Applier, what: str, failing: list[str], agent: Agent | None = None) -> None:
    if failing:
        readiness_override(
            what=what,
            failing=failing,
            reason=applier.override_readiness,
            user=applier.user,
            agent=agent,
            channel=applier.channel,
        )


# --- Each kind --------------------------------------------------------------------------------------------------


def _apply_system(change: Change, applier: Applier) -> None:
    slug = change.key[1]
    if change.op == REMOVE:
        _remove(_system(slug), applier)
        return
    entry = change.after
    assert entry is not None
    if change.op == ADD:
        system = System(slug=slug)
        _fill(system, SYSTEM, entry)
        if not may_save(applier.user, system):
            raise PermissionDenied(
                f"{applier.user.get_username()} may not add systems: in the admin, a superuser does."
            )
        _save(system, applier)
        return
    before = change.before
    assert before is not None
    system = _system(slug)
    own = [key for key in SYSTEM.keys if key not in SYSTEM_OWN_SERVICES and before[key] != entry[key]]
    if own:
        _fill(system, SYSTEM, entry, skip=SYSTEM_OWN_SERVICES)
        agents = system_change_gains_production_writes(
            system, environment=system.environment, write_mode=system.write_mode
        )
        what = f"Enabling writes to {system}"
        failing = _gate(applier, agents, what, changed_systems=[system])
        _save(system, applier, exclude=SYSTEM_OWN_SERVICES)
        _record_override(applier, what, failing)
    if before["owner"] != entry["owner"]:
        owner = User.objects.get(username=entry["owner"])
        system_owner_set(system=system, owner=owner, user=applier.user, channel=applier.channel, reason=applier.reason)
    if (before["connector_kind"], before["connector_config"]) != (entry["connector_kind"], entry["connector_config"]):
        system_connection_set(
            system=system,
            kind=entry["connector_kind"],
            config=entry["connector_config"],
            user=applier.user,
            channel=applier.channel,
            reason=applier.reason,
            origin=ORIGIN,
        )


def _apply_system_row(change: Change, applier: Applier) -> None:
    """A resource or an action: a row of a system, named within it."""
    model, part = (Resource, RESOURCE) if change.kind == "resource" else (ActionType, ACTION)
    system = _system(change.key[1])
    stored = model.objects.filter(system=system, name=change.key[2]).first()
    if change.op == REMOVE:
        assert stored is not None
        _remove(stored, applier)
        return
    row = stored or model(system=system)
    _fill(row, part, change.after or {})
    _save(row, applier, parents=[system])


def _apply_rule(change: Change, applier: Applier) -> None:
    system = _system(change.key[1])
    rules = ThresholdRule.objects.select_for_update(of=("self",)).filter(system=system)
    action = change.key[2]
    stored = (rules.filter(action_type__name=action) if action else rules.filter(action_type__isnull=True)).first()
    if change.op == REMOVE:
        assert stored is not None
        _remove(stored, applier)
        return
    entry = change.after
    assert entry is not None
    rule = stored or ThresholdRule(system=system)
    _fill(rule, RULE, entry)
    bands = []
    for item in entry["bands"]:
        band = ThresholdBand(rule=rule) if rule.pk else ThresholdBand()
        _fill(band, BAND, item)
        bands.append(band)
    threshold_rule_save(
        rule=rule, bands=bands, user=applier.user, channel=applier.channel, reason=applier.reason, origin=ORIGIN
    )


def _apply_agent(change: Change, applier: Applier) -> None:
    slug = change.key[1]
    if change.op == REMOVE:
        _remove(_agent(slug), applier)
        return
    entry = change.after
    assert entry is not None
    before = change.before or {**entry, "status": AgentStatus.ACTIVE}
    if change.op == ADD:
        agent = Agent(slug=slug)
        _fill(agent, AGENT, entry, skip=("status",))
        _save(agent, applier)
    else:
        agent = _agent(slug)
        if any(before[key] != entry[key] for key in AGENT.keys if key not in AGENT_OWN_SERVICES):
            _fill(agent, AGENT, entry, skip=AGENT_OWN_SERVICES)
            _save(agent, applier, exclude=AGENT_OWN_SERVICES)
        if before["owner"] != entry["owner"]:
            owner = User.objects.get(username=entry["owner"])
            agent_owner_set(agent=agent, owner=owner, user=applier.user, channel=applier.channel, reason=applier.reason)
    if before["status"] != entry["status"]:  # an agent is stopped and resumed by its kill switch, never by a form
        switch = kill_switch_on if entry["status"] == AgentStatus.DISABLED else kill_switch_off
        switch(target=SwitchTarget(agent=agent), reason=applier.reason, user=applier.user, channel=applier.channel)


def _apply_grant(change: Change, applier: Applier) -> None:
    agent = _agent(change.key[1])
    system = System.objects.get(slug=change.key[2])
    stored = (
        ScopeGrant.objects.filter(agent=agent, system=system, resource__name=change.key[3], access=change.key[4])
        .order_by("pk")
        .first()
    )
    if change.op == REMOVE:
        assert stored is not None
        _remove(stored, applier)
        return
    grant = stored or ScopeGrant(agent=agent, system=system, granted_by=applier.user)
    _fill(grant, GRANT, change.after or {})
    if grant.pk is None:
        grant.resource = Resource.objects.get(system=system, name=change.key[3])
        grant.access = change.key[4]
    what = f"A write grant for {agent} on {system} (production)"
    failing = _gate(applier, [agent] if enables_production_writes(grant) else [], what, extra_grants=[grant])
    _save(grant, applier, parents=[system])
    _record_override(applier, what, failing, agent=agent)


def _apply_budget(change: Change, applier: Applier) -> None:
    agent = _agent(change.key[1])
    stored = AgentBudget.objects.filter(agent=agent, system__slug=change.key[2]).first()
    user = applier.user
    if change.op == REMOVE:
        assert stored is not None
        agent_budget_delete(budget=stored, user=user, channel=applier.channel)
        return
    budget = stored or AgentBudget(agent=agent, system=System.objects.get(slug=change.key[2]))
    if not may_save(user, budget, parents=[agent]):
        raise PermissionDenied(f"{user.get_username()} may not set the budgets of {agent}: in the admin neither.")
    _fill(budget, BUDGET, change.after or {}, skip=("system",))
    budget._change_reason = f"origin={ORIGIN}"  # type: ignore[union-attr]
    agent_budget_save(budget=budget, user=user, channel=applier.channel)
