"""State changes of connector data: setting, rotating and re-encrypting vaulted credentials, audited."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.models import AuditEvent
from audit.services import audit_record
from connectors import credentials
from connectors.base import Health
from connectors.models import Credential
from connectors.notify import notify_rotation_due, notify_rotation_failed
from connectors.registry import connector_for
from governance.models import System


@transaction.atomic
def credential_set(
    *,
    system: System,
    secret: str,
    actor: User | None,
    channel: Channel | str,
    health: Health | None = None,
    **attributes: Any,
) -> Credential:
    """Store a new secret for `system` (a first secret or a rotation); the audit event never holds the secret.

    `health` is the result of checking the system with this secret before it was stored (`credential_rotate`): the
    same audit event records it, outcome `health_failed` when it did not pass.
    """
    found = Credential.objects.select_for_update().filter(system=system).first()
    rotated = found is not None
    credential = found if found is not None else Credential(system=system)
    for name, value in attributes.items():
        setattr(credential, name, value)
    credential.encrypt_secret(secret)
    credential.last_rotated_at = timezone.now()
    credential.full_clean(exclude=["system", "ciphertext", "key_fingerprint"])
    credential._change_reason = "secret rotated" if rotated else "secret set"  # type: ignore[union-attr]
    credential.save()
    checked = {} if health is None else {"health": {"ok": health.ok, "reason": health.reason}}
    audit_record(
        verb=Verb.CREDENTIAL_SET,
        actor=actor,
        channel=channel,
        system=system,
        input={"kind": credential.kind, "rotated": rotated, "key": credential.key_fingerprint, **checked},
        outcome="ok" if health is None or health.ok else "health_failed",
        summary=f"Credential for {system} {'rotated' if rotated else 'set'}."
        + ("" if health is None else f" Health check with it: {'ok' if health.ok else health.reason}"),
    )
    return credential


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: whether the new secret is now the stored one, and the system's answer to it."""

    credential: Credential
    stored: bool
    health: Health
    previous_health: Health | None = None  # checked only when the new secret failed


def _check(system: System, secret: str | None = None) -> Health:
    """The system's health check with `secret` (default: the vaulted one). A check reports; it never raises."""
    try:
        health = connector_for(system, secret=secret).health()
    except Exception as exc:  # no connector for the kind, a bad config, an undecryptable old secret, a bug
        health = Health(False, f"the check could not run: {exc}")
    if secret and secret in health.reason:  # a system that echoes the credential in its error must not leak it
        health = Health(health.ok, health.reason.replace(secret, "[secret]"))
    return health


def credential_rotate(*, system: System, new_secret: str, actor: User | None, channel: Channel | str) -> Rotation:
    """Rotate `system`'s secret: check the system with the new secret, store it, audit both in one event.

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
    current = Credential.objects.select_related("system").filter(system=system).first()
    if current is None:
        raise ValidationError(f"{system} has no vaulted credential to rotate: add one in the admin first.")
    # Both checks through the row just read, so the current secret and kind are the stored ones, not a stale cache.
    health = _check(current.system, new_secret)
    previous = None if health.ok else _check(current.system)
    if previous is not None and previous.ok:
        _credential_rotation_refused(credential=current, health=health, actor=actor, channel=channel)
        return Rotation(credential=current, stored=False, health=health, previous_health=previous)
    with transaction.atomic():
        credential = credential_set(system=system, secret=new_secret, actor=actor, channel=channel, health=health)
        if not health.ok:
            transaction.on_commit(
                functools.partial(notify_rotation_failed, credential, reason=health.reason, stored=True)
            )
    return Rotation(credential=credential, stored=True, health=health, previous_health=previous)


@transaction.atomic
def _credential_rotation_refused(
    *, credential: Credential, health: Health, actor: User | None, channel: Channel | str
) -> None:
    audit_record(
        verb=Verb.CREDENTIAL_SET,
        actor=actor,
        channel=channel,
        system=credential.system,
        input={"kind": credential.kind, "rotated": False, "health": {"ok": False, "reason": health.reason}},
        outcome="refused",
        summary=f"Credential for {credential.system} not rotated: the system refused the new secret "
        f"({health.reason}) and still accepts the current one.",
    )
    transaction.on_commit(functools.partial(notify_rotation_failed, credential, reason=health.reason, stored=False))


def credentials_tell_rotation_due(*, now: datetime | None = None) -> int:
    """Tell each owner whose credential is overdue for rotation, or due within ROTATION_NOTICE (connectors/models.py);
    at most once a day.

    Each notice is an audit event (verb `escalated`, resource `credential`, outcome `rotation_due` or
    `rotation_overdue`), and that event is the once-a-day guard: it is looked for under the credential's row lock,
    so two beat runs (or two beat processes) cannot both send. Returns how many owners were told.
    """
    now = now or timezone.now()
    day_start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    due = list(Credential.objects.rotation_due(now).values_list("pk", flat=True))
    told = 0
    for pk in due:
        with transaction.atomic():
            credential = Credential.objects.select_for_update().filter(pk=pk).first()
            if credential is None or not credential.rotation_state(now):
                continue  # deleted or rotated meanwhile
            already = AuditEvent.objects.filter(
                verb=Verb.ESCALATED, system_id=credential.system_id, resource="credential", occurred_at__gte=day_start
            ).exists()
            if already:
                continue
            credential = Credential.objects.select_related("system__owner").get(pk=pk)
            overdue = credential.rotation_state(now) == "overdue"
            audit_record(
                verb=Verb.ESCALATED,
                actor=None,
                channel=Channel.TASK,
                system=credential.system,
                resource="credential",
                input={"due_at": credential.rotation_due_at, "owner": credential.system.owner.get_username()},
                outcome="rotation_overdue" if overdue else "rotation_due",
                summary=f"Told {credential.system.owner.get_username()} that the credential of {credential.system} "
                f"{'was' if overdue else 'is'} due for rotation on {credential.rotation_due_at:%Y-%m-%d}.",
            )
            transaction.on_commit(functools.partial(notify_rotation_due, credential, overdue=overdue))
            told += 1
    return told


@transaction.atomic
def credentials_reencrypt(*, actor: User | None, channel: Channel | str) -> int:
    """Re-encrypt every credential under the first vault key, so older keys can be retired. Returns how many moved."""
    fingerprint = credentials.primary_key_fingerprint()
    moved = 0
    for credential in Credential.objects.select_for_update().exclude(key_fingerprint=fingerprint):
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
        ciphertexts = list(Credential.objects.values_list("system__slug", "ciphertext"))
    except DatabaseError:
        return
    for slug, ciphertext in ciphertexts:
        try:
            credentials.decrypt(ciphertext)
        except credentials.CredentialUndecryptable as exc:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(f"The credential of system {slug!r}: {exc}") from exc
