"""Admin for the inventory: systems, resources, actions, agents and tokens, grants, threshold rules."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from approvals.readiness import (
    enables_production_writes,
    production_writes_failing,
    readiness,
    readiness_override,
    refusal,
)
from audit.choices import Channel
from audit.links import audit_trail_url
from connectors.limits import availability
from core.admin import HistoryAdmin, OwnedAdminMixin
from core.history import HistoryLine
from governance.choices import Access, AgentStatus, ConnectorKind, Environment, WriteMode
from governance.history import threshold_rule_history
from governance.models import (
    ActionType,
    Agent,
    AgentToken,
    Resource,
    ScopeGrant,
    System,
    ThresholdBand,
    ThresholdRule,
    validate_bands,
)
from governance.services import agent_token_issue, agent_tokens_revoke, threshold_rule_sign_off


class NameListField(forms.CharField):
    """A list of names edited as comma-separated text."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(value)
        return value

    def to_python(self, value) -> list[str]:
        if isinstance(value, list):
            return value
        text = super().to_python(value) or ""
        return [name.strip() for name in text.split(",") if name.strip()]


class AuditTrailLinkMixin:
    """Links from the change page: the audit events of this row (the changelist filtered by `audit_filter`), and
    the row's own tools (`object_tools`: the kill switch, a reversal, a drill, a report)."""

    audit_filter = ""
    change_form_template = "admin/audit/trail_link_change_form.html"

    def object_tools(self, request: HttpRequest, obj) -> list[dict[str, str]]:
        return []

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        extra: dict = {}
        if request.user.has_perm("audit.view_auditevent"):
            extra["audit_trail_url"] = audit_trail_url(**{self.audit_filter: unquote(object_id)})
        obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if obj is not None:
            extra["object_tools"] = self.object_tools(request, obj)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})  # type: ignore[misc]


def _switch_tool(request: HttpRequest, *, on: bool, **target: str) -> dict[str, str]:
    url = reverse("admin:approvals_kill_switch") + "?" + urlencode(target)
    if on:
        return {"label": "Kill switch is ON — release…", "url": url, "id": "kill-switch-link", "class": "kill-on"}
    return {"label": "Kill switch…", "url": url, "id": "kill-switch-link", "class": "kill-off"}


class ReadinessOverrideForm(forms.ModelForm):
    """Adds the superuser's override of the readiness gate to a form that can enable production writes."""

    readiness_override = forms.CharField(
        required=False,
        max_length=300,
        label="Override readiness (superusers)",
        help_text="Only if the readiness checklist fails and you accept the risk: say why. This is audited.",
    )
    request: HttpRequest | None = None

    def gate(self, *, agents, what: str, extra_grants=()) -> None:
        """Refuse the save while the checklist fails, unless a superuser gave a reason (recorded at save)."""
        failing = production_writes_failing(agents, extra_grants=extra_grants)
        self.readiness_failing = (what, failing)
        if not failing:
            return
        user = self.request.user if self.request else None
        reason = (self.cleaned_data.get("readiness_override") or "").strip()
        if not reason or not (user and user.is_superuser):
            raise refusal(what, failing, user=user)


class _GatedAdmin:
    """Writes the override's audit event once the gated object is saved."""

    def get_form(self, request: HttpRequest, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)  # type: ignore[misc]
        return type(form.__name__, (form,), {"request": request})

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        super().save_model(request, obj, form, change)  # type: ignore[misc]
        what, failing = getattr(form, "readiness_failing", ("", []))
        if failing:
            agent = obj.agent if isinstance(obj, ScopeGrant) else None
            readiness_override(
                what=what,
                failing=failing,
                reason=form.cleaned_data.get("readiness_override", ""),
                user=request.user,
                agent=agent,
            )


@admin.register(System)
class SystemAdmin(_GatedAdmin, AuditTrailLinkMixin, OwnedAdminMixin, HistoryAdmin):
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

        def clean(self):
            cleaned = super().clean()
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
        tools = [_switch_tool(request, on=obj.writes_frozen, system=obj.slug)]
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
        fields = NameListField(help_text="Comma-separated field names, e.g. name, email, credit_limit.")

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


