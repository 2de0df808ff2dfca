"""State changes of connector data: setting, rotating and re-encrypting vaulted credentials, audited."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.models import AuditEvent
from audit.services import audit_record
from connectors import credentials
from connectors.base import Health
from connectors.models import AgentCredential, Credential
from connectors.notify import notify_rotation_due, notify_rotation_failed
from connectors.registry import connector_for
from governance.models import Agent, System

logger = logging.getLogger(__name__)


def may_hold_secrets(user: User | None, system: System) -> bool:
    """Who may put a secret for `system` in the vault (the shared one or an agent's own): its owner or a superuser;
    None is Gatehouse itself (a management command run by whoever runs the server)."""
    if user is None:
        return True
    return user.is_active and (user.is_superuser or system.owner_id == user.pk)


def _whose(system: System, agent: Agent | None) -> str:
    return f"the credential for {system}" if agent is None else f"the credential of {agent.slug} for {system}"


def _vaulted_query(system: System, agent: Agent | None) -> QuerySet[Credential] | QuerySet[AgentCredential]:
    if agent is None:
        return Credential.objects.filter(system=system)
    return AgentCredential.objects.filter(system=system, agent=agent)


@transaction.atomic
def credential_set(
    *,
    system: System,
    secret: str,
    actor: User | None,
    channel: Channel | str,
    agent: Agent | None = None,
    health: Health | None = None,
    reason: str = "",
    **attributes: Any,
) -> Credential | AgentCredential:
    """Store a new secret for `system` (a first secret or a rotation); the audit event never holds the secret.

    With `agent`, the secret is that agent's own account at the system (an AgentCredential), used for its reads and
    writes there instead of the shared one. `health` is the result of checking the system with this secret before
    it was stored (`credential_rotate`): the same audit event records it, outcome `health_failed` when it did not
    pass.
    """
    if not may_hold_secrets(actor, system):
        raise PermissionDenied(f"Only the owner of {system} or a superuser sets its credentials.")
    found = _vaulted_query(system, agent).select_for_update().first()
    rotated = found is not None
    credential: Credential | AgentCredential
    if found is not None:
        credential = found
    else:
        credential = Credential(system=system) if agent is None else AgentCredential(system=system, agent=agent)
    for name, value in attributes.items():
        setattr(credential, name, value)
    # What the trail keeps of a rotation: when, and which vault key sealed it; never the secret.
    before = {"last_rotated_at": credential.last_rotated_at, "key": credential.key_fingerprint} if rotated else None
    credential.encrypt_secret(secret)
    credential.last_rotated_at = timezone.now()
    credential.full_clean(exclude=["system", "agent", "ciphertext", "key_fingerprint"])
    credential._change_reason = "secret rotated" if rotated else "secret set"  # type: ignore[union-attr]
    credential.save()
    checked = {} if health is None else {"health": {"ok": health.ok, "reason": health.reason}}
    whose = _whose(system, agent)
    audit_record(
        verb=Verb.CREDENTIAL_SET,
        actor=actor,
        channel=channel,
        system=system,
        agent=agent,
        input={
            "kind": credential.kind,
            "rotated": rotated,
            "key": credential.key_fingerprint,
            "reason": reason.strip(),
            **checked,
        }
        | ({"agent": agent.slug} if agent is not None else {}),
        state_before=before,
        state_after={"last_rotated_at": credential.last_rotated_at, "key": credential.key_fingerprint},
        outcome="ok" if health is None or health.ok else "health_failed",
        summary=f"{whose[:1].upper()}{whose[1:]} {'rotated' if rotated else 'set'}."
        + ("" if health is None else f" Health check with it: {'ok' if health.ok else health.reason}")
        + (f" Reason: “{reason.strip()}”." if reason.strip() else ""),
    )
    return credential


@transaction.atomic
def agent_credential_remove(*, credential: AgentCredential, actor: User | None, channel: Channel | str) -> None:
    """Retire an agent's own account at a system: its calls there go back to the shared credential (which the
    readiness checklist counts against it), audited."""
    system, agent = credential.system, credential.agent
    if not may_hold_secrets(actor, system):
        raise PermissionDenied(f"Only the owner of {system} or a superuser removes its credentials.")
    credential._change_reason = "removed"  # type: ignore[attr-defined]
    credential.delete()
    audit_record(
        verb=Verb.CREDENTIAL_SET,
        actor=actor,
        channel=channel,
        system=system,
        agent=agent,
        input={"agent": agent.slug, "removed": True},
        outcome="removed",
        summary=f"The credential of {agent.slug} for {system} removed: it now uses the system's shared one, if any.",
    )


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: whether the new secret is now the stored one, and the system's answer to it."""

    credential: Credential | AgentCredential
    stored: bool
    health: Health
    previous_health: Health | None = None  # checked only when the new secret failed


