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
from audit.exports import EXPORT_FORMATS, export_response, may_export
from audit.links import subject_timeline_url, timeline_url
from audit.models import AuditCheckpoint, AuditEvent, AuditVerification
from audit.timeline import parse_day
from core.admin import ReadOnlyAdminMixin
from core.moments import day_text, moment

# A search box value longer than any record id cannot match one: answer "nothing" without asking the database.
_RECORD_ID_MAX = AuditEvent._meta.get_field("record_id").max_length
_SYSTEMS_LISTED = 20  # systems named beside a search; more would not be read
NBSP = "\u00a0"


def _system_model() -> Any:
    """governance.System, reached through the audit event's foreign key (audit imports no app above it)."""
    return AuditEvent._meta.get_field("system").related_model


def search_record(search_term: str) -> tuple[Any, str] | None:
    """What the search box asks for: (a system or None, an exact record id), or None when it is empty.

    "crm 4471" is (crm, "4471") when crm is a system's slug; anything else is one record id, spaces and all. Quotes
    around the whole term are dropped.
    """
    term = search_term.strip()
    if len(term) >= 2 and term[0] == term[-1] and term[0] in "\"'":
        term = term[1:-1].strip()
    if not term:
        return None
    term = term.replace("\x00", "\ufffd")
    first, _, rest = term.partition(" ")
    if rest.strip() and len(first) <= 50:
        system = _system_model()._default_manager.filter(slug=first).first()
        if system is not None:
            return system, rest.strip()
    return None, term


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
    """The day in the pages' one format: "Today (2026-12-02)", "Yesterday (2026-12-01)", "Tuesday 2026-11-24"."""
    if day == today:
        return f"Today ({day_text(day)})"
    if day == today - timedelta(days=1):
        return f"Yesterday ({day_text(day)})"
    return f"{day:%A} {day_text(day)}"


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
    # Narrow columns and one wide one: the summary reads on a 1366-px screen beside the menu and the filters.
    list_display = ["when", "what", "actor", "record_link", "summary_text", "proposal_link"]
    list_filter = [DayFilter, KindFilter, "verb", "agent", "system", "person", "channel", "actor_type", ProposalFilter]
    search_fields = ["record_id"]  # the search itself is `get_search_results`: one exact record id
    search_help_text = "Find a record by its exact id, for example 4471, or with its system: crm 4471."
    list_select_related = ["system"]
    # Newest first by time, so every filter is served by its (…, occurred_at) index read backwards.
    ordering = ["-occurred_at", "-id"]
    sortable_by = ["when"]  # sorting by any other column would sort millions of rows
    paginator = EstimatedCountPaginator
    show_full_result_count = False  # the table grows to millions of rows: no count(*) per page view
    show_facets = admin.ShowFacets.NEVER  # "Show counts" would count every filter choice over the whole table
    # The event's page: its time in the pages' one format first, in place of Django's own date format.
    readonly_fields = [
        "when",
        "changes",
        *(field.name for field in AuditEvent._meta.fields if field.name not in ("id", "occurred_at")),
        "timeline",
        "proposal",
    ]
    fields = (*readonly_fields,)
    change_list_template = "admin/audit/auditevent/change_list.html"

    def get_changelist(self, request: HttpRequest, **kwargs):
        return TimeOrderedChangeList

    # --- Columns ------------------------------------------------------------------------------------------------

    @admin.display(description="When", ordering="occurred_at")
    def when(self, event: AuditEvent) -> str:
        """`2026-12-02 14:05:09 UTC`, breaking only between the day and the time in a narrow column."""
        day, _, time_of_day = moment(event.occurred_at).partition(" ")
        return f"{day} {time_of_day.replace(' ', NBSP)}"

    @admin.display(description="What")
    def what(self, event: AuditEvent) -> str:
        """The verb, and the outcome when it is not simply "ok" ("rollback drill: failed")."""
        label = event.get_verb_display()
        return label if event.outcome in ("", "ok") else f"{label}: {event.outcome}"

    @admin.display(description="System and record")
    def record_link(self, event: AuditEvent) -> str:
        """The system and the id ("crm 4471"), linked to that record's timeline: crm-staging 4471 is another record."""
        system = event.system.slug if event.system_id and event.system else ""
        url = timeline_url(event)
        if url is None:
            return " ".join(part for part in (system, event.record_id) if part) or "—"
        return format_html(
            '<a href="{}" class="timeline-link" title="The timeline of {} {}">'
            '<span class="record-system">{}</span> {}</a>',
            url,
            system,
            event.record_id,
            system,
            event.record_id,
        )

    @admin.display(description="Summary")
    def summary_text(self, event: AuditEvent) -> str:
        return event.summary

    @admin.display(description="Proposal")
    def proposal_link(self, event: AuditEvent) -> str:
        if event.proposal_id is None:
            return "—"
        url = reverse("admin:approvals_proposal_change", args=[event.proposal_id])
        return format_html(
            '<a href="{}" class="proposal-link" title="proposal {}">{}</a>',
            url,
            event.proposal_id,
            str(event.proposal_id)[:8],
        )

    @admin.display(description="Record timeline")
    def timeline(self, event: AuditEvent) -> str:
        url = timeline_url(event)
        if url is None:
            url = subject_timeline_url(event)
            subject = f"agent {event.agent}" if event.agent_id else f"system {event.system}"
            return format_html('<a href="{}">The timeline of {}</a>', url, subject) if url else "—"
        system = event.system.slug if event.system else ""
        return format_html('<a href="{}">Everything that happened to {} {}</a>', url, system, event.record_id)

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

    # --- Search: one exact record id, whatever is typed; "crm 4471" names the system too --------------------------

    def get_search_results(self, request: HttpRequest, queryset, search_term: str):
        """An exact record id, as one value: quotes, `%`, SQL or unicode are just characters to compare.

        "crm 4471" (a system's slug, a space, an id) is record 4471 of crm only. Django's default would split on spaces
        and run case-insensitive `LIKE`/`UPPER()` comparisons, which no index serves. NUL is stored as U+FFFD by
        `audit_record` (PostgreSQL refuses it), so it is searched as such.
        """
        found = search_record(search_term)
        if found is None:
            return queryset, False
        system, record_id = found
        if _RECORD_ID_MAX is not None and len(record_id) > _RECORD_ID_MAX:
            return queryset.none(), False
        if system is not None:
            return queryset.filter(system=system, record_id=record_id), False
        return queryset.filter(record_id=record_id), False

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
            **self._record_systems(request),
        }
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    def _record_systems(self, request: HttpRequest) -> dict[str, Any]:
        """For a search by record id: the systems it is a record on, each with its events and its timeline, so crm
        4471 and crm-staging 4471 are never taken for one record."""
        found = search_record(request.GET.get("q", ""))
        if found is None or (_RECORD_ID_MAX is not None and len(found[1]) > _RECORD_ID_MAX):
            return {}
        system, record_id = found
        chosen = request.GET.get("system__id__exact", "")
        if system is None and chosen.isdigit():  # the system filter narrows a bare id as "crm 4471" does
            system = _system_model()._default_manager.filter(pk=int(chosen)).first()
        query = request.GET.copy()
        for name in ("p", "all", "o", "system__id__exact"):
            query.pop(name, None)
        systems = []
        for holder in AuditEvent.objects.systems_with_record(record_id)[:_SYSTEMS_LISTED]:
            query.setlist("q", [f"{holder.slug} {record_id}"])
            systems.append(
                {
                    "slug": holder.slug,
                    "label": f"{holder.slug} {record_id}",
                    "events_url": "?" + query.urlencode(),
                    "timeline_url": reverse("admin:audit_timeline", args=[holder.slug, record_id]),
                    "chosen": system is not None and holder.pk == system.pk,
                }
            )
        return {"record_search": {"record": record_id, "system": system, "systems": systems}}

    def export_view(self, request: HttpRequest, kind: str) -> HttpResponseBase:
        """The changelist's current filters and search, every matching row, streamed in id order."""
        if not may_export(request.user):
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


