"""E-mail from Gatehouse: one sender for every notice, and one way to link a notice to an admin page.

Notices are sent after the change they report has committed, so a mail server that is down or slow must never undo
or repeat that change: a failure to send is logged, not raised. A notice is plain text, with an HTML alternative when
its sender gives one (the approver's decision request: approvals/decision_mail.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import Model
from django.urls import reverse

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "[Gatehouse] "


def admin_link(obj: Model) -> str:
    """The absolute address of `obj`'s page in the admin, for a person reading the e-mail (GATEHOUSE_BASE_URL)."""
    meta = obj._meta
    return site_link(reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk]))


def site_link(path: str) -> str:
    """The absolute address of a path of Gatehouse's, for a person reading the e-mail (GATEHOUSE_BASE_URL)."""
    return settings.BASE_URL.rstrip("/") + path


def one_line(text: str) -> str:
    """`text` with every run of whitespace (line breaks among them) made one space: a subject line stays one line,
    whatever a record id or an action's name holds (a line break in a header is refused by the mail library)."""
    return " ".join(text.split())


def send_notice(subject: str, body: str, recipients: Iterable[str | None], *, html: str = "") -> bool:
    """Send one message to every address given (blanks and repeats dropped); False when nobody was told.

    With `html`, the message is multipart/alternative: `body` as its plain text, `html` as the part mail programs
    show. Whoever builds the HTML escapes what they put in it."""
    addresses = sorted({address for address in recipients if address})
    if not addresses:
        return False
    try:
        message = EmailMultiAlternatives(one_line(SUBJECT_PREFIX + subject), body, None, addresses)
        if html:
            message.attach_alternative(html, "text/html")
        message.send()
    except Exception:  # any mail failure: the state change it reports was already committed
        logger.exception("could not send %r to %s", subject, addresses)
        return False
    return True
