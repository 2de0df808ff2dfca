"""Signed links in the approver's e-mail: each opens one proposal's page, for one person, once, for a while.

A link is a token signed with Django's TimestampSigner under a salt of its own (nothing else Gatehouse signs can pass
for one), naming a stored DecisionLink row, the proposal, the recipient and the purpose "decide". The signature makes
it impossible to forge or to point at another proposal or person; the row makes it single-use and lets it lapse with
the time to decide. Neither grants anything: the page still needs the recipient's own signed-in session, and the
decision still needs the click on Approve or Reject, through approvals/decisions.py like every other door.

What "used" means, and why: a link is spent the first time its recipient opens it signed in, so opening it again —
even only to look — is refused, and once the proposal is decided (by anyone, through any door) every link to it is.
A mail can be forwarded, kept in a shared mailbox or read over someone's shoulder; a link that keeps working after it
did its one job only widens that. Opening it without a session spends nothing (the person is sent to sign in first),
so a mail filter that fetches links to scan them does not use it up. The approver who wants the page again finds it
in their queue.

Every refusal is a `denied` audit event naming the person, the proposal (when the address names one) and why.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from approvals.models import DecisionLink, Proposal
from approvals.transitions import RELATED, record_event
from audit.choices import Channel, Verb
from audit.services import audit_record
from core.mail import site_link

if TYPE_CHECKING:
    from django.contrib.auth.models import User

SALT = "gatehouse.approvals.decision-link"
DECIDE = DecisionLink.Purpose.DECIDE
# Where the session keeps the link its person arrived by, so the decision made on that page can be checked against
# the link's proposal (approvals/admin/decision_links.py).
SESSION_KEY = "gatehouse_decision_link"


@dataclass(frozen=True)
class Refusal:
    code: str  # the audit event's outcome: link_broken, link_expired, link_used, link_decided, link_not_yours, …
    title: str  # what the page says, in one line
    detail: str  # and what to do about it


class LinkRefused(Exception):
    """A link that may not be used: broken, lapsed, spent, not the person's, or for another proposal. Audited."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.title)
        self.refusal = refusal


QUEUE = "Open your queue to find the proposal, if it still waits for you."
BROKEN = Refusal(
    "link_broken",
    "This link is not valid.",
    "It was changed or cut short on its way (a mail program may have broken it across lines). " + QUEUE,
)
EXPIRED = Refusal(
    "link_expired",
    "This link has expired.",
    "A link from an e-mail works until the time to decide runs out, and for a day at most. " + QUEUE,
)
USED = Refusal(
    "link_used",
    "This link was already used.",
    "A link from an e-mail opens the proposal once. " + QUEUE,
)
NOT_YOURS = Refusal(
    "link_not_yours",
    "This link was sent to someone else.",
    "Each person who may decide gets a link of their own. If you may decide this proposal too, it is in your queue; "
    "if you meant to sign in as someone else, sign out first.",
)
OTHER_PROPOSAL = Refusal(
    "link_other_proposal",
    "This link is for another proposal.",
    "A link opens the proposal it was sent for, and only that one. " + QUEUE,
)


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT)


def link_deadline(proposal: Proposal, *, now: datetime) -> datetime:
    """When a link made `now` lapses: when the time to decide runs out (the SLA; past the SLA, the proposal's maximum
    age), or after GATEHOUSE_APPROVAL_LINK_MAX_AGE, whichever comes first."""
    ends = [now + settings.GATEHOUSE_APPROVAL_LINK_MAX_AGE]
    if proposal.sla_due_at is not None and proposal.sla_due_at > now:
        ends.append(proposal.sla_due_at)
    elif proposal.expires_at is not None:
        ends.append(proposal.expires_at)
    return min(ends)


def decision_link_issue(*, proposal: Proposal, user: User) -> tuple[str, DecisionLink]:
    """A new link for `user` to open `proposal`'s page once: its absolute address, and its row."""
    link = DecisionLink.objects.create(
        proposal=proposal, user=user, purpose=DECIDE, expires_at=link_deadline(proposal, now=timezone.now())
    )
    token = _signer().sign_object(
        {"link": str(link.pk), "proposal": str(proposal.pk), "user": user.pk, "purpose": DECIDE}, compress=True
    )
    path = reverse("admin:approvals_decision_link", args=[proposal.pk, token])
    return site_link(path), link


