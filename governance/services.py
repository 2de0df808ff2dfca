"""State changes of the inventory: agent tokens, owners, connector settings, rule sign-off. Each checks who may and
writes its audit event in the same transaction, whichever door calls it."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet, Subquery
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from core.compiled_query import CompiledQuery
from governance import policy_cache
from governance.gate import note_global_stop
from governance.models import Agent, AgentBudget, AgentToken, GlobalSwitch, System, ThresholdRule, validate_bands
from governance.querysets import sees_everything

# last_used_at is a convenience for operators, not a security record: write it at most this often.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


def may_mint_tokens(user: User | None, agent: Agent) -> bool:
    """Whoever mints a token can act as the agent: its owner or a superuser (None: the command line, whose user has
    the server's shell and so its keys). Not operators: they stop agents, they do not speak for them."""
    if user is None:
        return True
    return user.is_active and (user.is_superuser or agent.owner_id == user.pk)


def may_revoke_tokens(user: User | None, agent: Agent) -> bool:
    """Revoking stops an agent, like its kill switch: its owner, operators and superusers."""
    return may_mint_tokens(user, agent) or (user is not None and sees_everything(user))


def token_lifetime(expires_in: timedelta | None) -> timedelta:
    """The lifetime a new token gets: GATEHOUSE_TOKEN_DEFAULT_EXPIRY unless asked, never over the maximum."""
    lifetime = expires_in if expires_in is not None else settings.GATEHOUSE_TOKEN_DEFAULT_EXPIRY
    maximum = settings.GATEHOUSE_TOKEN_MAX_LIFETIME
    if lifetime <= timedelta(0):
        raise ValidationError("A token's lifetime must be longer than zero.")
    if lifetime > maximum:
        raise ValidationError(f"A token lives at most {maximum.days} days (GATEHOUSE_TOKEN_MAX_LIFETIME).")
    return lifetime


def token_networks(networks: Iterable[str]) -> list[str]:
    """Source networks in CIDR form ("10.2.0.0/16", "2001:db8::/32", a lone address): refused when one is not."""
    parsed = []
    for text in networks:
        try:
            parsed.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            raise ValidationError(f"{text!r} is not a network (e.g. 10.2.0.0/16 or 192.0.2.7).") from None
    return parsed


@transaction.atomic
def agent_token_issue(
    *,
    agent: Agent,
    issued_by: User | None = None,
    channel: Channel | str,
    expires_in: timedelta | None = None,
    label: str = "",
    networks: Iterable[str] = (),
    reason: str = "",
) -> tuple[AgentToken, str]:
    """Make a token for `agent` and return it with the raw secret, which is never stored and never shown again.

    Earlier tokens stay valid, so an agent can switch to the new one without downtime. Every token expires
    (`token_lifetime`); `networks` limits where it may be used from (empty: anywhere).
    """
    if not may_mint_tokens(issued_by, agent):
        raise PermissionDenied(f"Only the owner of {agent.slug} ({agent.owner}) or a superuser issues its tokens.")
    lifetime, allowed = token_lifetime(expires_in), token_networks(networks)
    prefix = secrets.token_hex(6)
    raw = f"{AgentToken.PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    now = timezone.now()
    token = AgentToken.objects.create(
        agent=agent,
        prefix=prefix,
        token_hash=AgentToken.hash_token(raw),
        label=label,
        created_at=now,
        created_by=issued_by,
        expires_at=now + lifetime,
        networks=allowed,
    )
    where = f", from {', '.join(allowed)} only" if allowed else ""
    audit_record(
        verb=Verb.TOKEN_ISSUED,
        actor=issued_by,
        agent=agent,
        channel=channel,
        input={
            "token_prefix": prefix,
            "label": label,
            "expires_at": token.expires_at,
            "networks": allowed,
            "reason": reason.strip(),
        },
        state_after={"token": prefix, "expires_at": token.expires_at, "networks": allowed},
        summary=f"Token {prefix} issued for agent {agent.slug}, expires {token.expires_at:%Y-%m-%d %H:%M} UTC{where}"
        + (f" — reason: “{reason.strip()}”." if reason.strip() else "."),
    )
    return token, raw


@transaction.atomic
def agent_tokens_revoke(
    *, agent: Agent, revoked_by: User | None = None, channel: Channel | str, reason: str = ""
) -> int:
    """Revoke every usable token of `agent`; its next call is refused. Returns how many were revoked."""
    if not may_revoke_tokens(revoked_by, agent):
        raise PermissionDenied(f"You may not revoke the tokens of {agent.slug}.")
    tokens = list(AgentToken.objects.select_for_update().filter(agent=agent).usable())
    now = timezone.now()
    for token in tokens:
        token.revoked_at = now
        token.save(update_fields=["revoked_at"])
    audit_record(
        verb=Verb.TOKEN_REVOKED,
        actor=revoked_by,
        agent=agent,
        channel=channel,
        input={"token_prefixes": [token.prefix for token in tokens], "reason": reason},
        state_before={"usable_tokens": [token.prefix for token in tokens]},
        state_after={"usable_tokens": []},
        summary=f"{len(tokens)} token(s) of agent {agent.slug} revoked" + (f": {reason}" if reason else "."),
    )
    return len(tokens)


def _token_query(prefix: str) -> QuerySet[AgentToken]:
    stop = GlobalSwitch.objects.filter(pk=1)
    return (
        AgentToken.objects.select_related("agent")
        .filter(prefix=prefix)
        .annotate(stop_engaged=Subquery(stop.values("engaged")[:1]), stop_reason=Subquery(stop.values("reason")[:1]))
    )[:1]  # `.first()`: ordered by Meta.ordering


_TOKEN = CompiledQuery(_token_query, prefix="\x00gatehouse-sentinel-prefix")


def agent_authenticate(
    raw: str, *, source: str | None = None, channel: Channel | str = Channel.API
) -> tuple[Agent, AgentToken] | None:
    """The agent a bearer token belongs to, or None when it is unknown, malformed, expired, revoked, or used from
    outside the token's networks (`source`: the caller's address).

    One answer for every kind of failure, and a constant-time comparison, so a caller learns nothing from trying. A
    valid token used from elsewhere is audited (`denied`, outcome `network_refused`): it may have leaked.
    """
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != AgentToken.PREFIX or not parts[1] or len(raw) > 200:
        return None
    # The global stop is read in the same query; the kill-switch check of this request uses it (see the gate). Within
    # a call's scope the answer comes from this process's cache under the current policy generation (policy_cache).
    policy_cache.open_scope()
    found = policy_cache.cached(("token", parts[1]), functools.partial(_TOKEN.run, prefix=parts[1]), keep=bool)
    token = found[0] if found else None
    if token is None or not hmac.compare_digest(token.token_hash, AgentToken.hash_token(raw)):
        return None
    now = timezone.now()
    if not token.is_usable(now):
        return None
    if not token.allows_source(source):
        audit_record(
            verb=Verb.DENIED,
            actor=token.agent,
            channel=channel,
            outcome="network_refused",
            input={"token_prefix": token.prefix, "source": source, "networks": token.networks},
            summary=f"{token.agent.slug}'s token {token.prefix} was used from {source or 'an unknown address'}, "
            f"outside its networks ({', '.join(token.networks)}): refused as unauthenticated.",
        )
        return None
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        AgentToken.objects.filter(pk=token.pk).update(last_used_at=now)  # not history-tracked: see model
        token.last_used_at = now  # the cached token too (a last use moves no generation): one update per resolution
    engaged, reason = getattr(token, "stop_engaged", None), getattr(token, "stop_reason", "")  # annotated by the query
    note_global_stop(token.agent, (bool(engaged), reason) if engaged is not None else (False, ""))  # None: never set
    return token.agent, token


def may_sign_off(user: User, rule: ThresholdRule) -> bool:
    """The system's business owner signs off its rules, or a superuser (the last editor never: see below)."""
    return user.is_active and (user.is_superuser or user.pk == rule.system.owner_id)


def may_hand_over(user: User | None) -> bool:
    """Giving a system or an agent to another owner moves who signs off and who mints tokens: superusers only."""
    return user is None or (user.is_active and user.is_superuser)


def threshold_rule_sign_off_refusal(user: User, rule: ThresholdRule) -> str | None:
    """Why `user` may not sign off `rule`, in words, or None when they may: what the service refuses, for a page to
    say before anyone presses a button."""
    if not may_sign_off(user, rule):
        return f"Only the business owner of {rule.system} ({rule.system.owner}) can sign off its rules."
    if rule.edited_by_id == user.pk:
        return (
            f"You made the last change to “{rule.name}”: someone else signs it off (four eyes). Ask "
            f"{who_may_sign_off(rule, editor=user)}."
        )
    return None


def who_may_sign_off(rule: ThresholdRule, *, editor: User | None) -> str:
    """Who may put the rule in force now that `editor` changed it, in words: its system's business owner (unless they
    are the editor) or a superuser other than the editor."""
    owner = rule.system.owner
    names = []
    if owner is not None and owner.is_active and (editor is None or owner.pk != editor.pk):
        names.append(f"{owner.get_full_name() or owner.get_username()}, the business owner of {rule.system}")
    names.append("another superuser" if editor is not None and editor.is_superuser else "a superuser")
    return " or ".join(names)


@transaction.atomic
def threshold_rule_sign_off(
    *, rule: ThresholdRule, user: User, channel: Channel | str, reason: str = "", seen_digest: str | None = None
) -> ThresholdRule:
    """Record the sign-off of the rule as it stands now; any later edit voids it.

    The system's business owner signs off (or a superuser), and never the person who last edited the rule or its
    bands: four eyes, so that nobody both writes the terms an agent is held to and puts them in force.
    `seen_digest`: the `content_digest()` of the terms the person was shown; refused if the rule changed since, so
    nobody signs terms they did not see (checked under the rule's lock). A page always passes it (an empty one, from a
    crafted POST, is refused); None is for a door that shows nothing first (seed_demo).
    """
    rule = ThresholdRule.objects.select_for_update(of=("self",)).select_related("system__owner").get(pk=rule.pk)
    refusal = threshold_rule_sign_off_refusal(user, rule)
    if refusal:
        raise PermissionDenied(refusal)
    if seen_digest is not None and seen_digest != rule.content_digest():
        raise ValidationError(
            f"“{rule.name}” was changed while you were reading it: nothing was signed off. Read its terms again."
        )
    validate_bands([band.spec() for band in rule.bands.all()], action=rule.action_type)
    before = {
        "signed_off_by": rule.signed_off_by.get_username() if rule.signed_off_by else None,
        "in_force": rule.is_signed_off,
    }
    rule.signed_off_by = user
    rule.signed_off_at = timezone.now()
    rule.signed_off_digest = rule.content_digest()
    rule._change_reason = "signed off"  # type: ignore[attr-defined]
    rule.save()
    audit_record(
        verb=Verb.RULE_SIGNED_OFF,
        actor=user,
        channel=channel,
        system=rule.system,
        input={"rule": rule.pk, "digest": rule.signed_off_digest, "reason": reason.strip()},
        state_before=before,
        state_after={"signed_off_by": user.get_username(), "in_force": True},
        summary=f"{user.get_username()} signed off threshold rule “{rule.name}” on {rule.system}"
        + (f" — reason: “{reason.strip()}”." if reason.strip() else "."),
    )
    return rule


# --- Who configures what: connector settings and owners -------------------------------------------------------

CONNECTION_PERMISSION = "governance.change_systemconnection"


def may_configure_connections(user: User | None) -> bool:
    """A system's connector kind and settings decide what Gatehouse runs and where its credential goes: superusers
    and integrators (the connector settings' change permission). None: the command line."""
    return user is None or (user.is_active and user.has_perm(CONNECTION_PERMISSION))


def configuration_record(
    *,
    obj: System | Agent,
    changes: dict[str, tuple[Any, Any]],
    user: User | None,
    channel: Channel | str,
    summary: str,
    reason: str = "",
) -> None:
    """One `configured` event for a person's change of what governs an agent or a system: each field, before and
    after, in the trail where an auditor looks for "who let the agent do this, and when". (A change of any governed
    object through a form: `governance.configuration.configuration_change`, which diffs the stored row.)"""
    if not changes:
        return
    reason = reason.strip()
    system = obj if isinstance(obj, System) else None
    agent = obj if isinstance(obj, Agent) else None
    audit_record(
        verb=Verb.CONFIGURED,
        actor=user,
        channel=channel,
        system=system,
        agent=agent,
        resource=obj._meta.model_name or "",
        state_before={name: before for name, (before, _) in changes.items()},
        state_after={name: after for name, (_, after) in changes.items()},
        input={"object": obj._meta.verbose_name, "object_id": obj.pk, "name": str(obj), "reason": reason},
        summary=summary + (f" Reason: “{reason}”." if reason else ""),
    )


def redacted_config(config: Any) -> Any:
    """Connector settings as the trail keeps them: an MCP server's environment by variable name only (a value may be
    a path or a flag a person would rather not spread; the secret itself is never in settings)."""
    if isinstance(config, dict) and isinstance(config.get("env"), dict):
        return {**config, "env": {name: "…" for name in config["env"]}}
    return config


@transaction.atomic
def system_connection_set(
    *,
    system: System,
    kind: str,
    config: dict[str, Any],
    user: User | None,
    channel: Channel | str,
    reason: str = "",
    origin: str = "",
) -> System:
    """Change what a system's connector is and where it connects, checked against the environment's allow-lists
    (connectors/hosts.py, through the model's validation) and audited with before and after.

    `origin` names the command that made the change in the history (as `origin=…`, which the history pages show when
    no person did it): seed_demo uses it to recognise the settings it put there itself."""
    if not may_configure_connections(user):
        raise PermissionDenied("Only an integrator or a superuser changes a system's connector settings.")
    system = System.objects.select_for_update().get(pk=system.pk)
    before = {"connector_kind": system.connector_kind, "connector_config": system.connector_config}
    system.connector_kind, system.connector_config = kind, config
    system.full_clean()
    changes = {
        name: (redacted_config(old), redacted_config(getattr(system, name)))
        for name, old in before.items()
        if getattr(system, name) != old
    }
    if not changes:
        return system
    change = f"connector settings; origin={origin}" if origin else "connector settings"
    system._change_reason = change  # type: ignore[attr-defined]
    system.save(update_fields=["connector_kind", "connector_config"])
    who = user.get_username() if user else "an operator (command line)"
    configuration_record(
        obj=system,
        changes=changes,
        user=user,
        channel=channel,
        summary=f"{who} changed the connector settings of {system} ({', '.join(changes)}).",
        reason=reason,
    )
    return system


def _owner_set(
    obj: System | Agent, owner: User, *, user: User | None, channel: Channel | str, what: str, reason: str = ""
) -> None:
    if not may_hand_over(user):
        raise PermissionDenied(f"Handing {what} to another owner is a superuser's act.")
    if obj.owner_id == owner.pk:
        return
    before = obj.owner.get_username()
    obj.owner = owner
    obj._change_reason = "owner changed"  # type: ignore[union-attr]
    obj.save(update_fields=["owner"])
    configuration_record(
        obj=obj,
        changes={"owner": (before, owner.get_username())},
        user=user,
        channel=channel,
        summary=f"{user.get_username() if user else 'An operator'} handed {what} from {before} to "
        f"{owner.get_username()}.",
        reason=reason,
    )


@transaction.atomic
def system_owner_set(
    *, system: System, owner: User, user: User | None, channel: Channel | str, reason: str = ""
) -> System:
    """Hand a system to another business owner, who then signs off its rules and grants its scopes: superusers only."""
    system = System.objects.select_for_update().get(pk=system.pk)
    _owner_set(system, owner, user=user, channel=channel, what=f"system {system}", reason=reason)
    return system


@transaction.atomic
def agent_owner_set(*, agent: Agent, owner: User, user: User | None, channel: Channel | str, reason: str = "") -> Agent:
    """Hand an agent to another owner, who then mints its tokens: superusers only."""
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    _owner_set(agent, owner, user=user, channel=channel, what=f"agent {agent}", reason=reason)
    return agent


# --- Budgets ----------------------------------------------------------------------------------------------------

_BUDGET_TERMS = ("system", "window", "max_amount", "currency", "max_writes")


def may_set_budget(user: User | None, agent: Agent) -> bool:
    """An agent's budgets are set by whoever speaks for it: its owner or a superuser (None: the command line)."""
    return may_mint_tokens(user, agent)


def _budget_terms(budget: AgentBudget | None) -> dict[str, Any]:
    if budget is None:
        return {}
    return {name: str(getattr(budget, name)) if getattr(budget, name) is not None else None for name in _BUDGET_TERMS}


@transaction.atomic
def agent_budget_save(*, budget: AgentBudget, user: User | None, channel: Channel | str) -> AgentBudget:
    """Create or change an agent's budget on a system, checked and audited (`configured`, before and after)."""
    if not may_set_budget(user, budget.agent):
        raise PermissionDenied(f"Only the owner of {budget.agent} or a superuser sets its budgets.")
    old = AgentBudget.objects.select_for_update().filter(pk=budget.pk).first() if budget.pk else None
    if old is not None and not may_set_budget(user, old.agent):  # not someone else's budget moved to your agent
        raise PermissionDenied(f"Only the owner of {old.agent} or a superuser changes its budgets.")
    budget.full_clean()
    budget.save()
    before, after = _budget_terms(old), _budget_terms(budget)
    changes = {name: (before.get(name), value) for name, value in after.items() if before.get(name) != value}
    who = user.get_username() if user else "An operator (command line)"
    configuration_record(
        obj=budget.agent,
        changes=changes,
        user=user,
        channel=channel,
        summary=f"{who} {'changed' if old else 'set'} the budget of agent {budget.agent} on {budget.system}: at most "
        f"{budget.max_amount or 'any amount'} {budget.currency} and {budget.max_writes or 'any number of'} writes "
        f"per {budget.window}.",
    )
    return budget


@transaction.atomic
def agent_budget_delete(*, budget: AgentBudget, user: User | None, channel: Channel | str) -> None:
    """Remove an agent's budget on a system, checked and audited."""
    if not may_set_budget(user, budget.agent):
        raise PermissionDenied(f"Only the owner of {budget.agent} or a superuser sets its budgets.")
    before = _budget_terms(budget)
    agent, system = budget.agent, budget.system
    budget.delete()
    who = user.get_username() if user else "An operator (command line)"
    configuration_record(
        obj=agent,
        changes={name: (value, None) for name, value in before.items()},
        user=user,
        channel=channel,
        summary=f"{who} removed the budget of agent {agent} on {system}.",
    )
