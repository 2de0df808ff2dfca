"""Admin for the audit trail: read-only for everyone, built for an auditor who has never seen SQL.

The changelist filters by agent, system, verb, person, channel and day, finds a record id, links every event to its
record's timeline and its proposal, and exports the filtered view as CSV or JSON lines. At millions of rows it never
runs a full `count(*)` (see `EstimatedCountPaginator`) and offers no navigation that scans the table: there is no
`date_hierarchy`, whose year and month links are `SELECT DISTINCT` over every row; the day filter replaces it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from audit.exports import EXPORT_FORMATS, export_response
from audit.models import AuditCheckpoint, AuditEvent, AuditVerification
from audit.timeline import timeline_lines
from core.admin import ReadOnlyAdminMixin

# A search box value longer than any record id cannot match one: answer "nothing" without asking the database.
_RECORD_ID_MAX = AuditEvent._meta.get_field("record_id").max_length
# Events read for one page of a record's timeline; the next page continues after the last one (keyset paging).
TIMELINE_PAGE = 500


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
        queryset = self.object_list
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


def _parse_day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


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
        chosen = _parse_day(self.value())
        if chosen is not None and chosen not in days:  # a day reached from a timeline link stays visible
            days.append(chosen)
        return [(day.isoformat(), _day_label(day, today)) for day in days]

    def queryset(self, request: HttpRequest, queryset):
        if self.value() is None:
            return queryset
        day = _parse_day(self.value())
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
    list_filter = [DayFilter, "verb", "agent", "system", "person", "channel", "actor_type", ProposalFilter]
    search_fields = ["record_id"]  # the search itself is `get_search_results`: one exact record id
    search_help_text = "Find a record by its exact id, for example 4471."
    list_select_related = ["system"]
    # Newest first by time, so every filter is served by its (…, occurred_at) index read backwards.
    ordering = ["-occurred_at", "-id"]
    sortable_by = ["occurred_at"]  # sorting by any other column would sort millions of rows
    paginator = EstimatedCountPaginator
    show_full_result_count = False  # the table grows to millions of rows: no count(*) per page view
    show_facets = admin.ShowFacets.NEVER  # "Show counts" would count every filter choice over the whole table
    readonly_fields = [field.name for field in AuditEvent._meta.fields] + ["timeline", "proposal"]
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
            return "—"
        return format_html('<a href="{}">Everything that happened to {} {}</a>', url, event.resource, event.record_id)

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
        if len(term) > _RECORD_ID_MAX:
            return queryset.none(), False
        return queryset.filter(record_id=term), False

    # --- Extra pages --------------------------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        urls = [
            path("timeline/<slug:system_slug>/<path:record_id>/", view(self.timeline_view), name="audit_timeline"),
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

    def export_view(self, request: HttpRequest, kind: str) -> HttpResponse:
        """The changelist's current filters and search, every matching row, streamed in id order."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if kind not in EXPORT_FORMATS:
            raise Http404
        request.GET = request.GET.copy()
        for name in ("p", "all"):  # a page number must not limit (or break) an export
            request.GET.pop(name, None)
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters as exc:
            return HttpResponseBadRequest(f"These filters do not make sense: {exc}".encode())
        return export_response(changelist.queryset, kind=kind)

    def timeline_view(self, request: HttpRequest, system_slug: str, record_id: str) -> TemplateResponse:
        """Everything that happened to one record, oldest first, a line per proposal, in plain language.

        Paged by keyset (`?after=<event id>`), never by offset: page 40 of a busy record costs what page 1 costs.
        """
        from approvals.models import Proposal
        from governance.models import Resource, System

        if not self.has_view_permission(request):
            raise PermissionDenied
        system = get_object_or_404(System, slug=system_slug)
        day_param = request.GET.get("day", "")
        day = _parse_day(day_param)
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
            **self.admin_site.each_context(request),
            "opts": self.opts,
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


@dataclass
class TimelinePage:
    events: list[AuditEvent]
    next_after: int | None  # the cursor of the next page, when there is one
    continued: bool  # this page follows an earlier one
    bad_cursor: bool = False


