"""Admin for batch systems: the files taken, the rows quarantined with their reasons, and each system's polling.

Read-only for everyone: these rows record what a system delivered and what Gatehouse made of it. Registered by
importing this module from connectors/admin.py.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from connectors.models import BatchFile, BatchPoll, QuarantinedRow
from core.admin import ReadOnlyAdminMixin

QUARANTINE_PREVIEW = 20  # rows shown on a file's page; the rest are one click away, filtered to the file

FILE_FIELDS = (
    "system",
    "name",
    "status",
    "reason",
    "duplicate_of",
    "received_at",
    "size",
    "sha256",
    "moved_to",
    "rows_read",
    "events_created",
    "rows_duplicate",
    "rows_quarantined",
    "quarantine_preview",
)


def quarantine_url(**filters: object) -> str:
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    return reverse("admin:connectors_quarantinedrow_changelist") + (f"?{query}" if query else "")


@admin.register(BatchFile)
class BatchFileAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "received_at",
        "system",
        "name",
        "status",
        "rows_read",
        "events_created",
        "rows_duplicate",
        "quarantined",
        "reason",
    ]
    list_filter = ["status", "system"]
    search_fields = ["name", "sha256"]
    list_select_related = ["system"]
    date_hierarchy = "received_at"
    show_full_result_count = False
    fields = readonly_fields = FILE_FIELDS

    @admin.display(description="Quarantined", ordering="rows_quarantined")
    def quarantined(self, obj: BatchFile) -> str:
        if not obj.rows_quarantined:
            return "0"
        return format_html('<a href="{}">{} row(s)</a>', quarantine_url(file__id__exact=obj.pk), obj.rows_quarantined)

    @admin.display(description="Quarantined rows")
    def quarantine_preview(self, obj: BatchFile) -> str:
        rows = list(obj.quarantined_rows.order_by("line")[:QUARANTINE_PREVIEW])
        if not rows:
            return "None."
        table = format_html(
            "<table><thead><tr><th>Line</th><th>Reason</th><th>Row as it stood</th></tr></thead><tbody>{}</tbody>"
            "</table>",
            format_html_join(
                "", "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>", ((r.line, r.reason, r.raw) for r in rows)
            ),
        )
        if obj.rows_quarantined > len(rows):
            table += format_html(
                '<p><a href="{}">All {} quarantined rows…</a></p>',
                quarantine_url(file__id__exact=obj.pk),
                obj.rows_quarantined,
            )
        return table


@admin.register(QuarantinedRow)
class QuarantinedRowAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["file_link", "system", "line", "reason", "raw_text"]
    list_filter = ["file__system", "file__status"]
    search_fields = ["reason", "raw", "file__name"]
    list_select_related = ["file__system"]
    show_full_result_count = False
    fields = readonly_fields = ("file", "line", "reason", "raw")

    def get_queryset(self, request: HttpRequest) -> QuerySet[QuarantinedRow]:
        return super().get_queryset(request).order_by("-file_id", "line")

    @admin.display(description="File", ordering="file_id")
    def file_link(self, obj: QuarantinedRow) -> str:
        url = reverse("admin:connectors_batchfile_change", args=[obj.file_id])
        return format_html('<a href="{}">{}</a>', url, obj.file.name)

    @admin.display(description="System", ordering="file__system__slug")
    def system(self, obj: QuarantinedRow) -> str:
        return obj.file.system.slug

    @admin.display(description="Row as it stood")
    def raw_text(self, obj: QuarantinedRow) -> str:
        text = obj.raw if len(obj.raw) <= 160 else obj.raw[:160] + "…"
        return format_html("<code>{}</code>", text)


@admin.register(BatchPoll)
class BatchPollAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["system", "last_polled_at", "last_error", "claimed_until", "files"]
    list_select_related = ["system"]
    fields = readonly_fields = ("system", "last_polled_at", "last_error", "claimed_by", "claimed_until")

    @admin.display(description="Files")
    def files(self, obj: BatchPoll) -> str:
        url = reverse("admin:connectors_batchfile_changelist") + f"?system__id__exact={obj.system_id}"
        return format_html('<a href="{}">Batch files</a>', url)
