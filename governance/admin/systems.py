"""Admin for systems, their resources and their actions."""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.timezone import localtime

from approvals.readiness import system_change_gains_production_writes
from audit.choices import Channel
from connectors.limits import availability
from core.admin import HistoryAdmin, OwnedAdminMixin, admin_user
from core.history import person
from governance.admin.base import (
    REASON,
    AuditTrailLinkMixin,
    ConfiguredAdminMixin,
    GatedAdmin,
    NameListField,
    ReadinessOverrideForm,
    switch_tool,
    timeline_tool,
)
from governance.choices import ConnectorKind, Environment
from governance.models import ActionType, Resource, System
from governance.pinning import action_tool_approve, may_approve_tool
from governance.services import may_configure_connections, system_owner_set


def system_before_environment(system: System) -> str | None:
    return System.objects.filter(pk=system.pk).values_list("environment", flat=True).first()


@admin.register(System)
class SystemAdmin(ConfiguredAdminMixin, GatedAdmin, AuditTrailLinkMixin, OwnedAdminMixin, HistoryAdmin):
    audit_filter = "system__id__exact"
    configuration_exclude = ("owner",)  # handed over by system_owner_set, which audits it
    configuration_reason_required = ("write_mode", "environment", "writes_frozen", "frozen_reason")
    list_display = ["slug", "name", "category", "environment", "integration_pattern", "write_mode", "owner"]
    list_filter = ["category", "environment", "integration_pattern", "write_mode"]
    search_fields = ["slug", "name"]
    list_select_related = ["owner"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "category", "environment"]}),
        ("People", {"fields": ["owner", "rollback_contact", "oncall_contact"]}),
        ("Data", {"fields": ["record_of", "conflict_winner"]}),
        ("Integration", {"fields": ["integration_pattern", "connector_kind", "staging_twin"]}),
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
                "connector_config",  # on a new system only (get_fieldsets): later, on its connector settings page
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
            agents = system_change_gains_production_writes(
                system,
                environment=cleaned.get("environment", system.environment),
                write_mode=cleaned.get("write_mode", system.write_mode),
            )
            if agents:
                moving = system.pk and cleaned.get("environment") != system_before_environment(system)
                what = f"Moving {system} to production with its writes on" if moving else f"Enabling writes to {system}"
                proposed = copy.copy(system)  # the system as this form would save it, for its checklist
                for name, value in cleaned.items():
                    if hasattr(proposed, name) and name in (self._meta.fields or ()):
                        setattr(proposed, name, value)
                self.gate(agents=agents, what=what, changed_systems=[proposed])
            return cleaned

    form = Form

    def get_fieldsets(self, request: HttpRequest, obj: System | None = None) -> Any:
        """A new system is given its connector settings with it (by a superuser); an existing one's are changed on
        their own page, by integrators and superusers only, and hidden from everyone else."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return [
                (name, {**options, "fields": [*options["fields"], "connector_config"]})
                if name == "Integration"
                else (name, options)
                for name, options in fieldsets
            ]
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: System | None = None) -> list[str]:
        # The freeze is the kill switch's (audited, with a reason, holding pending work), not a form field.
        readonly = ["writes_frozen", "frozen_reason", "availability"]
        if obj is not None:  # changed on the connector settings page (may_configure_connections), audited there
            readonly.append("connector_kind")
        # Handing a system to another owner moves sign-off authority: only a superuser may do it (system_owner_set).
        return readonly if request.user.is_superuser else [*readonly, "owner"]

    def history_hidden_fields(self, request: HttpRequest) -> list[str]:
        return [] if may_configure_connections(admin_user(request)) else ["connector_config"]

    def save_model(self, request: HttpRequest, obj: System, form: Any, change: bool) -> None:
        """Recorded by ConfiguredAdminMixin (a new system: every field), except a new owner: handed over through its
        service, which checks and audits the hand-over."""
        new_owner = obj.owner if change and "owner" in form.changed_data else None
        if new_owner is not None:
            obj.owner_id = System.objects.values_list("owner_id", flat=True).get(pk=obj.pk)
        super().save_model(request, obj, form, change)
        if new_owner is not None:
            system_owner_set(
                system=obj,
                owner=new_owner,
                user=admin_user(request),
                channel=Channel.ADMIN,
                reason=form.cleaned_data.get(REASON, ""),
            )

    @admin.display(description="Availability")
    def availability(self, obj: System) -> str:
        """The circuit breaker and rate limit as every process sees them now (connectors/limits.py)."""
        if obj.pk is None:
            return "—"
        return str(availability(obj))

    def object_tools(self, request: HttpRequest, obj: System) -> list[dict[str, str]]:
        tools = [
            switch_tool(request, on=obj.writes_frozen, system=obj.slug),
            *timeline_tool(request, "admin:audit_system_timeline", obj.slug),
        ]
        if may_configure_connections(admin_user(request)):
            tools.append(
                {
                    "label": "Connector settings…",
                    "url": reverse("admin:governance_systemconnection_change", args=[obj.pk]),
                    "id": "connector-settings-link",
                }
            )
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
class ResourceAdmin(ConfiguredAdminMixin, OwnedAdminMixin, HistoryAdmin):
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


class PausedFilter(admin.SimpleListFilter):
    """The list of changed tools: actions paused because their MCP tool changed on the server."""

    title = "paused (tool changed)"
    parameter_name = "paused"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Paused: awaiting approval"), ("no", "Not paused")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() == "yes":
            return queryset.exclude(paused_reason="")
        if self.value() == "no":
            return queryset.filter(paused_reason="")
        return queryset


@admin.register(ActionType)
class ActionTypeAdmin(ConfiguredAdminMixin, OwnedAdminMixin, HistoryAdmin):
    list_display = ["__str__", "resource", "impact_kind", "compensation", "description", "tool_state"]
    list_filter = [PausedFilter, "system", "impact_kind", "compensation"]
    readonly_fields = ["tool_pin"]
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

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/approve-tool/",
                view(self.approve_tool_view),
                name="governance_actiontype_approve_tool",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="MCP tool")
    def tool_state(self, action: ActionType) -> str:
        if action.paused:
            url = reverse("admin:governance_actiontype_approve_tool", args=[action.pk])
            return format_html('<a class="tool-paused" href="{}">Paused: changed on the server — review</a>', url)
        return "pinned" if action.tool_digest else "—"

    @admin.display(description="MCP tool pinned")
    def tool_pin(self, action: ActionType) -> str:
        """What the connector checks the server's tool against, and the approve page while it is paused."""
        if not action.tool_digest:
            return "Not pinned (an MCP system's action is pinned when its tools are imported)."
        who = person(action.tool_pinned_by) if action.tool_pinned_by else "the command line"
        pinned = format_html(
            "{} (digest {}…), pinned {} by {}.",
            action.tool_name,
            action.tool_digest[:12],
            localtime(action.tool_pinned_at).strftime("%Y-%m-%d %H:%M") if action.tool_pinned_at else "?",
            who,
        )
        if not action.paused:
            return pinned
        url = reverse("admin:governance_actiontype_approve_tool", args=[action.pk])
        return format_html(
            '{} <strong>Paused</strong>: {}. <a href="{}">Review and approve the new definition</a>',
            pinned,
            action.paused_reason,
            url,
        )

    def approve_tool_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The changed tool side by side with what was approved, and one button that approves exactly what the page
        shows (the service refuses a definition that changed again, and anyone who may not approve)."""
        action = get_object_or_404(self.get_queryset(request).select_related("system__owner", "resource"), pk=object_id)
        if not self.has_view_permission(request, action):
            raise PermissionDenied
        page = reverse("admin:governance_actiontype_approve_tool", args=[action.pk])
        back = reverse("admin:governance_actiontype_change", args=[action.pk])
        user = admin_user(request)
        if request.method == "POST":
            try:
                action_tool_approve(
                    action_id=action.pk,
                    user=user,
                    channel=Channel.ADMIN,
                    seen_digest=request.POST.get("digest", ""),
                    reason=request.POST.get("reason", ""),
                )
            except (PermissionDenied, ValidationError) as exc:
                self.message_user(request, " ".join(getattr(exc, "messages", None) or [str(exc)]), messages.ERROR)
                return HttpResponseRedirect(page)
            self.message_user(
                request, f"You approved the new definition of {action.tool_name}: {action} resumes.", messages.SUCCESS
            )
            return HttpResponseRedirect(back)
        pending = action.tool_pending or {}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Approve the changed MCP tool of {action}",
            "action": action,
            "pending": pending,
            "gone": bool(pending) and pending.get("definition") is None,
            "pinned_json": _pretty(action.tool_definition),
            "pending_json": _pretty(pending.get("definition")),
            "may_approve": may_approve_tool(user, action),
            "approver": person(user),
        }
        return TemplateResponse(request, "admin/governance/actiontype/approve_tool.html", context)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) if value else ""
