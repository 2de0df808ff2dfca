"""The approver's own page (`admin:approvals_mine`, /admin/approvals/mine/): what waits for me, what reaches me because
someone delegated to me or escalation reassigned it to me, what I decided in the last 7 days, and "I'm away".

Its own page rather than a section of the admin home: the home page already carries the role dashboard and its
charts (long on a phone), "I'm away" is a form that writes, and a page of its own has an address the e-mails and
the home page can link to. The home page's queue links here.

"I'm away" names a delegate for a period, and ends one, through approvals/delegation.py: the same service, checks
and audit events as the Delegations admin. The form offers active staff; whatever it is sent, the service judges,
and its refusal is said on the form (never an error page).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from approvals.choices import ProposalStatus, ReviewOutcome
from approvals.delegation import delegation_create, delegation_end, possible_delegates, stands_in
from approvals.models import Delegation, Proposal
from approvals.wording import amount_text, proposal_sentence
from audit.choices import Channel
from console.dashboard.wording import admin_url, sla_clock
from core.admin import admin_user
from core.moments import moment

LIST_LIMIT = 20  # rows per list; the queue (one link away) has them all
DECIDED_DAYS = 7
DECIDED_LIMIT = 50
LOCAL_INPUT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends and shows


@dataclass(frozen=True)
class Item:
    """One proposal on the page: its sentence linked to its decision page, the facts to pick it by, and a note (why
    it reaches me, or what I decided)."""

    proposal: Proposal
    what: str
    url: str
    impact: str
    clock: str
    overdue: bool = False
    note: str = ""


@dataclass(frozen=True)
class Section:
    items: list[Item]
    total: int


def _impact(proposal: Proposal) -> str:
    if proposal.impact_amount is None:
        return "impact unknown"
    return f"{amount_text(proposal.impact_amount)} {proposal.impact_currency}"


def _item(proposal: Proposal, now: datetime, *, note: str = "", clock: str = "") -> Item:
    overdue = False
    if not clock:
        clock, overdue = sla_clock(proposal.sla_due_at, now)
    url = admin_url("approvals_proposal_change", proposal.pk)
    return Item(proposal, proposal_sentence(proposal), url, _impact(proposal), clock, overdue, note)


def _waiting(queryset: Any) -> tuple[list[Proposal], int]:
    ordered = queryset.select_related("agent", "system", "action_type__resource", "approver", "reassigned_group")
    ordered = ordered.order_by(F("sla_due_at").asc(nulls_last=True), "created_at")
    total = queryset.count()
    return (list(ordered[:LIST_LIMIT]) if total else []), total


def _outcome(proposal: Proposal, user: Any, since: datetime) -> tuple[str, datetime | None]:
    """What I did with it, in words, and when: my second review, or my approval (with where it went since) or my
    rejection."""
    if proposal.reviewed_by_id == user.pk and proposal.reviewed_at and proposal.reviewed_at >= since:
        if proposal.review_outcome == ReviewOutcome.FLAGGED:
            return f"Second review: you flagged it ({proposal.review_comment})", proposal.reviewed_at
        return "Second review: you found it fine", proposal.reviewed_at
    if proposal.status == ProposalStatus.REJECTED:
        return f"You rejected it: {proposal.decision_comment}", proposal.decided_at
    since_then = "" if proposal.status == ProposalStatus.APPROVED else f"; now {proposal.get_status_display().lower()}"
    return f"You approved it{since_then}", proposal.decided_at


def own_lists(user: Any, now: datetime) -> dict[str, Section]:
    """The page's three lists for `user`; nobody else's proposals (each is a question the queryset answers for
    `user`: approvals/querysets.py)."""
    mine = Proposal.objects.visible_to(user)
    waiting, waiting_total = _waiting(mine.awaiting_as_approver(user))
    delegated, delegated_total = _waiting(mine.awaiting_as_stand_in(user))
    since = now - timedelta(days=DECIDED_DAYS)
    decided_query = mine.decided_by_since(user, since)
    decided = list(decided_query.select_related("agent", "system", "action_type__resource")[:DECIDED_LIMIT])
    decided_items = []
    for proposal in decided:
        outcome, at = _outcome(proposal, user, since)
        decided_items.append(_item(proposal, now, note=outcome, clock=moment(at) if at else ""))
    return {
        "waiting": Section([_item(proposal, now) for proposal in waiting], waiting_total),
        "delegated": Section(
            [
                _item(proposal, now, note=stands_in(user, proposal) or "reassigned to you when it escalated")
                for proposal in delegated
            ],
            delegated_total,
        ),
        "decided": Section(decided_items, decided_query.count() if len(decided) == DECIDED_LIMIT else len(decided)),
    }


# --- I'm away -----------------------------------------------------------------------------------------------------


class LocalMomentField(forms.DateTimeField):
    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format=LOCAL_INPUT)
    input_formats = [LOCAL_INPUT, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]


class AwayForm(forms.Form):
    """Who decides for me, from when until when, and why. The choice of people is a convenience: the service decides
    whether the delegation may be (approvals/delegation.py, delegation_check)."""

    delegate = forms.ModelChoiceField(queryset=get_user_model().objects.all(), label="Who decides for me")
    starts_at = LocalMomentField(label="From")
    ends_at = LocalMomentField(label="Until")
    reason = forms.CharField(max_length=300, initial="Out of office", label="Why", required=False)

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        zone = timezone.get_current_timezone_name()
        self.fields["starts_at"].label = f"From ({zone})"
        self.fields["ends_at"].label = f"Until ({zone})"
        self.fields["starts_at"].initial = timezone.localtime().replace(second=0, microsecond=0)
        people = possible_delegates().exclude(pk=user.pk)
        self.fields["delegate"].widget.choices = [("", "—")] + [
            (person.pk, f"{person.get_full_name()} ({person.get_username()})" if person.get_full_name() else person)
            for person in people.order_by("username")
        ]

    def refused(self, exc: ValidationError | PermissionDenied) -> None:
        """The service's reason, said beside the field it is about (or above the form)."""
        if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
            for field, errors in exc.error_dict.items():
                for error in errors:
                    self.add_error(field if field in self.fields else None, error)
        else:
            self.add_error(None, exc.messages if isinstance(exc, ValidationError) else str(exc))


