"""Admin for systems, their resources and their actions."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse

from connectors.limits import availability
from core.admin import HistoryAdmin, OwnedAdminMixin
from governance.admin.base import AuditTrailLinkMixin, GatedAdmin, NameListField, ReadinessOverrideForm, switch_tool
from governance.choices import Access, ConnectorKind, Environment, WriteMode
from governance.models import (
    ActionType,
    Agent,
    Resource,
    System,
)


@admin.register(System)
class SystemAdmin(GatedAdmin, AuditTrailLinkMixin, OwnedAdminMixin, HistoryAdmin):
    audit_filter = "system__id__exact"
    list_display = ["slug", "name", "category", "environment", "integration_pattern", "write_mode", "owner"]
    list_filter = ["category", "environment", "integration_pattern", "write_mode"]
    search_fields = ["slug", "name"]
    list_select_related = ["owner"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "category", "environment"]}),
        ("People", {"fields": ["owner", "rollback_contact", "oncall_contact"]}),
        ("Data", {"fields": ["record_of", "conflict_winner"]}),
        ("Integration", {"fields": ["integration_pattern", "connector_kind", "connector_config", "staging_twin"]}),
        ("Writes", {"fields": ["write_mode", "writes_frozen", "frozen_reason", "readiness_override"]}),
        ("Drills", {"fields": ["drill_record_id"]}),
        (
            "Limits",
            {
                "fields": [
                    "availability",
                    "rate_limit_per_minute",
                    "rate_limit_burst",
                    "breaker_threshold",
                    "breaker_cooldown",
                ]
            },
        ),
    ]

    class Form(ReadinessOverrideForm):
        class Meta:
            model = System
            fields = [
                "name",
                "slug",
                "description",
                "category",
                "environment",
                "owner",
                "rollback_contact",
                "oncall_contact",
                "record_of",
                "conflict_winner",
                "integration_pattern",
                "connector_kind",
                "connector_config",
                "staging_twin",
                "write_mode",
                "drill_record_id",
                "rate_limit_per_minute",
                "rate_limit_burst",
                "breaker_threshold",
                "breaker_cooldown",
            ]

        def clean(self) -> dict[str, Any]:
            cleaned = super().clean() or {}
            system = self.instance
            enabling = cleaned.get("write_mode") == WriteMode.ENABLED and (
                not system.pk or System.objects.filter(pk=system.pk).exclude(write_mode=WriteMode.ENABLED).exists()
            )
            if enabling and cleaned.get("environment", system.environment) == Environment.PRODUCTION and system.pk:
                agents = Agent.objects.filter(grants__system=system, grants__access=Access.WRITE).distinct()
                self.gate(agents=list(agents), what=f"Enabling writes to {system}")
            return cleaned

    form = Form

    def get_readonly_fields(self, request: HttpRequest, obj: System | None = None) -> list[str]:
        # The freeze is the kill switch's (audited, with a reason, holding pending work), not a form field.
        frozen = ["writes_frozen", "frozen_reason", "availability"]
        # Handing a system to another owner moves sign-off authority: only a superuser may do it.
        return frozen if request.user.is_superuser else [*frozen, "owner"]

    @admin.display(description="Availability")
    def availability(self, obj: System) -> str:
        """The circuit breaker and rate limit as every process sees them now (connectors/limits.py)."""
        if obj.pk is None:
            return "—"
        return str(availability(obj))

    def object_tools(self, request: HttpRequest, obj: System) -> list[dict[str, str]]:
        tools = [switch_tool(request, on=obj.writes_frozen, system=obj.slug)]
        tools.append(
            {
                "label": "Reverse recent writes…",
                "url": reverse("admin:approvals_reversal_plan") + "?" + urlencode({"system": obj.slug}),
                "id": "reverse-link",
            }
        )
        if request.user.has_perm("connectors.view_credential"):
            tools.append(
                {
                    "label": "Credential blast radius",
                    "url": reverse("admin:connectors_credential_blast_radius", args=[obj.slug]),
                    "id": "blast-radius-link",
                }
            )
        if obj.environment == Environment.STAGING or obj.staging_twin_id:
            tools.append(
                {
                    "label": "Rollback drills",
                    "url": reverse("admin:approvals_drill_changelist") + f"?system__id__exact={obj.pk}",
                    "id": "drills-link",
                }
            )
        if obj.connector_kind == ConnectorKind.LEGACY_BATCH:  # files taken, rows quarantined with their reasons
            tools.append(
                {
                    "label": "Batch files",
                    "url": reverse("admin:connectors_batchfile_changelist") + f"?system__id__exact={obj.pk}",
                    "id": "batch-files-link",
                }
            )
        return tools


@admin.register(Resource)
class ResourceAdmin(OwnedAdminMixin, HistoryAdmin):
    list_display = ["__str__", "label", "field_list"]
    list_filter = ["system"]
    search_fields = ["name", "system__slug"]
    owned_choice_fields = {"system": "owner"}

    class Form(forms.ModelForm):
        # A form field named as the model field `fields`, which django-stubs reads as BaseForm.fields.
        fields = NameListField(help_text="Comma-separated field names, e.g. name, email, credit_limit.")  # type: ignore[assignment]

        class Meta:
            model = Resource
            fields = ["system", "name", "label", "fields"]

    form = Form

    @admin.display(description="Fields")
    def field_list(self, obj: Resource) -> str:
        return ", ".join(obj.fields)


@admin.register(ActionType)
class ActionTypeAdmin(OwnedAdminMixin, HistoryAdmin):
    list_display = ["__str__", "resource", "impact_kind", "compensation", "description"]
    list_filter = ["system", "impact_kind", "compensation"]
    search_fields = ["name", "system__slug"]
    list_select_related = ["system", "resource"]
    owned_choice_fields = {"system": "owner", "resource": "system__owner"}

    class Form(forms.ModelForm):
        preconditions = NameListField(required=False, help_text='Comma-separated, e.g. "record_exists".')

        class Meta:
            model = ActionType
            fields = [
                "system",
                "resource",
                "name",
                "description",
                "payload_schema",
                "impact_kind",
                "impact_field",
                "impact_currency",
                "preconditions",
                "operation",
                "compensation",
                "not_reversible_note",
            ]

    form = Form
