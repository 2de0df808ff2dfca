"""Timelines for an auditor, in the order things happened: one record's (everything that happened to it), one
agent's (what it did and who gave it its power, when) and one system's own (its configuration, switches and
credentials); each with an Export button, and "Find a record" to reach a record's timeline from a system and an id.

Served under the admin (`admin:audit_timeline`, `admin:audit_agent_timeline`, `admin:audit_system_timeline`, their
`…_export`, `admin:audit_find_record`; gatehouse.admin_site) beside the audit events they are read from.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from approvals.models import Proposal
from audit.exports import export_response, may_export
from audit.models import AuditEvent, AuditEventQuerySet
from audit.timeline import TimelinePage, parse_day, scope_page, timeline_lines, timeline_page
from console.find_record import FindRecordForm, record_timeline_url, systems_holding
from core.moments import day_text
from governance.models import Agent, Resource, System

# The timeline's Export button: CSV, for the person on the page (a spreadsheet opens it; formulas are defused). A
# SIEM takes JSON lines from the changelist's export or `manage.py export_audit --format jsonl`.
TIMELINE_EXPORT = "csv"


def timeline_view(request: HttpRequest, system_slug: str, record_id: str) -> TemplateResponse:
    """Everything that happened to one record, oldest first, in plain language.

    Paged by keyset (`?after=<event id>`), never by offset: page 40 of a busy record costs what page 1 costs.
    """
    _may_read(request)
    system = get_object_or_404(System, slug=system_slug)
    day = parse_day(request.GET.get("day", ""))
    page = timeline_page(system, record_id, day=day, after=request.GET.get("after"))
    labels = dict(Resource.objects.filter(system=system).values_list("name", "label"))
    trail = {"system__id__exact": system.pk, "q": record_id}
    # The same id on another system is another record: said, and linked, never mixed in.
    elsewhere = [
        (other.slug, record_timeline_url(other.slug, record_id)) for other in systems_holding(record_id, besides=system)
    ]
    return _render(
        request,
        page,
        subject=f"{system.slug} {record_id}",
        labels=labels,
        trail=trail,
        system=system,
        export_url=reverse("admin:audit_timeline_export", args=[system.slug, record_id]),
        elsewhere=elsewhere,
        record_id=record_id,
    )


def agent_timeline_view(request: HttpRequest, agent_slug: str) -> TemplateResponse:
    """One agent's story: its reads, proposals and their outcomes, and every change of what it may do (grants,
    tokens, credentials, switches), with who made it, before → after and why."""
    _may_read(request)
    agent = get_object_or_404(Agent, slug=agent_slug)
    day = parse_day(request.GET.get("day", ""))
    page = scope_page(AuditEvent.objects.filter(agent=agent), day=day, after=request.GET.get("after"))
    labels = dict(Resource.objects.values_list("name", "label"))
    return _render(
        request,
        page,
        subject=f"agent {agent.slug}",
        labels=labels,
        trail={"agent__id__exact": agent.pk},
        export_url=reverse("admin:audit_agent_timeline_export", args=[agent.slug]),
    )


def system_timeline_view(request: HttpRequest, system_slug: str) -> TemplateResponse:
    """A system's own story, apart from its records': its configuration (write mode, grants on it, rules and bands,
    resources and actions, connector settings), sign-offs, freezes and credentials."""
    _may_read(request)
    system = get_object_or_404(System, slug=system_slug)
    day = parse_day(request.GET.get("day", ""))
    page = scope_page(AuditEvent.objects.for_record(system, ""), day=day, after=request.GET.get("after"))
    return _render(
        request,
        page,
        subject=f"system {system.slug}",
        labels={},
        trail={"system__id__exact": system.pk},
        system=system,
        export_url=reverse("admin:audit_system_timeline_export", args=[system.slug]),
    )


# --- Export: the timeline's events as a file ------------------------------------------------------------------------


def timeline_export_view(request: HttpRequest, system_slug: str, record_id: str) -> HttpResponseBase:
    """The record's events (on the day shown, if one is), every one, not a page: the changelist's export service."""

    def scope() -> tuple[AuditEventQuerySet, str]:
        system = get_object_or_404(System, slug=system_slug)
        return AuditEvent.objects.for_record(system, record_id), f"{system.slug}-{record_id}"

    return _export(request, scope)


def agent_timeline_export_view(request: HttpRequest, agent_slug: str) -> HttpResponseBase:
    def scope() -> tuple[AuditEventQuerySet, str]:
        agent = get_object_or_404(Agent, slug=agent_slug)
        return AuditEvent.objects.filter(agent=agent), f"agent-{agent.slug}"

    return _export(request, scope)


def system_timeline_export_view(request: HttpRequest, system_slug: str) -> HttpResponseBase:
    def scope() -> tuple[AuditEventQuerySet, str]:
        system = get_object_or_404(System, slug=system_slug)
        return AuditEvent.objects.for_record(system, ""), f"system-{system.slug}"

    return _export(request, scope)


def _export(request: HttpRequest, scope: Callable[[], tuple[AuditEventQuerySet, str]]) -> HttpResponseBase:
    """The admin export's check (`may_export`), first, then its service (`export_response`) over exactly the
    timeline's scope (events and file name), on the day shown if there is one."""
    if not may_export(request.user):
        raise PermissionDenied
    events, name = scope()
    day_param = request.GET.get("day", "")
    day = parse_day(day_param)
    if day_param and day is None:
        return HttpResponseBadRequest(f"Not a day: {day_param!r} (expected YYYY-MM-DD).".encode())
    if day is not None:
        events, name = events.on(day), f"{name}-{day.isoformat()}"
    return export_response(events, kind=TIMELINE_EXPORT, name=name)