def _away(request: HttpRequest, user: Any) -> AwayForm | HttpResponse:
    form = AwayForm(request.POST, user=user)
    if not form.is_valid():
        return form
    data = form.cleaned_data
    try:
        delegation = delegation_create(
            who=user,
            delegate=data["delegate"],
            starts_at=data["starts_at"],
            ends_at=data["ends_at"],
            reason=data["reason"],
            user=user,
            channel=Channel.ADMIN,
        )
    except (ValidationError, PermissionDenied) as exc:
        form.refused(exc)
        return form
    messages.success(
        request,
        f"From {moment(delegation.starts_at)} until {moment(delegation.ends_at)}, "
        f"{delegation.delegate.get_username()} decides what is named to you.",
    )
    return HttpResponseRedirect(reverse("admin:approvals_mine"))


def _end(request: HttpRequest, user: Any) -> HttpResponse:
    asked = request.POST.get("delegation") or ""
    delegation = (
        Delegation.objects.filter(pk=int(asked)).select_related("delegate").first()
        if asked.isascii() and asked.isdigit() and len(asked) < 19
        else None
    )
    if delegation is None:
        messages.error(request, "No such delegation.")
    else:
        try:
            delegation_end(delegation_id=delegation.pk, user=user, channel=Channel.ADMIN)
            messages.success(request, f"Ended: {delegation.delegate.get_username()} no longer decides for you.")
        except PermissionDenied as exc:
            messages.error(request, str(exc))
    return HttpResponseRedirect(reverse("admin:approvals_mine"))


def mine_view(request: HttpRequest) -> HttpResponse:
    """GET: the page. POST `step=away`: name a delegate; `step=end`: end one of mine (the service checks it is)."""
    user = admin_user(request)
    form = AwayForm(user=user)
    if request.method == "POST":
        step = request.POST.get("step")
        if step == "end":
            return _end(request, user)
        if step != "away":
            messages.error(request, "Unknown step.")
            return HttpResponseRedirect(reverse("admin:approvals_mine"))
        result = _away(request, user)
        if isinstance(result, HttpResponse):
            return result
        form = result
    now = timezone.now()
    context = {
        **admin.site.each_context(request),
        "opts": Proposal._meta,
        "title": "Your approvals",
        "now": now,
        "decided_days": DECIDED_DAYS,
        **own_lists(user, now),
        "queue_url": admin_url("approvals_proposal_changelist", queue="mine"),
        "away": Delegation.objects.not_over().filter(who=user).select_related("delegate"),
        "standing_in": Delegation.objects.not_over().filter(delegate=user).select_related("who"),
        "form": form,
    }
    return TemplateResponse(request, "admin/approvals/mine.html", context)
