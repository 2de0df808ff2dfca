"""Changing subscriptions and replaying parked deliveries: the one path for every door (admin, commands).

Who may: superusers and the Operators role (the `webhooks.*_subscription` and `change_delivery` permissions, given in
governance/roles.py); a command is the operator at the shell (actor None). A subscription sends governance events out
of Gatehouse, so its address is held to the control plane's allow-list and every change of it is a configuration
change in the trail (`configured`, field by field, the secret never).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from connectors import credentials
from governance.configuration import configuration_change, snapshot
from webhooks.addresses import url_refusal
from webhooks.choices import DeliveryStatus
from webhooks.events import pattern_errors
from webhooks.models import Delivery, Subscription
from webhooks.outbox import forget_subscriptions, publish
from webhooks.signing import new_secret, secret_error

# Kept out of the trail's snapshots: the vaulted secrets and their bookkeeping (a rotation shows as secret_rotated_at).
NOT_RECORDED = ("ciphertext", "previous_ciphertext", "key_fingerprint", "previous_until")


def may_manage(user: User | None) -> bool:
    return user is None or user.is_superuser or user.has_perm("webhooks.change_subscription")


def may_replay(user: User | None) -> bool:
    return user is None or user.is_superuser or user.has_perm("webhooks.change_delivery")


def _checked(subscription: Subscription) -> None:
    errors: dict[str, list[str]] = {}
    refusal = url_refusal(subscription.url)
    if refusal:
        errors["url"] = [refusal]
    if not isinstance(subscription.event_types, list):
        errors["event_types"] = ["A list of event types or groups."]
    elif problems := pattern_errors(subscription.event_types):
        errors["event_types"] = problems
    if errors:
        raise ValidationError(errors)


def _set_secret(subscription: Subscription, secret: str) -> None:
    problem = secret_error(secret)
    if problem:
        raise ValidationError({"secret": [problem]})
    subscription.ciphertext = credentials.encrypt(secret)
    subscription.key_fingerprint = credentials.primary_key_fingerprint()
    subscription.secret_rotated_at = timezone.now()


@transaction.atomic
def subscription_save(
    *, subscription: Subscription, actor: User | None, channel: Channel | str, reason: str = "", secret: str = ""
) -> str | None:
    """Create `subscription` (unsaved) or save its changes, checked and audited in one transaction.

    A new one is signed with `secret` when given (vaulted; never echoed), else with one Gatehouse makes, which is
    returned: the caller shows it once. The secret of an existing subscription changes only by rotation.
    """
    if not may_manage(actor):
        raise PermissionDenied("Only operators and superusers manage webhook subscriptions.")
    _checked(subscription)
    adding = subscription.pk is None
    before = None
    made = None
    if adding:
        made = None if secret else new_secret()
        _set_secret(subscription, secret or made or "")
        subscription.created_by = actor
    else:
        Subscription.objects.select_for_update().filter(pk=subscription.pk).exists()  # one change at a time
        before = snapshot(subscription, exclude=NOT_RECORDED)
    subscription.save()
    configuration_change(
        obj=subscription,
        before=before,
        after=snapshot(subscription, exclude=NOT_RECORDED),
        user=actor,
        channel=channel,
        reason=reason,
    )
    transaction.on_commit(forget_subscriptions)
    return made


@dataclass(frozen=True)
class Rotation:
    subscription: Subscription
    secret: str | None  # the new secret when Gatehouse made it (shown once); None when the operator gave it
    previous_until: datetime


@transaction.atomic
def subscription_rotate_secret(
    *, subscription_id: int, actor: User | None, channel: Channel | str, secret: str = "", reason: str = ""
) -> Rotation:
    """A new secret; the previous one keeps signing beside it for GATEHOUSE_WEBHOOK_SECRET_OVERLAP, so the receiver
    can switch without losing a delivery. Audited as a configuration change (when, never what)."""
    if not may_manage(actor):
        raise PermissionDenied("Only operators and superusers manage webhook subscriptions.")
    subscription = Subscription.objects.select_for_update().get(pk=subscription_id)
    before = snapshot(subscription, exclude=NOT_RECORDED)
    previous = subscription.ciphertext
    made = None if secret else new_secret()
    _set_secret(subscription, secret or made or "")
    subscription.previous_ciphertext = previous
    subscription.previous_until = timezone.now() + settings.GATEHOUSE_WEBHOOK_SECRET_OVERLAP
    subscription.save()
    configuration_change(
        obj=subscription,
        before=before,
        after=snapshot(subscription, exclude=NOT_RECORDED),
        user=actor,
        channel=channel,
        reason=reason or "signing secret rotated",
    )
    return Rotation(subscription, made, subscription.previous_until)


@transaction.atomic
def subscription_secrets_reencrypt(*, actor: User | None, channel: Channel | str) -> int:
    """Re-encrypt every subscription's secrets under the vault's first key (after `reencrypt_credentials`, before the
    old key is dropped); audited as one configuration event. Returns how many moved."""
    fingerprint = credentials.primary_key_fingerprint()
    moved = 0
    for subscription in Subscription.objects.select_for_update().exclude(key_fingerprint=fingerprint):
        subscription.ciphertext = credentials.reencrypt(subscription.ciphertext)
        if subscription.previous_ciphertext:
            subscription.previous_ciphertext = credentials.reencrypt(subscription.previous_ciphertext)
        subscription.key_fingerprint = fingerprint
        subscription.save(update_fields=["ciphertext", "previous_ciphertext", "key_fingerprint", "updated_at"])
        moved += 1
    audit_record(
        verb=Verb.CREDENTIAL_REENCRYPTED,
        actor=actor,
        channel=channel,
        input={"count": moved, "key": fingerprint, "object": "webhook subscription"},
        summary=f"{moved} webhook secret(s) re-encrypted under vault key {fingerprint}.",
    )
    return moved


@dataclass(frozen=True)
class Replay:
    replayed: list[int]
    skipped: int  # asked for but not parked (delivered meanwhile, already replayed, never parked)


@transaction.atomic
def deliveries_replay(*, delivery_ids: Iterable[int], actor: User | None, channel: Channel | str) -> Replay:
    """Send parked deliveries again: each waits anew, with a fresh GATEHOUSE_WEBHOOK_RETRY_FOR, under its own
    `webhook-id` (a receiver that did take it before drops it). One audit event names them; published after commit."""
    if not may_replay(actor):
        raise PermissionDenied("Only operators and superusers replay webhook deliveries.")
    wanted = sorted(set(delivery_ids))
    now = timezone.now()
    parked = list(
        Delivery.objects.select_for_update()
        .filter(pk__in=wanted, status=DeliveryStatus.PARKED)
        .select_related("subscription")
        .order_by("pk")
    )
    for delivery in parked:
        delivery.status = DeliveryStatus.PENDING
        delivery.next_attempt_at = now
        delivery.retry_until = now + settings.GATEHOUSE_WEBHOOK_RETRY_FOR
        delivery.replays += 1
        delivery.save(update_fields=["status", "next_attempt_at", "retry_until", "replays"])
    replayed = [delivery.pk for delivery in parked]
    if replayed:
        who = (actor.get_full_name() or actor.get_username()) if actor else "An operator (command line)"
        receivers = sorted({delivery.subscription.url for delivery in parked})
        audit_record(
            verb=Verb.WEBHOOK_REPLAYED,
            actor=actor,
            channel=channel,
            input={"deliveries": replayed, "subscriptions": sorted({d.subscription_id for d in parked})},
            summary=f"{who} replayed {len(replayed)} parked webhook deliver{'y' if len(replayed) == 1 else 'ies'} "
            f"to {', '.join(receivers)}."[:500],
        )
        transaction.on_commit(lambda: publish(replayed))
    return Replay(replayed, len(wanted) - len(replayed))