def timeline_page(system, record_id: str, *, day: date | None, after: str | None) -> TimelinePage:
    """One page of a record's events, oldest first, each proposal told whole on the page where it begins.

    A page reads up to `TIMELINE_PAGE` events after the cursor (an event id of this record: its time and id are the
    keyset), served by the (system, record_id, occurred_at) index at any depth. Events of a proposal that began on
    an earlier page are left out (that page told it whole); events of a proposal that begins on this page but
    continues past its end are fetched with it, so its line ends with its outcome.
    """
    scope = AuditEvent.objects.for_record(system, record_id)
    if day is not None:
        scope = scope.on(day)
    cursor: tuple[datetime, int] | None = None
    bad_cursor = False
    if after:
        try:
            found = scope.only("id", "occurred_at").get(pk=int(after))
            cursor = (found.occurred_at, found.pk)
        except (ValueError, OverflowError, AuditEvent.DoesNotExist):
            bad_cursor = True  # a cursor of another record (or none at all): start from the beginning
    continued = cursor is not None
    events: list[AuditEvent] = []
    told: set = set()
    for _ in range(20):  # a page made only of proposals told earlier is skipped, not shown empty
        rows = list(
            _after(scope, cursor).select_related("person", "system").order_by("occurred_at", "id")[:TIMELINE_PAGE]
        )
        ids = {event.proposal_id for event in rows if event.proposal_id} - told
        if cursor is not None and ids:
            told |= set(_before(scope.filter(proposal_id__in=ids), cursor).values_list("proposal_id", flat=True))
        events = [event for event in rows if event.proposal_id not in told]
        if rows:
            cursor = (rows[-1].occurred_at, rows[-1].pk)
        if events or len(rows) < TIMELINE_PAGE:
            break
    proposal_ids = {event.proposal_id for event in events if event.proposal_id}
    if proposal_ids:
        # A proposal that begins here but is decided or executed later (past this page or this day) is told whole.
        seen = {event.pk for event in events}
        more = (
            AuditEvent.objects.for_record(system, record_id)
            .filter(proposal_id__in=proposal_ids)
            .exclude(pk__in=seen)
            .select_related("person", "system")[:TIMELINE_PAGE]
        )
        events.extend(more)
    # Is there anything after this page that a later page would show? Not the rest of proposals told here or before.
    has_more = (
        cursor is not None
        and _after(scope, cursor).filter(Q(proposal_id__isnull=True) | ~Q(proposal_id__in=proposal_ids | told)).exists()
    )
    return TimelinePage(
        events=events,
        next_after=cursor[1] if has_more and cursor else None,
        continued=continued,
        bad_cursor=bad_cursor,
    )


def _after(queryset, cursor: tuple[datetime, int] | None):
    """Events after the keyset (time, id); the time range is what the (…, occurred_at) index serves."""
    if cursor is None:
        return queryset
    at, pk = cursor
    return queryset.filter(occurred_at__gte=at).filter(Q(occurred_at__gt=at) | Q(pk__gt=pk))


def _before(queryset, cursor: tuple[datetime, int]):
    at, pk = cursor
    return queryset.filter(occurred_at__lte=at).filter(Q(occurred_at__lt=at) | Q(pk__lte=pk))


def timeline_url(event: AuditEvent, *, with_day: bool = True) -> str | None:
    """The record timeline of the event's record, on the event's day; None when the event has no record."""
    if event.system_id is None or not event.record_id:
        return None
    url = reverse("admin:audit_timeline", args=[event.system.slug, event.record_id])
    if with_day:
        url += f"?day={timezone.localtime(event.occurred_at).date().isoformat()}"
    return url


def audit_trail_url(**filters: object) -> str:
    """The audit changelist filtered, e.g. `audit_trail_url(system__id__exact=3)`: for links from other pages."""
    return reverse("admin:audit_auditevent_changelist") + "?" + urlencode(filters)


@admin.register(AuditVerification)
class AuditVerificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["started_at", "ok", "full", "checked", "broken_at", "reason", "checkpoint"]
    list_filter = ["ok", "full"]
    readonly_fields = [field.name for field in AuditVerification._meta.fields]


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "last_event_id", "event_count", "last_hash"]
    readonly_fields = [field.name for field in AuditCheckpoint._meta.fields]