def _check(credential: Credential | AgentCredential, secret: str | None = None) -> Health:
    """The system's health check with `secret` sent as `credential` says (default: the credential's own secret).
    A check reports; it never raises."""
    system = credential.system
    try:
        if secret is None:
            health = connector_for(system, agent=credential.holder).health()
        else:
            health = connector_for(system, secret=secret, vaulted=credential).health()
    except Exception as exc:  # no connector for the kind, a bad config, an undecryptable old secret, a bug
        health = Health(False, f"the check could not run: {type(exc).__name__}")
        logger.warning("The health check of %s could not run", system.slug, exc_info=True)
    if secret and secret in health.reason:  # a system that echoes the credential in its error must not leak it
        health = Health(health.ok, health.reason.replace(secret, "[secret]"))
    return health


def credential_rotate(
    *,
    system: System,
    new_secret: str,
    actor: User | None,
    channel: Channel | str,
    agent: Agent | None = None,
    reason: str = "",
) -> Rotation:
    """Rotate `system`'s secret (with `agent`: that agent's own at the system): check the system with the new
    secret, store it, audit both in one event.

    The check runs before the write, with the new secret held in memory only: no transaction (on SQLite, the whole
    database) stays locked across a network call, and no worker picks up a secret that is still being checked.

    When the check fails, the decision follows one rule: never swap a secret the system accepts for one it refuses.
      - The current secret still passes: nothing is stored (a typo, or the wrong system's key); the attempt is
        audited (outcome `refused`) and the owner told. Keeping a working secret cannot widen anything, even one
        being retired because it leaked: the system accepts it either way until it is revoked upstream.
      - The current secret fails too (already revoked upstream, or the system is down): the new
        one is stored, because it is what the operator says is current and the old one is no better; the audit
        event says `health_failed` and the owner and on-call are told. Rolling back here would reinstate a
        secret that may be revoked or leaked, and misread an outage as a bad secret.
    """
    if not new_secret or new_secret != new_secret.strip() or any(ord(ch) < 32 for ch in new_secret):
        raise ValidationError("The new secret must be one line of text, without surrounding spaces.")
    if not may_hold_secrets(actor, system):
        raise PermissionDenied(f"Only the owner of {system} or a superuser rotates its credentials.")
    current = _vaulted_query(system, agent).select_related("system").first()
    if current is None:
        mine = "" if agent is None else f" of {agent.slug}"
        raise ValidationError(f"{system} has no vaulted credential{mine} to rotate: add one in the admin first.")
    # Both checks through the row just read, so the current secret and kind are the stored ones, not a stale cache.
    health = _check(current, new_secret)
    previous = None if health.ok else _check(current)
    if previous is not None and previous.ok:
        _credential_rotation_refused(credential=current, health=health, actor=actor, channel=channel)
        return Rotation(credential=current, stored=False, health=health, previous_health=previous)
    with transaction.atomic():
        credential = credential_set(
            system=system, secret=new_secret, actor=actor, channel=channel, agent=agent, health=health, reason=reason
        )
        if not health.ok:
            transaction.on_commit(
                functools.partial(notify_rotation_failed, credential, reason=health.reason, stored=True)
            )
    return Rotation(credential=credential, stored=True, health=health, previous_health=previous)


@transaction.atomic
def _credential_rotation_refused(
    *, credential: Credential | AgentCredential, health: Health, actor: User | None, channel: Channel | str
) -> None:
    agent = credential.holder
    audit_record(
        verb=Verb.CREDENTIAL_SET,
        actor=actor,
        channel=channel,
        system=credential.system,
        agent=agent,
        input={"kind": credential.kind, "rotated": False, "health": {"ok": False, "reason": health.reason}}
        | ({"agent": agent.slug} if agent is not None else {}),
        outcome="refused",
        summary=f"{str(credential).capitalize()} not rotated: the system refused the new secret ({health.reason}) "
        "and still accepts the current one.",
    )
    transaction.on_commit(functools.partial(notify_rotation_failed, credential, reason=health.reason, stored=False))


