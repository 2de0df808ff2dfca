"""A record's timeline: everything that happened to one record, a line per proposal, for an auditor.

Served under the admin (`admin:audit_timeline`, gatehouse.admin_site) beside the audit events it is read from.
"""

from __future__ import annotations

from datetime import timedelta
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
from audit.timeline import parse_day, timeline_lines, timeline_page
from governance.models import Resource, System


def timeline_view(request: HttpRequest, system_slug: str, record_id: str) -> TemplateResponse:
    """Everything that happened to one record, oldest first, a line per proposal, in plain language.

    Paged by keyset (`?after=<event id>`), never by offset: page 40 of a busy record costs what page 1 costs.
    """
    if not request.user.has_perm("audit.view_auditevent"):
        raise PermissionDenied
    system = get_object_or_404(System, slug=system_slug)
    day_param = request.GET.get("day", "")
    day = parse_day(day_param)
    page = timeline_page(system, record_id, day=day, after=request.GET.get("after"))
    proposal_ids = {event.proposal_id for event in page.events if event.proposal_id}
    currencies = dict(Proposal.objects.filter(pk__in=proposal_ids).values_list("pk", "impact_currency"))
    labels = dict(Resource.objects.filter(system=system).values_list("name", "label"))
    lines = timeline_lines(page.events, labels=labels, currencies=currencies)
    for line in lines:
        line.proposal_url = (  # type: ignore[attr-defined]
            reverse("admin:approvals_proposal_change", args=[line.proposal_id]) if line.proposal_id else None
        )
    changelist = reverse("admin:audit_auditevent_changelist")
    trail = {"system__id__exact": system.pk, "q": record_id, **({"day": day.isoformat()} if day else {})}
    day_query = {"day": day.isoformat()} if day else {}
    context = {
        **admin.site.each_context(request),
        "opts": AuditEvent._meta,
        "title": f"Timeline of {system.slug} {record_id}" + (f" on {day:%A} {day.day} {day:%b %Y}" if day else ""),
        "system": system,
        "record_id": record_id,
        "day": day,
        "bad_day": bool(day_param) and day is None,
        "bad_cursor": page.bad_cursor,
        "previous_day": (day - timedelta(days=1)).isoformat() if day else None,
        "next_day": (day + timedelta(days=1)).isoformat() if day else None,
        "lines": lines,
        "continued": page.continued,
        "first_page_url": "?" + urlencode(day_query) if page.continued else None,
        "next_page_url": "?" + urlencode({**day_query, "after": page.next_after}) if page.next_after else None,
        "events_url": changelist + "?" + urlencode(trail),
        "timezone": timezone.get_current_timezone_name(),
    }
    return TemplateResponse(request, "admin/audit/auditevent/timeline.html", context)
