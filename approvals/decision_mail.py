"""The e-mail that asks a person to decide a proposal: the change as its page shows it, and a link of their own.

Each person who may decide gets a message of their own (plain text, and an HTML part with inline styles and no
images), with a signed link that opens the proposal's page once, for them (approvals/decision_links.py). Addresses
that are not a person's account (a system's on-call contact) get the same facts with the page's plain address.

What an agent wrote — its reason, the record id, the payload's values, and the sentence made of them — is text, never
markup or a link: the HTML part is rendered with Django's autoescape, and in both parts a web address inside that text
is made inert ("https[:]//…", "www[.]…"), so a mail program does not turn it into a link that seems to come from
Gatehouse. The only links in the message are Gatehouse's own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db import DatabaseError
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from approvals.decision_links import decision_link_issue
from approvals.models import Proposal
from approvals.wording import EMPTY, amount_text, field_label, field_text, proposal_sentence
from audit.choices import Verb
from audit.models import AuditEvent
from core.durations import duration_words
from core.mail import admin_link, inert, one_line, send_notice, site_link

if TYPE_CHECKING:
    from collections.abc import Iterable

    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)


# A scheme and its "//" ("https://", "javascript://"), or "www." at a word's start: what mail programs make links of.
def _line(text: str) -> str:
    """What an agent wrote, for a place that is one line (a value, the sentence): inert, its line breaks made spaces,
    so it cannot lay out lines of its own that read as the mail's."""
    return inert(one_line(text))


def _day_clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


def _span(delta: timedelta) -> str:
    """A time left or past, to the minute: "4 hours", "1 hour 20 minutes"."""
    minutes = max(1, round(abs(delta.total_seconds()) / 60))
    return duration_words(timedelta(minutes=minutes))


@dataclass(frozen=True)
class Change:
    field: str
    then: str  # the record's value the decision rests on ("" when the action sets no field of the record)
    proposed: str


@dataclass(frozen=True)
class DecisionFacts:
    """What the proposal's page shows first, as text: every value an agent chose is already inert."""

    sentence: str
    agent: str
    record: str  # "account 4471 in Sample CRM (crm)"
    basis: str  # "when proposed", or "when decided again" after the record moved
    basis_at: str
    sets_fields: bool  # the action changes fields of the record (then → proposed), or sends a payload (proposed)
    changes: list[Change]
    impact: str
    rule: str
    reason: str
    due: str  # "Decide by 2026-12-02 14:37 UTC, in 4 hours."


def _basis(proposal: Proposal) -> tuple[str, datetime]:
    """As on the page: the values and the impact are those read when it was proposed, or when last decided again."""
    again = (
        AuditEvent.objects.filter(proposal_id=proposal.pk, verb__in=[Verb.STALE, Verb.REFRESHED])
        .order_by("-id")
        .values_list("occurred_at", flat=True)
        .first()
    )
    return ("when decided again", again) if again else ("when proposed", proposal.created_at)


def _due(proposal: Proposal, now: datetime) -> str:
    """The time to decide, in words: by when, and how long is left (or since when it is overdue, and when it
    expires)."""
    sla, expires = proposal.sla_due_at, proposal.expires_at
    if sla is not None and sla > now:
        return f"Decide by {_day_clock(sla)}, in {_span(sla - now)}."
    if sla is not None and expires is not None:
        return (
            f"Its time to decide ran out at {_day_clock(sla)} ({_span(now - sla)} ago). It is never approved "
            f"automatically: it expires undecided at {_day_clock(expires)}, in {_span(expires - now)}."
        )
    if expires is not None:
        return f"Decide before it expires at {_day_clock(expires)}, in {_span(expires - now)}."
    return ""


