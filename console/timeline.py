"""Timelines for an auditor, a line per proposal: one record's (everything that happened to it), one agent's (what
it did and who gave it its power, when) and one system's own (its configuration, switches and credentials).

Served under the admin (`admin:audit_timeline`, `admin:audit_agent_timeline`, `admin:audit_system_timeline`,
gatehouse.admin_site) beside the audit events they are read from.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from approvals.models import Proposal
from audit.models import AuditEvent
from audit.timeline import TimelinePage, parse_day, scope_page, timeline_lines, timeline_page
from governance.models import Agent, Resource, System


def timeline_view(request: HttpRequest, system_slug: str, record_id: str) -> TemplateResponse:
    """Everything that happened to one record, oldest first, a line per proposal, in plain language.

    Paged by keyset (`?after=<event id>`), never by offset: page 40 of a busy record costs what page 1 costs.
    """
    _may_read(request)
    system = get_object_or_404(System, slug=system_slug)
    day = parse_day(request.GET.get("day", ""))
    page = timeline_page(system, record_id, day=day, after=request.GET.get("after"))
    labels = dict(Resource.objects.filter(system=system).values_list("name", "label"))
    trail = {"system__id__exact": system.pk, "q": record_id}
    return _render(request, page, subject=f"{system.slug} {record_id}", labels=labels, trail=trail, system=system)


def agent_timeline_view(request: HttpRequest, agent_slug: str) -> TemplateResponse:
    """One agent's story: its reads, proposals and their outcomes, and every change of what it may do (grants,
    tokens, credentials, switches), with who made it, before → after and why."""
    _may_read(request)
    agent = get_object_or_404(Agent, slug=agent_slug)
    day = parse_day(request.GET.get("day", ""))
    page = scope_page(AuditEvent.objects.filter(agent=agent), day=day, after=request.GET.get("after"))
    labels = dict(Resource.objects.values_list("name", "label"))
    return _render(request, page, subject=f"agent {agent.slug}", labels=labels, trail={"agent__id__exact": agent.pk})


def system_timeline_view(request: HttpRequest, system_slug: str) -> TemplateResponse:
    """A system's own story, apart from its records': its configuration (write mode, grants on it, rules and bands,
    resources and actions, connector settings), sign-offs, freezes and credentials."""
    _may_read(request)
    system = get_object_or_404(System, slug=system_slug)
    day = parse_day(request.GET.get("day", ""))
    page = scope_page(AuditEvent.objects.for_record(system, ""), day=day, after=request.GET.get("after"))
    trail = {"system__id__exact": system.pk}
    return _render(request, page, subject=f"system {system.slug}", labels={}, trail=trail, system=system)


def _may_read(request: HttpRequest) -> None:
    if not request.user.has_perm("audit.view_auditevent"):
        raise PermissionDenied


def _render(
    request: HttpRequest,
    page: TimelinePage,
    *,
    subject: str,
    labels: dict[str, str],
    trail: dict[str, Any],
    system: System | None = None,
) -> TemplateResponse:
    day_param = request.GET.get("day", "")
    day = parse_day(day_param)
    proposal_ids = {event.proposal_id for event in page.events if event.proposal_id}
    currencies = dict(Proposal.objects.filter(pk__in=proposal_ids).values_list("pk", "impact_currency"))
    lines = timeline_lines(page.events, labels=labels, currencies=currencies)
    for line in lines:
        line.proposal_url = (  # type: ignore[attr-defined]
            reverse("admin:approvals_proposal_change", args=[line.proposal_id]) if line.proposal_id else None
        )
    changelist = reverse("admin:audit_auditevent_changelist")
    day_query = {"day": day.isoformat()} if day else {}
    context = {
        **admin.site.each_context(request),
        "opts": AuditEvent._meta,
        "title": f"Timeline of {subject}" + (f" on {day:%A} {day.day} {day:%b %Y}" if day else ""),
        "subject": subject,
        "system": system,
        "day": day,
        "bad_day": bool(day_param) and day is None,
        "bad_cursor": page.bad_cursor,
        "previous_day": (day - timedelta(days=1)).isoformat() if day else None,
        "next_day": (day + timedelta(days=1)).isoformat() if day else None,
        "lines": lines,
        "continued": page.continued,
        "first_page_url": "?" + urlencode(day_query) if page.continued else None,
        "next_page_url": "?" + urlencode({**day_query, "after": page.next_after}) if page.next_after else None,
        "events_url": changelist + "?" + urlencode({**trail, **day_query}),
        "timezone": timezone.get_current_timezone_name(),
    }
    return TemplateResponse(request, "admin/audit/auditevent/timeline.html", context)