def credentials_tell_rotation_due(*, now: datetime | None = None) -> int:
    """Tell each owner whose credential (a system's shared one, or an agent's own at it) is overdue for rotation, or
    due within ROTATION_NOTICE (connectors/models.py); at most once a day per credential.

    Each notice is an audit event (verb `escalated`, resource `credential`, outcome `rotation_due` or
    `rotation_overdue`, naming the agent for an agent's own), and that event is the once-a-day guard: it is looked
    for under the credential's row lock, so two beat runs (or two beat processes) cannot both send. Returns how many
    notices were sent.
    """
    now = now or timezone.now()
    day_start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    told = 0
    for model in (Credential, AgentCredential):
        for pk in list(model.objects.rotation_due(now).values_list("pk", flat=True)):
            told += _tell_rotation_due(model, pk, now=now, since=day_start)
    return told


@transaction.atomic
def _tell_rotation_due(
    model: type[Credential] | type[AgentCredential], pk: int, *, now: datetime, since: datetime
) -> int:
    credential = model.objects.select_for_update().filter(pk=pk).first()
    if credential is None or not credential.rotation_state(now):
        return 0  # deleted or rotated meanwhile
    agent = credential.holder
    already = AuditEvent.objects.filter(
        verb=Verb.ESCALATED, system_id=credential.system_id, resource="credential", occurred_at__gte=since
    ).filter(**({"agent__isnull": True} if agent is None else {"agent_id": agent.pk}))
    if already.exists():
        return 0
    credential = model.objects.select_related("system__owner").get(pk=pk)
    overdue = credential.rotation_state(now) == "overdue"
    owner = credential.system.owner.get_username()
    audit_record(
        verb=Verb.ESCALATED,
        actor=None,
        channel=Channel.TASK,
        system=credential.system,
        agent=agent,
        resource="credential",
        input={"due_at": credential.rotation_due_at, "owner": owner},
        outcome="rotation_overdue" if overdue else "rotation_due",
        summary=f"Told {owner} that the {credential} {'was' if overdue else 'is'} due for rotation on "
        f"{credential.rotation_due_at:%Y-%m-%d}.",
    )
    transaction.on_commit(functools.partial(notify_rotation_due, credential, overdue=overdue))
    return 1


@transaction.atomic
def credentials_reencrypt(*, actor: User | None, channel: Channel | str) -> int:
    """Re-encrypt every credential (shared and agents' own) under the first vault key, so older keys can be retired.
    Returns how many moved."""
    fingerprint = credentials.primary_key_fingerprint()
    moved = 0
    for model in (Credential, AgentCredential):
        for credential in model.objects.select_for_update().exclude(key_fingerprint=fingerprint):
            credential.ciphertext = credentials.reencrypt(credential.ciphertext)
            credential.key_fingerprint = fingerprint
            credential._change_reason = "re-encrypted under the current key"
            credential.save(update_fields=["ciphertext", "key_fingerprint", "updated_at"])
            moved += 1
    audit_record(
        verb=Verb.CREDENTIAL_REENCRYPTED,
        actor=actor,
        channel=channel,
        input={"count": moved, "key": fingerprint},
        summary=f"{moved} credential(s) re-encrypted under vault key {fingerprint}.",
    )
    return moved


def credentials_check_decryptable() -> None:
    """Fail at start when a stored secret cannot be decrypted with the configured keys (not at first use).

    Skipped quietly before the first migration, when there is no table yet.
    """
    from django.db import DatabaseError

    try:
        stored = [(str(c), c.ciphertext) for c in Credential.objects.select_related("system")] + [
            (str(c), c.ciphertext) for c in AgentCredential.objects.select_related("system", "agent")
        ]
    except DatabaseError:
        return
    for name, ciphertext in stored:
        try:
            credentials.decrypt(ciphertext)
        except credentials.CredentialUndecryptable as exc:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(f"The {name}: {exc}") from exc