# --- Find a record ------------------------------------------------------------------------------------------------


def find_record_view(request: HttpRequest) -> HttpResponse:
    """`?system=crm&record=4471` → crm 4471's timeline. Without a system: the one system that holds the id, or a
    choice between those that do. Anything else: this page again, saying what is wrong (never an error page)."""
    _may_read(request)
    form = FindRecordForm(request.GET or None)
    choices: list[tuple[str, str]] = []
    if form.is_valid():
        system, record = form.cleaned_data["system"], form.cleaned_data["record"]
        if system:
            return redirect(record_timeline_url(system, record))
        holders = systems_holding(record)
        if len(holders) == 1:
            return redirect(record_timeline_url(holders[0].slug, record))
        if not holders:
            form.add_error("record", f"No system has an event about a record “{record}”. Choose a system to open it.")
        else:
            choices = [(f"{holder.slug} {record}", record_timeline_url(holder.slug, record)) for holder in holders]
    context = {
        **admin.site.each_context(request),
        "opts": AuditEvent._meta,
        "title": "Find a record",
        "form": form,
        "choices": choices,
    }
    return TemplateResponse(request, "admin/audit/auditevent/find_record.html", context)


# --- Shared -------------------------------------------------------------------------------------------------------


def _may_read(request: HttpRequest) -> None:
    if not request.user.has_perm("audit.view_auditevent"):
        raise PermissionDenied


def _day_title(day: date) -> str:
    return f"{day:%A} {day_text(day)}"


def _render(
    request: HttpRequest,
    page: TimelinePage,
    *,
    subject: str,
    labels: dict[str, str],
    trail: dict[str, Any],
    export_url: str,
    system: System | None = None,
    elsewhere: list[tuple[str, str]] | None = None,
    record_id: str = "",
) -> TemplateResponse:
    day_param = request.GET.get("day", "")
    day = parse_day(day_param)
    today = timezone.localdate()
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
        "title": f"Timeline of {subject}" + (f" on {_day_title(day)}" if day else ""),
        "subject": subject,
        "system": system,
        "record_id": record_id,
        "elsewhere": elsewhere or [],
        "day": day,
        "day_title": _day_title(day) if day else "",
        "today": today.isoformat() if day != today else None,
        "bad_day": bool(day_param) and day is None,
        "bad_cursor": page.bad_cursor,
        "previous_day": (day - timedelta(days=1)).isoformat() if day else None,
        "next_day": (day + timedelta(days=1)).isoformat() if day else None,
        "lines": lines,
        "continued": page.continued,
        "first_page_url": "?" + urlencode(day_query) if page.continued else None,
        "next_page_url": "?" + urlencode({**day_query, "after": page.next_after}) if page.next_after else None,
        "events_url": changelist + "?" + urlencode({**trail, **day_query}),
        "export_url": export_url + ("?" + urlencode(day_query) if day_query else ""),
    }
    return TemplateResponse(request, "admin/audit/auditevent/timeline.html", context)
