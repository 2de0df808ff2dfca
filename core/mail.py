"""E-mail from Gatehouse: one sender for every notice, and one way to link a notice to an admin page.

Notices are sent after the change they report has committed, so a mail server that is down or slow must never undo
or repeat that change: a failure to send is logged, not raised. A notice is plain text, with an HTML alternative when
its sender gives one (the approver's decision request: approvals/decision_mail.py).
"""

from __future__ import annotations

import logging
import re
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


_ADDRESS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(?=//)|\b(www)\.")


def inert(text: str) -> str:
    """`text` with every web address in it made inert: "https://x.example" → "https[:]//x.example", "www.x" →
    "www[.]x". For what someone else wrote (an agent's reason, an MCP server's tool description), shown to a person
    (mail, Slack): a mail program or Slack links a bare address by itself."""
    return _ADDRESS.sub(lambda m: f"{m[1]}[:]" if m[1] else f"{m[2]}[.]", text)


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
