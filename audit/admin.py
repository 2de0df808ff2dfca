"""Admin for the audit trail: read-only for everyone."""

from __future__ import annotations

from django.contrib import admin

from audit.models import AuditEvent
from governance.admin_base import ReadOnlyAdminMixin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["occurred_at", "verb", "actor", "system", "record_id", "outcome", "summary"]
    list_filter = ["verb", "actor_type", "channel", "system", "outcome"]
    search_fields = ["=record_id", "=actor"]
    list_select_related = ["system"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False  # the table grows to millions of rows: no count(*) per page view
    readonly_fields = [field.name for field in AuditEvent._meta.fields]
