"""E-mail from Gatehouse: one sender for every notice, and one way to link a notice to an admin page.

Notices are sent after the change they report has committed, so a mail server that is down or slow must never undo
or repeat that change: a failure to send is logged, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import Model
from django.urls import reverse

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "[Gatehouse] "


def admin_link(obj: Model) -> str:
    """The absolute address of `obj`'s page in the admin, for a person reading the e-mail (GATEHOUSE_BASE_URL)."""
    meta = obj._meta
    path = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return settings.BASE_URL.rstrip("/") + path


def send_notice(subject: str, body: str, recipients: Iterable[str | None]) -> bool:
    """Send one message to every address given (blanks and repeats dropped); False when nobody was told."""
    addresses = sorted({address for address in recipients if address})
    if not addresses:
        return False
    try:
        send_mail(SUBJECT_PREFIX + subject, body, None, addresses)
    except Exception:  # any mail failure: the state change it reports was already committed
        logger.exception("could not send %r to %s", subject, addresses)
        return False
    return True
