"""Admin for the audit trail: read-only for everyone, built for an auditor who has never seen SQL.

The changelist filters by agent, system, verb, person, channel and day, finds a record id, links every event to its
record's timeline and its proposal, and exports the filtered view as CSV or JSON lines. At millions of rows it never
runs a full `count(*)` (see `EstimatedCountPaginator`) and offers no navigation that scans the table: there is no
`date_hierarchy`, whose year and month links are `SELECT DISTINCT` over every row; the day filter replaces it.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from functools import cached_property
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from audit.changes import change_phrases
from audit.choices import AGENT_ACTIVITY_VERBS, CONFIGURATION_VERBS, DECISION_VERBS, Verb
from audit.exports import EXPORT_FORMATS, export_response
from audit.links import subject_timeline_url, timeline_url
from audit.models import AuditCheckpoint, AuditEvent, AuditVerification
from audit.timeline import parse_day
from core.admin import ReadOnlyAdminMixin

# A search box value longer than any record id cannot match one: answer "nothing" without asking the database.
_RECORD_ID_MAX = AuditEvent._meta.get_field("record_id").max_length


class EstimatedCountPaginator(Paginator):
    """Pages without a full `count(*)`.

    Unfiltered on PostgreSQL: the planner's row estimate (`pg_class.reltuples`), which is free. Otherwise (filtered
    views, SQLite): the real count, but never more than `cap` rows are counted (`COUNT(*)` over a `LIMIT` subquery).
    `approximate` tells the page to say "about" or "more than".
    """

    cap = 10_000

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.approximate = False

    @cached_property
    def count(self) -> int:
        queryset: Any = self.object_list  # a QuerySet here (the changelist's); anything else is counted by Django
        if not hasattr(queryset, "query"):
            return super().count
        if connection.vendor == "postgresql" and not queryset.query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                    [queryset.model._meta.db_table],
                )
                row = cursor.fetchone()
            estimate = int(row[0]) if row and row[0] is not None else -1
            if estimate > self.cap:  # small or never-analysed tables (-1): counting is cheap and exact
                self.approximate = True
                return estimate
        counted = queryset.order_by()[: self.cap + 1].count()
        if counted > self.cap:
            self.approximate = True
            return self.cap
        return counted


def _day_label(day: date, today: date) -> str:
    if day == today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    label = f"{day:%A} {day.day} {day:%b}"
    return label if day.year == today.year else f"{label} {day.year}"


class DayFilter(admin.SimpleListFilter):
    """ "Last Tuesday" in one click: today, yesterday, and each day of the week before, by name and date."""

    title = "day"
    parameter_name = "day"

    def lookups(self, request: HttpRequest, model_admin):
        today = timezone.localdate()
        days = [today - timedelta(days=back) for back in range(0, 8)]
        chosen = parse_day(self.value())
        if chosen is not None and chosen not in days:  # a day reached from a timeline link stays visible
            days.append(chosen)
        return [(day.isoformat(), _day_label(day, today)) for day in days]

    def queryset(self, request: HttpRequest, queryset):
        if self.value() is None:
            return queryset
        day = parse_day(self.value())
        if day is None:
            raise IncorrectLookupParameters(f"Not a day: {self.value()!r} (expected YYYY-MM-DD).")
        return queryset.on(day)


class ProposalFilter(admin.SimpleListFilter):
    """`?proposal_id=…`: every event of one proposal (the link from the proposal page). Shown only when in use."""

    title = "proposal"
    parameter_name = "proposal_id"

    def lookups(self, request: HttpRequest, model_admin):
        value = self.value()
        return [(value, f"proposal {value}")] if value else []

    def queryset(self, request: HttpRequest, queryset):
        if self.value() is None:
            return queryset
        try:
            proposal_id = uuid.UUID(self.value())
        except ValueError:
            raise IncorrectLookupParameters(f"Not a proposal id: {self.value()!r}.") from None
        return queryset.for_proposal(proposal_id)


class KindFilter(admin.SimpleListFilter):
    """What kind of event: a person changing what governs an agent or a system, an agent acting, a decision on a
    proposal, or the rest (holds, reversals, drills). Each is a set of verbs, served by the (verb, time) index."""

    title = "kind of event"
    parameter_name = "kind"
    KINDS = {
        "configuration": ("Configuration (who gave what power)", CONFIGURATION_VERBS),
        "activity": ("Agent activity", AGENT_ACTIVITY_VERBS),
        "decisions": ("Decisions", DECISION_VERBS),
    }

    def lookups(self, request: HttpRequest, model_admin):
        return [*((key, label) for key, (label, _) in self.KINDS.items()), ("other", "Holds, reversals, drills")]

    def queryset(self, request: HttpRequest, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value == "other":
            named = set().union(*(verbs for _, verbs in self.KINDS.values()))
            return queryset.filter(verb__in=[verb for verb in Verb if verb not in named])
        if value not in self.KINDS:
            raise IncorrectLookupParameters(f"Not a kind of event: {value!r}.")
        return queryset.filter(verb__in=sorted(self.KINDS[value][1]))


class TimeOrderedChangeList(ChangeList):
    """Ordered by time only. `sortable_by` hides the other headers; this refuses a hand-made `?o=` for them too."""

    _ALLOWED = {"occurred_at", "-occurred_at", "id", "-id", "pk", "-pk"}

    def get_ordering(self, request: HttpRequest, queryset) -> list:
        ordering = super().get_ordering(request, queryset)
        if all(isinstance(field, str) and field in self._ALLOWED for field in ordering):
            return ordering
        return ["-occurred_at", "-id"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["occurred_at", "verb", "actor", "system", "record_link", "proposal_link", "outcome", "summary"]
    list_filter = [DayFilter, KindFilter, "verb", "agent", "system", "person", "channel", "actor_type", ProposalFilter]
    search_fields = ["record_id"]  # the search itself is `get_search_results`: one exact record id
    search_help_text = "Find a record by its exact id, for example 4471."
    list_select_related = ["system"]
    # Newest first by time, so every filter is served by its (…, occurred_at) index read backwards.
    ordering = ["-occurred_at", "-id"]
    sortable_by = ["occurred_at"]  # sorting by any other column would sort millions of rows
    paginator = EstimatedCountPaginator
    show_full_result_count = False  # the table grows to millions of rows: no count(*) per page view
    show_facets = admin.ShowFacets.NEVER  # "Show counts" would count every filter choice over the whole table
    readonly_fields = ["changes"] + [field.name for field in AuditEvent._meta.fields] + ["timeline", "proposal"]
    change_list_template = "admin/audit/auditevent/change_list.html"

    def get_changelist(self, request: HttpRequest, **kwargs):
        return TimeOrderedChangeList

    # --- Columns ------------------------------------------------------------------------------------------------

    @admin.display(description="Record")
    def record_link(self, event: AuditEvent) -> str:
        url = timeline_url(event)
        if url is None:
            return event.record_id or "—"
        return format_html(
            '<a href="{}" class="timeline-link" title="This record\'s timeline">{}</a>', url, event.record_id
        )

    @admin.display(description="Proposal")
    def proposal_link(self, event: AuditEvent) -> str:
        if event.proposal_id is None:
            return "—"
        url = reverse("admin:approvals_proposal_change", args=[event.proposal_id])
        return format_html('<a href="{}" class="proposal-link">{}</a>', url, str(event.proposal_id)[:8])

    @admin.display(description="Record timeline")
    def timeline(self, event: AuditEvent) -> str:
        url = timeline_url(event)
        if url is None:
            url = subject_timeline_url(event)
            subject = f"agent {event.agent}" if event.agent_id else f"system {event.system}"
            return format_html('<a href="{}">The timeline of {}</a>', url, subject) if url else "—"
        return format_html('<a href="{}">Everything that happened to {} {}</a>', url, event.resource, event.record_id)

    @admin.display(description="Changed (before → after)")
    def changes(self, event: AuditEvent) -> str:
        """A configuration change field by field; a reason given with it below."""
        if event.verb not in CONFIGURATION_VERBS or (event.state_before is None and event.state_after is None):
            return "—"
        phrases = change_phrases(event.state_before, event.state_after)
        reason = (event.input or {}).get("reason") or ""
        listed = format_html_join("", '<li class="change">{}</li>', ((phrase,) for phrase in phrases))
        why = format_html('<p class="change-reason">Reason: “{}”</p>', reason) if reason else ""
        return format_html('<ul class="changes">{}</ul>{}', listed, why)

    @admin.display(description="Proposal page")
    def proposal(self, event: AuditEvent) -> str:
        return self.proposal_link(event)

    # --- Search: one exact record id, whatever is typed -----------------------------------------------------------

    def get_search_results(self, request: HttpRequest, queryset, search_term: str):
        """An exact record id, as one value: quotes, `%`, SQL or unicode are just characters to compare.

        Django's default would split on spaces and run case-insensitive `LIKE`/`UPPER()` comparisons, which no index
        serves. NUL is stored as U+FFFD by `audit_record` (PostgreSQL refuses it), so it is searched as such.
        """
        term = search_term.strip()
        if len(term) >= 2 and term[0] == term[-1] and term[0] in "\"'":
            term = term[1:-1].strip()
        if not term:
            return queryset, False
        term = term.replace("\x00", "\ufffd")
        if _RECORD_ID_MAX is not None and len(term) > _RECORD_ID_MAX:
            return queryset.none(), False
        return queryset.filter(record_id=term), False

    # --- Extra pages --------------------------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        urls = [
            path("export.csv", view(self.export_view), {"kind": "csv"}, name="audit_export_csv"),
            path("export.jsonl", view(self.export_view), {"kind": "jsonl"}, name="audit_export_jsonl"),
        ]
        return urls + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context=None):
        query = request.GET.copy()
        for name in ("p", "all", "o"):
            query.pop(name, None)
        encoded = f"?{query.urlencode()}" if query else ""
        extra = {
            "export_csv_url": reverse("admin:audit_export_csv") + encoded,
            "export_jsonl_url": reverse("admin:audit_export_jsonl") + encoded,
        }
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    def export_view(self, request: HttpRequest, kind: str) -> HttpResponseBase:
        """The changelist's current filters and search, every matching row, streamed in id order."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if kind not in EXPORT_FORMATS:
            raise Http404
        query = request.GET.copy()
        for name in ("p", "all"):  # a page number must not limit (or break) an export
            query.pop(name, None)
        request.GET = query  # type: ignore[assignment]  # the changelist reads its filters from request.GET
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters as exc:
            return HttpResponseBadRequest(f"These filters do not make sense: {exc}".encode())
        return export_response(changelist.queryset, kind=kind)


@admin.register(AuditVerification)
class AuditVerificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["started_at", "ok", "full", "checked", "broken_at", "reason", "checkpoint"]
    list_filter = ["ok", "full"]
    readonly_fields = [field.name for field in AuditVerification._meta.fields]


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "last_event_id", "event_count", "last_hash", "version", "previous_id"]
    readonly_fields = [field.name for field in AuditCheckpoint._meta.fields]