def moment_column(field_name: str, description: str) -> Any:
    """An admin column (and read-only field) showing a time as `2026-12-02 14:05:09 UTC`, sorted by the field."""

    @admin.display(description=description, ordering=field_name)
    def column(model_admin: admin.ModelAdmin, obj: Any) -> str:
        return moment(getattr(obj, field_name)) or "—"

    return column


def _with_moments(model: Any, moments: dict[str, str]) -> list[str]:
    """A read-only page's fields in model order, each time field replaced by its `moment_column` (named in
    `moments`: field → column)."""
    return [moments.get(field.name, field.name) for field in model._meta.fields if field.name != "id"]


@admin.register(AuditVerification)
class AuditVerificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["started", "ok", "full", "checked", "broken_at", "reason", "checkpoint"]
    list_filter = ["ok", "full"]
    started = moment_column("started_at", "Started")
    finished = moment_column("finished_at", "Finished")
    readonly_fields = _with_moments(AuditVerification, {"started_at": "started", "finished_at": "finished"})
    fields = (*readonly_fields,)


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created", "last_event_id", "event_count", "last_hash", "version", "previous_id"]
    created = moment_column("created_at", "Created")
    readonly_fields = _with_moments(AuditCheckpoint, {"created_at": "created"})
    fields = (*readonly_fields,)