def decision_facts(proposal: Proposal, *, now: datetime | None = None) -> DecisionFacts:
    """The facts the mail shows, from the proposal as stored (no call to the system: the page reads it live)."""
    now = now or timezone.now()
    action = proposal.action_type
    payload = proposal.payload if isinstance(proposal.payload, dict) else {}
    snapshot = proposal.record_snapshot or {}
    sets_fields = bool(payload) and set(payload) <= set((action.operation or {}).get("fields") or [])
    changes = [
        Change(
            field=_line(field_label(name)),
            then=_line(field_text(action, name, snapshot.get(name))) if name in snapshot and sets_fields else "",
            proposed=_line(field_text(action, name, value)),
        )
        for name, value in payload.items()
    ]
    if sets_fields:
        changes = [change if change.then else Change(change.field, "not kept", change.proposed) for change in changes]
    basis, basis_at = _basis(proposal)
    amount = proposal.impact_amount
    impact = "unknown" if amount is None else f"{amount_text(amount)} {proposal.impact_currency}"
    terms = (proposal.decision or {}).get("reason") or "no rule decided: a person decides (fail closed)"
    band = proposal.get_mode_display()
    if proposal.approver is not None:
        band += f"; named approver {proposal.approver.get_full_name() or proposal.approver.get_username()}"
    return DecisionFacts(
        sentence=_line(proposal_sentence(proposal)),
        agent=proposal.agent.slug,
        record=_line(
            f"{action.resource.label} {proposal.record_id} in {proposal.system.name} ({proposal.system.slug})"
        ),
        basis=basis,
        basis_at=_day_clock(basis_at),
        sets_fields=sets_fields,
        changes=changes,
        impact=f"{impact}, computed by Gatehouse {basis}",
        rule=_line(f"{terms} ({band})"),
        reason=inert(proposal.reason.strip()) or "(none given)",
        due=_due(proposal, now),
    )


def _text(facts: DecisionFacts, *, lead: str, link: str, expires: str, page: str, queue: str) -> str:
    """The plain-text part. The agent's reason is quoted line by line, so nothing it says reads as Gatehouse's."""
    if facts.sets_fields:
        change = f"Change ({facts.basis}, {facts.basis_at} → proposed):\n" + "\n".join(
            f"  {c.field}: {c.then} → {c.proposed}" for c in facts.changes
        )
    else:
        change = "Proposed:\n" + ("\n".join(f"  {c.field}: {c.proposed}" for c in facts.changes) or f"  {EMPTY}")
    reason = "\n".join(f"  > {line}" for line in facts.reason.splitlines() or [""])
    if link:
        opening = (
            f"Open it to decide (a link for you alone; it opens the page once, until {expires}):\n{link}\n\n"
            "The link only opens the page: sign in if asked, look at the record as it is now, then press Approve "
            "or Reject. It decides nothing by itself."
        )
    else:
        opening = f"Open it to decide:\n{page}"
    return (
        f"{lead}\n\n{facts.sentence}\n\n"
        f"Record: {facts.record}\nAgent: {facts.agent}\n{change}\nImpact: {facts.impact}\n"
        f"Rule and band: {facts.rule}\nThe agent's reason:\n{reason}\n\n"
        f"{facts.due}\n\n{opening}\n\nYour queue: {queue}\n"
    )


def send_decision_request(
    proposal: Proposal, *, subject: str, lead: str, users: Iterable[User], addresses: Iterable[str | None] = ()
) -> None:
    """Ask each of `users` to decide `proposal`, each with a link of their own; tell `addresses` (not a person's
    account) the same without one. A link that cannot be made (the database is away) leaves that person the page's
    plain address: being told matters more than the shortcut."""
    facts, lead, subject = decision_facts(proposal), _line(lead), inert(subject)
    page, queue = admin_link(proposal), site_link(reverse("admin:approvals_proposal_changelist"))
    seen: set[int] = set()
    for user in users:
        if user.pk in seen or not user.email:
            continue
        seen.add(user.pk)
        link, expires = "", ""
        try:
            link, row = decision_link_issue(proposal=proposal, user=user)
            expires = _day_clock(row.expires_at)
        except DatabaseError:
            logger.exception("could not make %s's decision link for proposal %s", user.get_username(), proposal.pk)
        _send(facts, subject=subject, lead=lead, to=[user.email], link=link, expires=expires, page=page, queue=queue)
    others = [address for address in addresses if address]
    if others:
        _send(facts, subject=subject, lead=lead, to=others, link="", expires="", page=page, queue=queue)


def _send(
    facts: DecisionFacts, *, subject: str, lead: str, to: list[str], link: str, expires: str, page: str, queue: str
) -> None:
    parts = {"lead": lead, "link": link, "expires": expires, "page": page, "queue": queue}
    html = render_to_string("mail/decision_request.html", {"facts": facts, **parts})
    send_notice(subject, _text(facts, **parts), to, html=html)
