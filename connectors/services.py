"""State changes of connector data: setting and re-encrypting vaulted credentials, audited."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors import credentials
from connectors.models import Credential


@transaction.atomic
def credential_set(*, system, secret: str, actor, channel: Channel | str, **attributes) -> Credential:
    """Store a new secret for `system` (a first secret or a rotation); the audit event never holds the secret."""
    credential = Credential.objects.select_for_update().filter(system=system).first()
    rotated = credential is not None
    if credential is None:
        credential = Credential(system=system)
    for name, value in attributes.items():
        setattr(credential, name, value)
    credential.encrypt_secret(secret)
    credential.last_rotated_at = timezone.now()
    credential.full_clean(exclude=["system", "ciphertext", "key_fingerprint"])
    credential._change_reason = "secret rotated" if rotated else "secret set"  # type: ignore[attr-defined]
    credential.save()
    audit_record(
        verb=Verb.CREDENTIAL_SET,
        actor=actor,
        channel=channel,
        system=system,
        input={"kind": credential.kind, "rotated": rotated, "key": credential.key_fingerprint},
        summary=f"Credential for {system} {'rotated' if rotated else 'set'}.",
    )
    return credential


@transaction.atomic
def credentials_reencrypt(*, actor, channel: Channel | str) -> int:
    """Re-encrypt every credential under the first vault key, so older keys can be retired. Returns how many moved."""
    fingerprint = credentials.primary_key_fingerprint()
    moved = 0
    for credential in Credential.objects.select_for_update().exclude(key_fingerprint=fingerprint):
        credential.ciphertext = credentials.reencrypt(credential.ciphertext)
        credential.key_fingerprint = fingerprint
        credential._change_reason = "re-encrypted under the current key"  # type: ignore[attr-defined]
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


def events_list(*, agent, system_slug: str | None, after: int, limit: int, channel) -> list[dict]:
    """Events from event-queue systems the agent holds a read grant on, oldest first after the cursor `after`.

    Only granted fields of each event's data are returned; the audit event counts the events and names the fields.
    """
    from django.utils import timezone

    from audit.choices import Verb
    from connectors.models import Event
    from governance.choices import Access, IntegrationPattern
    from governance.errors import ScopeDenied
    from governance.gate import Target, ensure_may_act, find_system, refuse
    from governance.models import ScopeGrant

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
        raise refuse(
            ScopeDenied(f"{agent.slug} may not read events of {system}."),
            agent=agent,
            channel=channel,
            target=Target(system=system),
        )
    events = list(
        Event.objects.filter(resource_id__in=fields_by_resource, pk__gt=after)
        .select_related("system", "resource")
        .order_by("pk")[:limit]
    )
    result = [
        {
            "id": event.pk,
            "system": event.system.slug,
            "resource": event.resource.name,
            "record_id": event.record_id,
            "data": {
                name: event.data.get(name) for name in fields_by_resource[event.resource_id] if name in event.data
            },
            "received_at": event.received_at,
        }
        for event in events
    ]
    audit_record(
        verb=Verb.READ,
        actor=agent,
        channel=channel,
        system=system,
        resource="events",
        input={
            "after": after,
            "count": len(result),
            "fields": sorted({f for v in fields_by_resource.values() for f in v}),
        },
        summary=f"{agent.slug} read {len(result)} event(s)" + (f" of {system}" if system else "") + f" after #{after}.",
    )
    return result
