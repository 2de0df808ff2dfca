"""State changes of the inventory: agent tokens, rule sign-off. Each writes its audit event in the same transaction."""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet, Subquery
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from core.compiled_query import CompiledQuery
from governance.gate import note_global_stop
from governance.models import Agent, AgentToken, GlobalSwitch, ThresholdRule, validate_bands

# last_used_at is a convenience for operators, not a security record: write it at most this often.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@transaction.atomic
def agent_token_issue(
    *,
    agent: Agent,
    issued_by: User | None = None,
    channel: Channel | str,
    expires_in: timedelta | None = None,
    label: str = "",
) -> tuple[AgentToken, str]:
    """Make a token for `agent` and return it with the raw secret, which is never stored and never shown again.

    Earlier tokens stay valid, so an agent can switch to the new one without downtime.
    """
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
        expires_at=now + expires_in if expires_in else None,
    )
    expiry = f", expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else ", no expiry"
    audit_record(
        verb=Verb.TOKEN_ISSUED,
        actor=issued_by,
        channel=channel,
        input={"token_prefix": prefix, "label": label, "expires_at": token.expires_at},
        summary=f"Token {prefix} issued for agent {agent.slug}{expiry}.",
    )
    return token, raw


@transaction.atomic
def agent_tokens_revoke(
    *, agent: Agent, revoked_by: User | None = None, channel: Channel | str, reason: str = ""
) -> int:
    """Revoke every usable token of `agent`; its next call is refused. Returns how many were revoked."""
    tokens = list(AgentToken.objects.select_for_update().filter(agent=agent).usable())
    now = timezone.now()
    for token in tokens:
        token.revoked_at = now
        token.save(update_fields=["revoked_at"])
    audit_record(
        verb=Verb.TOKEN_REVOKED,
        actor=revoked_by,
        channel=channel,
        input={"token_prefixes": [token.prefix for token in tokens], "reason": reason},
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


def agent_authenticate(raw: str) -> tuple[Agent, AgentToken] | None:
    """The agent a bearer token belongs to, or None when it is unknown, malformed, expired or revoked.

    One answer for every kind of failure, and a constant-time comparison, so a caller learns nothing from trying.
    """
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != AgentToken.PREFIX or not parts[1] or len(raw) > 200:
        return None
    # The global stop is read in the same query; the kill-switch check of this request uses it (see the gate).
    found = _TOKEN.run(prefix=parts[1])
    token = found[0] if found else None
    if token is None or not hmac.compare_digest(token.token_hash, AgentToken.hash_token(raw)):
        return None
    now = timezone.now()
    if not token.is_usable(now):
        return None
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        AgentToken.objects.filter(pk=token.pk).update(last_used_at=now)  # not history-tracked: see model
    engaged, reason = getattr(token, "stop_engaged", None), getattr(token, "stop_reason", "")  # annotated by the query
    note_global_stop(token.agent, (bool(engaged), reason) if engaged is not None else (False, ""))  # None: never set
    return token.agent, token


@transaction.atomic
def threshold_rule_sign_off(*, rule: ThresholdRule, user: User, channel: Channel | str) -> ThresholdRule:
    """Record the business owner's sign-off of the rule as it stands now; any later edit voids it."""
    rule = ThresholdRule.objects.select_for_update(of=("self",)).select_related("system").get(pk=rule.pk)
    if user.pk != rule.system.owner_id:
        raise PermissionDenied(
            f"Only the business owner of {rule.system} ({rule.system.owner}) can sign off its rules."
        )
    validate_bands([band.spec() for band in rule.bands.all()])
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
        input={"rule": rule.pk, "digest": rule.signed_off_digest},
        summary=f"{user.get_username()} signed off threshold rule “{rule.name}” on {rule.system}.",
    )
    return rule
