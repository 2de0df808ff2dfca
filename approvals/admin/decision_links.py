"""The door of the link in the approver's e-mail: opening it leads its recipient, signed in, to the proposal's page;
a decision posted from that page is checked against the link's proposal. Both go through approvals/decision_links.py.

Opening a link changes nothing about the proposal: it spends the link and shows the page, where the decision is still
the click on Approve or Reject (approvals/admin/proposals.py, through approvals/decisions.py). A person who is not
signed in is sent to LOGIN_URL with `?next=` back to the link, so whatever signs people in (the admin's form, single
sign-on) brings them back to it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from approvals.decision_links import (
    SESSION_KEY,
    LinkRefused,
    decision_link_check,
    decision_link_decided,
    decision_link_open,
)
from approvals.models import DecisionLink, Proposal
from core.admin import admin_user

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

# The steps a link's page may post (approve, reject): what the link was sent for.
DECIDING_STEPS = frozenset({"approve", "reject"})


def link_view(model_admin: ModelAdmin, request: HttpRequest, proposal_id: uuid.UUID, token: str) -> HttpResponse:
    """GET only. Not signed in (or not as someone the admin lets in, as its own pages decide): sign in first, then
    back here; nothing is spent. Signed in: the link is checked and spent, and the person lands on the proposal's page;
    a refused link gets a page that says why and what to do (403, audited)."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    if not model_admin.admin_site.has_permission(request):  # not signed in, or not someone the admin lets in
        return redirect_to_login(request.get_full_path())  # settings.LOGIN_URL, ?next= back to this link
    try:
        link = decision_link_open(token=token, proposal_id=proposal_id, user=admin_user(request))
    except LinkRefused as exc:
        context = {
            **model_admin.admin_site.each_context(request),
            "title": exc.refusal.title,
            "refusal": exc.refusal,
            "opts": model_admin.model._meta,
        }
        return TemplateResponse(request, "admin/approvals/proposal/link_refused.html", context, status=403)
    request.session[SESSION_KEY] = str(link.pk)
    return HttpResponseRedirect(reverse("admin:approvals_proposal_change", args=[link.proposal_id]))


def arrived_by_link(request: HttpRequest, proposal: Proposal) -> str:
    """The id of the link this session opened, when it was for `proposal` and no decision was made through it yet;
    "" otherwise. The page's decision form carries it, so the decision is checked against the link's proposal."""
    link_id = request.session.get(SESSION_KEY, "")
    if not link_id:
        return ""
    try:
        found = DecisionLink.objects.filter(pk=link_id, proposal=proposal, decided_at__isnull=True).exists()
    except ValidationError:  # not a link's id: nothing this session opened
        return ""
    return str(link_id) if found else ""


def posted_link(request: HttpRequest, proposal: Proposal, *, step: str) -> DecisionLink | None:
    """The link a decision was posted through, checked against the proposal decided (LinkRefused, audited, when it
    does not hold); None for a decision made from the queue, without a link."""
    link_id = request.POST.get("decision_link", "")
    if not link_id or step not in DECIDING_STEPS:
        return None
    return decision_link_check(
        link_id=link_id,
        arrived_by=str(request.session.get(SESSION_KEY, "")),
        proposal_id=proposal.pk,
        user=admin_user(request),
    )


def led_to_decision(request: HttpRequest, link: DecisionLink | None) -> None:
    """After a decision made through `link`: noted on the link, and the session no longer carries it."""
    if link is None:
        return
    decision_link_decided(link=link)
    request.session.pop(SESSION_KEY, None)