class AgentTokenInline(admin.TabularInline):
    """Tokens are issued and revoked with the actions above the list; here they are only shown."""

    model = AgentToken
    extra = 0
    can_delete = False
    fields = ["prefix", "label", "created_at", "created_by", "expires_at", "revoked_at", "last_used_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Agent)
class AgentAdmin(AuditTrailLinkMixin, OwnedAdminMixin, HistoryAdmin):
    audit_filter = "agent__id__exact"
    list_display = ["slug", "name", "status", "owner", "created_at"]
    list_filter = ["status"]
    search_fields = ["slug", "name"]
    list_select_related = ["owner"]
    inlines = [AgentTokenInline]
    actions = ["issue_token", "revoke_tokens"]
    # Stopping an agent is the kill switch's (audited, with a reason, holding its pending work), not a form field.
    readonly_fields = ["status", "disabled_reason", "readiness_checklist"]
    fields = ["slug", "name", "description", "owner", "status", "disabled_reason", "readiness_checklist"]

    @admin.display(description="Readiness for production writes")
    def readiness_checklist(self, agent: Agent) -> str:
        if not agent.pk:
            return "Computed once the agent is saved."
        checklist = readiness(agent)
        rows = format_html_join(
            "",
            '<li class="readiness-{}"><strong>{} {}</strong>: {}{}</li>',
            (
                (
                    "ok" if item.ok else "fail",
                    "✓" if item.ok else "✗",
                    item.label,
                    item.reason,
                    format_html(' — <a href="{}">fix</a>', item.fix_url) if item.fix_url and not item.ok else "",
                )
                for item in checklist.items
            ),
        )
        verdict = "Ready for production writes." if checklist.ok else "Not ready: production writes are refused."
        return format_html('<p id="readiness-verdict">{}</p><ul id="readiness">{}</ul>', verdict, rows)

    def object_tools(self, request: HttpRequest, obj: Agent) -> list[dict[str, str]]:
        return [
            _switch_tool(request, on=obj.status == AgentStatus.DISABLED, agent=obj.slug),
            {
                "label": "Reverse recent writes…",
                "url": reverse("admin:approvals_reversal_plan") + "?" + urlencode({"agent": obj.slug}),
                "id": "reverse-link",
            },
            {
                "label": "Autonomy report",
                "url": reverse("admin:approvals_autonomy", args=[obj.slug]),
                "id": "autonomy-link",
            },
        ]

    @admin.action(description="Issue a new token (shown once)", permissions=["change"])
    def issue_token(self, request: HttpRequest, queryset: QuerySet[Agent]) -> TemplateResponse | None:
        agents = [agent for agent in queryset if self.has_change_permission(request, agent)]
        if not agents:
            self.message_user(request, "You may not issue tokens for these agents.", messages.ERROR)
            return None
        issued = [
            (agent, agent_token_issue(agent=agent, issued_by=request.user, channel=Channel.ADMIN, label="admin")[1])
            for agent in agents
        ]
        # Rendered straight into the response: a message would put the secret in a cookie or the session.
        context = {**self.admin_site.each_context(request), "title": "New agent tokens", "issued": issued}
        return TemplateResponse(request, "admin/governance/agent/issued_tokens.html", context)

    @admin.action(description="Revoke all tokens", permissions=["change"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        total = 0
        for agent in queryset:
            if self.has_change_permission(request, agent):
                total += agent_tokens_revoke(agent=agent, revoked_by=request.user, channel=Channel.ADMIN)
        self.message_user(request, f"Revoked {total} token(s).")


@admin.register(ScopeGrant)
class ScopeGrantAdmin(_GatedAdmin, OwnedAdminMixin, HistoryAdmin):
    list_display = ["agent", "system", "resource", "access", "allowed", "granted_by", "expires_at"]
    list_filter = ["access", "system", "agent"]
    search_fields = ["agent__slug", "system__slug", "resource__name"]
    list_select_related = ["agent", "system", "resource", "granted_by"]
    readonly_fields = ["granted_by", "created_at"]
    owned_choice_fields = {"system": "owner", "resource": "system__owner"}

    class Form(ReadinessOverrideForm):
        fields = NameListField(required=False, help_text="Read grants: comma-separated fields; empty means all.")
        actions = NameListField(required=False, help_text="Write grants: comma-separated action names.")

        class Meta:
            model = ScopeGrant
            fields = ["agent", "system", "resource", "access", "fields", "actions", "justification", "expires_at"]

        def clean(self):
            cleaned = super().clean()
            if self.errors:
                return cleaned
            grant = self.instance
            for name in ("agent", "system", "resource", "access", "actions", "justification", "expires_at"):
                if name in cleaned:
                    setattr(grant, name, cleaned[name])
            if grant.agent_id and grant.system_id and enables_production_writes(grant):
                self.gate(
                    agents=[grant.agent],
                    what=f"A write grant for {grant.agent} on {grant.system} (production)",
                    extra_grants=[grant],
                )
            return cleaned

    form = Form

    @admin.display(description="Fields / actions")
    def allowed(self, obj: ScopeGrant) -> str:
        if obj.access == "read":
            return ", ".join(obj.fields) or "all fields"
        return ", ".join(obj.actions)

    def save_model(self, request: HttpRequest, obj: ScopeGrant, form, change: bool) -> None:
        if not change:
            obj.granted_by = request.user
        super().save_model(request, obj, form, change)


class BandFormSet(BaseInlineFormSet):
    """Validates the bands together: from 0, no gaps, no overlaps, open-ended, approvers and SLAs where needed."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        specs = []
        for form in self.forms:
            if not form.cleaned_data or form.cleaned_data.get("DELETE"):
                continue
            specs.append(form.instance.spec())
        validate_bands(specs)


class ThresholdBandInline(admin.TabularInline):
    model = ThresholdBand
    formset = BandFormSet
    extra = 0
    min_num = 1
    fields = [
        "min_amount",
        "max_amount",
        "mode",
        "approver",
        "approver_group",
        "sla",
        "review_group",
        "review_timing",
        "review_within",
    ]


@admin.register(ThresholdRule)
class ThresholdRuleAdmin(OwnedAdminMixin, HistoryAdmin):
    list_display = ["name", "system", "action_type", "currency", "band_summary", "signed_off"]
    list_filter = ["system"]
    search_fields = ["name", "system__slug", "action_type__name"]
    list_select_related = ["system", "action_type", "signed_off_by"]
    readonly_fields = ["signed_off_by", "signed_off_at", "sign_off_state"]
    inlines = [ThresholdBandInline]
    actions = ["sign_off"]
    owned_choice_fields = {"system": "owner", "action_type": "system__owner"}

    def history_lines(self, request: HttpRequest, object_id, records) -> list[HistoryLine]:
        return threshold_rule_history(object_id)  # the bands' changes too, each with the sign-off it left in force

    @admin.display(description="Bands")
    def band_summary(self, rule: ThresholdRule) -> str:
        return format_html_join(", ", "{}", ((str(band),) for band in rule.bands.all()))

    @admin.display(description="Signed off", boolean=True)
    def signed_off(self, rule: ThresholdRule) -> bool:
        return rule.is_signed_off

    @admin.display(description="Sign-off")
    def sign_off_state(self, rule: ThresholdRule) -> str:
        if rule.is_signed_off:
            return f"Signed off by {rule.signed_off_by} at {rule.signed_off_at:%Y-%m-%d %H:%M} UTC; in effect."
        if rule.signed_off_by_id:
            return (
                f"Edited after {rule.signed_off_by}'s sign-off: void until the business owner signs off again. "
                "Until then every proposal under this rule waits for a human."
            )
        return "Not signed off: every proposal under this rule waits for a human."

    @admin.action(description="Sign off the selected rules (business owner)")
    def sign_off(self, request: HttpRequest, queryset: QuerySet[ThresholdRule]) -> None:
        done, refused = 0, []
        for rule in queryset.select_related("system"):
            try:
                threshold_rule_sign_off(rule=rule, user=request.user, channel=Channel.ADMIN)
                done += 1
            except (PermissionDenied, ValidationError) as exc:
                refused.append(f"{rule.name}: {' '.join(getattr(exc, 'messages', [str(exc)]))}")
        if done:
            self.message_user(request, f"Signed off {done} rule(s).")
        for reason in refused:
            self.message_user(request, reason, messages.ERROR)
