"""E-mail about vaulted credentials: a rotation whose health check failed, a rotation coming due. Never the secret."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

logger = logging.getLogger(__name__)


def credential_url(credential) -> str:
    return settings.BASE_URL.rstrip("/") + reverse("admin:connectors_credential_change", args=[credential.pk])


def _send(subject: str, body: str, recipients: list[str]) -> None:
    recipients = sorted({address for address in recipients if address})
    if not recipients:
        return
    try:
        send_mail(f"[Gatehouse] {subject}", body, None, recipients)
    except Exception:  # a mail outage must not undo the rotation (or the notice) that was already recorded
        logger.exception("could not send %r to %s", subject, recipients)


def notify_rotation_failed(credential, *, reason: str, stored: bool) -> None:
    """The owner (and, when Gatehouse now holds a secret the system refuses, on-call) hears of a failed check."""
    system = credential.system
    if stored:
        subject = f"Credential of {system.slug} rotated, but the system refuses it"
        body = (
            f"The new secret for {system} is stored, and the health check with it failed:\n  {reason}\n\n"
            "The previous secret did not pass either, so Gatehouse keeps the new one. Calls to the system will fail "
            "until it accepts the secret: check it, and rotate again with the right one."
        )
        recipients = [system.owner.email, system.oncall_contact]
    else:
        subject = f"Credential of {system.slug} not rotated: the system refused the new secret"
        body = (
            f"The health check of {system} with the new secret failed:\n  {reason}\n\n"
            "The system still accepts the current secret, so nothing was changed. Rotate again with the right one."
        )
        recipients = [system.owner.email]
    _send(subject, f"{body}\n\n{credential_url(credential)}", recipients)


def notify_rotation_due(credential, *, overdue: bool) -> None:
    system = credential.system
    due = f"{credential.rotation_due_at:%Y-%m-%d %H:%M} UTC"
    if overdue:
        subject = f"Credential of {system.slug} is overdue for rotation"
        body = (
            f"The credential Gatehouse uses for {system} was due for rotation on {due}. Until it is rotated, the "
            "readiness checklist fails for every agent that writes to the system."
        )
    else:
        subject = f"Credential of {system.slug} is due for rotation"
        body = f"The credential Gatehouse uses for {system} is due for rotation on {due}."
    body += (
        f"\n\nRotate it with `manage.py rotate_credential {system.slug}` (the new secret on stdin) or in the admin:"
        f"\n{credential_url(credential)}"
    )
    _send(subject, body, [system.owner.email])