def _claims(token: str) -> dict[str, Any]:
    """What the token says, once its signature holds and it is younger than the maximum age."""
    try:
        claims = _signer().unsign_object(token, max_age=settings.GATEHOUSE_APPROVAL_LINK_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise LinkRefused(EXPIRED) from exc
    except (signing.BadSignature, ValueError) as exc:  # ValueError: a signed value that is not our JSON
        raise LinkRefused(BROKEN) from exc
    if not isinstance(claims, dict) or claims.get("purpose") != DECIDE:
        raise LinkRefused(BROKEN)
    return claims


def _decided(proposal: Proposal) -> Refusal | None:
    """Why nothing is left to decide through a link to `proposal` (decided, withdrawn, expired…); None if it waits."""
    if proposal.awaiting_decision and not proposal.decided_by_id:
        return None
    then = "Its page, in the queue's “All proposals”, says what happened."
    if proposal.decided_by_id and proposal.decided_by is not None:
        who = proposal.decided_by.get_username()
        now = (
            "it waits for its second review now"
            if proposal.awaiting_review
            else f"it is {proposal.get_status_display().lower()} now"
        )
        return Refusal("link_decided", "This proposal was already decided.", f"{who} decided it: {now}. {then}")
    return Refusal(
        "link_decided",
        f"This proposal is {proposal.get_status_display().lower()}: nothing is left to decide.",
        then,
    )


def _check_open(token: str, *, proposal_id: uuid.UUID, user: User) -> DecisionLink:
    """The link, locked, after every check an opening must pass; LinkRefused otherwise."""
    claims = _claims(token)
    link = _locked(claims.get("link"))  # two tabs opening it at once: one spends it, the other is refused
    if link is None or str(link.proposal_id) != claims.get("proposal") or link.user_id != claims.get("user"):
        raise LinkRefused(BROKEN)  # signed by us, yet not a link we keep: refused like a forgery
    if link.proposal_id != proposal_id:
        raise LinkRefused(OTHER_PROPOSAL)
    if link.user_id != user.pk:
        raise LinkRefused(NOT_YOURS)
    if link.expires_at <= timezone.now():
        raise LinkRefused(EXPIRED)
    if link.opened_at is not None:
        raise LinkRefused(USED)
    proposal = Proposal.objects.select_related(*RELATED, "decided_by").get(pk=link.proposal_id)
    decided = _decided(proposal)  # by anyone, through any door: every link to it is done with
    if decided is not None:
        raise LinkRefused(decided)
    return link


def decision_link_open(*, token: str, proposal_id: uuid.UUID, user: User) -> DecisionLink:
    """Spend the link `token` for `user`, who opens it at the address of `proposal_id`; LinkRefused (audited) when it
    may not be. Changes nothing about the proposal: the caller only shows its page."""
    refusal = None
    with transaction.atomic():
        try:
            link = _check_open(token, proposal_id=proposal_id, user=user)
        except LinkRefused as exc:
            refusal = exc
            _audit_refusal(exc.refusal, user=user, proposal_id=proposal_id, step="opened")
        else:
            link.opened_at = timezone.now()
            link.save(update_fields=["opened_at"])
    if refusal is not None:
        raise refusal  # after the block: the refusal's audit event is kept
    return link


def decision_link_check(*, link_id: str, arrived_by: str, proposal_id: uuid.UUID, user: User) -> DecisionLink:
    """The decision posted from a page opened by link `link_id` is for that link's proposal, by its recipient, in the
    session that opened it (`arrived_by`), and the first made through it; LinkRefused (audited) otherwise.

    This binds the link to its proposal once more at the moment of deciding: a page opened by one proposal's link
    cannot carry that link into a decision on another. Whether this person may decide at all is the decision
    service's question (approvals/decisions.py), asked after this one whatever the answer here."""
    refusal = None
    with transaction.atomic():
        link = _locked(link_id)
        if link is None or link_id != arrived_by or link.opened_at is None:
            refusal = LinkRefused(BROKEN)
        elif link.user_id != user.pk:
            refusal = LinkRefused(NOT_YOURS)
        elif link.proposal_id != proposal_id:
            refusal = LinkRefused(OTHER_PROPOSAL)
        elif link.decided_at is not None:
            refusal = LinkRefused(USED)
        if refusal is not None:
            _audit_refusal(refusal.refusal, user=user, proposal_id=proposal_id, step="tried to decide through")
    if refusal is not None:
        raise refusal
    assert link is not None
    return link


def decision_link_decided(*, link: DecisionLink) -> None:
    """Note that a decision was made through `link` (it is spent already; this says what it led to)."""
    DecisionLink.objects.filter(pk=link.pk, decided_at__isnull=True).update(decided_at=timezone.now())


def _locked(link_id: Any) -> DecisionLink | None:
    """The link row named `link_id`, locked until the caller's transaction ends; None for no such link."""
    try:
        pk = uuid.UUID(str(link_id))
    except ValueError:
        return None
    return DecisionLink.objects.select_for_update().filter(pk=pk, purpose=DECIDE).first()


def _audit_refusal(refusal: Refusal, *, user: User, proposal_id: uuid.UUID, step: str) -> None:
    """A `denied` event naming the person and why; on the proposal the address names, when there is one."""
    proposal = Proposal.objects.select_related(*RELATED).filter(pk=proposal_id).first()
    event: dict[str, Any] = {
        "verb": Verb.DENIED,
        "actor": user,
        "channel": Channel.ADMIN,
        "outcome": refusal.code,
        "input": {"purpose": DECIDE, "refused": refusal.code},
    }
    if proposal is None:
        audit_record(
            **event,
            summary=f"{user.get_username()} {step} an e-mailed decision link for no known proposal: refused "
            f"({refusal.title.rstrip('.').lower()}).",
        )
        return
    record_event(
        proposal,
        **event,
        summary=f"{user.get_username()} {step} an e-mailed decision link for {proposal.action_type.name} on "
        f"{proposal.record_id}: refused ({refusal.title.rstrip('.').lower()}).",
    )
