"""Admin for agents, their tokens and their scope grants."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from approvals.limits import budgets_of
from approvals.readiness import (
    enables_production_writes,
    readiness,
)
from audit.choices import Channel
from core.admin import HistoryAdmin, OwnedAdminMixin, admin_user
from core.history import window_words
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
from governance.choices import AgentStatus
from governance.models import (
    Agent,
    AgentBudget,
    AgentToken,
    ScopeGrant,
)
from governance.querysets import sees_everything
from governance.services import (
    agent_budget_delete,
    agent_budget_save,
    agent_owner_set,
    agent_token_issue,
    agent_tokens_revoke,
    may_mint_tokens,
    may_revoke_tokens,
)


class AgentTokenInline(admin.TabularInline):
    """Tokens are issued and revoked with the actions above the list; here they are only shown."""

    model = AgentToken
    extra = 0
    can_delete = False
    fields = ("prefix", "label", "created_at", "created_by", "expires_at", "networks", "revoked_at", "last_used_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Agent)
class AgentAdmin(ConfiguredAdminMixin, AuditTrailLinkMixin, OwnedAdminMixin, HistoryAdmin):
    audit_filter = "agent__id__exact"
    configuration_exclude = ("owner",)  # handed over by agent_owner_set, which audits it
    list_display = ["slug", "name", "status", "owner", "created_at"]
    list_filter = ["status"]
    search_fields = ["slug", "name"]
    list_select_related = ["owner"]
    inlines = [AgentTokenInline]
    actions = ["issue_token", "revoke_tokens"]
    # Stopping an agent is the kill switch's (audited, with a reason, holding its pending work), not a form field.
    readonly_fields = ["status", "disabled_reason", "readiness_checklist", "budget_use"]

    def get_readonly_fields(self, request: HttpRequest, obj: Agent | None = None) -> list[str]:
        # Its owner mints its tokens (acts as it): handing it to someone else is a superuser's act (agent_owner_set).
        readonly = list(self.readonly_fields)
        return readonly if request.user.is_superuser else [*readonly, "owner"]

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        new_owner = obj.owner if change and "owner" in form.changed_data else None
        if new_owner is not None:  # saved through its service, which checks and audits the handover
            obj.owner_id = Agent.objects.values_list("owner_id", flat=True).get(pk=obj.pk)
        super().save_model(request, obj, form, change)
        if new_owner is not None:
            agent_owner_set(
                agent=obj,
                owner=new_owner,
                user=admin_user(request),
                channel=Channel.ADMIN,
                reason=form.cleaned_data.get(REASON, ""),
            )

    fields = ["slug", "name", "description", "owner", "status", "disabled_reason", "readiness_checklist", "budget_use"]

    @admin.display(description="Budgets")
    def budget_use(self, agent: Agent) -> str:
        """Each budget: its limits, what the agent used of them in the window ending now, and what is left."""
        add = reverse("admin:governance_agentbudget_add") + "?" + urlencode({"agent": agent.pk}) if agent.pk else ""
        uses = budgets_of(agent) if agent.pk else []
        if not uses:
            return format_html('No budget: its rules alone decide. <a href="{}">Set one</a>', add)

        def limit(value: Any, used: Any, left: Any, unit: str) -> str:
            return "no limit" if value is None else f"{used} of {value}{unit} used, {left} left"

        rows = format_html_join(
            "",
            '<li><a href="{}">{}</a>: {}; {} (in the last {})</li>',
            (
                (
                    reverse("admin:governance_agentbudget_change", args=[use.budget.pk]),
                    use.budget.system,
                    limit(use.budget.max_amount, use.amount, use.amount_left, f" {use.budget.currency}"),
                    limit(use.budget.max_writes, use.writes, use.writes_left, " writes"),
                    window_words(use.budget.window),
                )
                for use in uses
            ),
        )
        return format_html('<ul id="budgets">{}</ul>', rows)

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
            switch_tool(request, on=obj.status == AgentStatus.DISABLED, agent=obj.slug),
            *timeline_tool(request, "admin:audit_agent_timeline", obj.slug),
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

    def has_issue_token_permission(self, request: HttpRequest) -> bool:
        """The action is offered to whoever may mint some agent's tokens: superusers and agents' owners."""
        user = request.user
        return bool(user.is_active and (user.is_superuser or Agent.objects.filter(owner_id=user.pk).exists()))

    def has_revoke_tokens_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(
            user.is_active and (user.is_superuser or sees_everything(user) or self.has_issue_token_permission(request))
        )

    @admin.action(description="Issue a new token (shown once)", permissions=["issue_token"])
    def issue_token(self, request: HttpRequest, queryset: QuerySet[Agent]) -> TemplateResponse | None:
        user = admin_user(request)
        agents = [agent for agent in queryset if may_mint_tokens(user, agent)]
        if len(agents) < len(queryset):
            self.message_user(
                request, "Only an agent's owner or a superuser issues its tokens: some were left out.", messages.ERROR
            )
        if not agents:
            return None
        issued = [
            (
                agent,
                agent_token_issue(agent=agent, issued_by=admin_user(request), channel=Channel.ADMIN, label="admin")[1],
            )
            for agent in agents
        ]
        # Rendered straight into the response: a message would put the secret in a cookie or the session.
        context = {**self.admin_site.each_context(request), "title": "New agent tokens", "issued": issued}
        return TemplateResponse(request, "admin/governance/agent/issued_tokens.html", context)

    @admin.action(description="Revoke all tokens", permissions=["revoke_tokens"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        total, skipped = 0, 0
        user = admin_user(request)
        for agent in queryset:
            if may_revoke_tokens(user, agent):
                total += agent_tokens_revoke(agent=agent, revoked_by=user, channel=Channel.ADMIN)
            else:
                skipped += 1
        self.message_user(request, f"Revoked {total} token(s).")
        if skipped:
            self.message_user(request, f"{skipped} agent(s) left out: you may not revoke their tokens.", messages.ERROR)


@admin.register(ScopeGrant)
class ScopeGrantAdmin(ConfiguredAdminMixin, GatedAdmin, OwnedAdminMixin, HistoryAdmin):
    configuration_reason_required = True
    list_display = ["agent", "system", "resource", "access", "allowed", "granted_by", "expires_at"]
    list_filter = ["access", "system", "agent"]
    search_fields = ["agent__slug", "system__slug", "resource__name"]
    list_select_related = ["agent", "system", "resource", "granted_by"]
    readonly_fields = ["granted_by", "created_at"]
    owned_choice_fields = {"system": "owner", "resource": "system__owner"}

    class Form(ReadinessOverrideForm):
        # A form field named as the model field `fields`, which django-stubs reads as BaseForm.fields.
        fields = NameListField(required=False, help_text="Read grants: comma-separated fields; empty means all.")  # type: ignore[assignment]
        actions = NameListField(required=False, help_text="Write grants: comma-separated action names.")

        class Meta:
            model = ScopeGrant
            fields = ["agent", "system", "resource", "access", "fields", "actions", "justification", "expires_at"]

        def clean(self) -> dict[str, Any]:
            cleaned = super().clean() or {}
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

    def save_model(self, request: HttpRequest, obj: ScopeGrant, form: Any, change: bool) -> None:
        if not change:
            obj.granted_by = request.user  # type: ignore[assignment]  # the admin's user: signed in
        super().save_model(request, obj, form, change)


@admin.register(AgentBudget)
class AgentBudgetAdmin(OwnedAdminMixin, HistoryAdmin):
    """Set by the agent's owner or a superuser; every save and removal goes through its audited service."""

    list_display = ["agent", "system", "max_amount", "currency", "max_writes", "window"]
    list_filter = ["system"]
    search_fields = ["agent__slug", "system__slug"]
    list_select_related = ["agent", "system"]
    owned_choice_fields = {"agent": "owner"}

    def save_model(self, request: HttpRequest, obj: AgentBudget, form: Any, change: bool) -> None:
        obj._change_reason = "origin=admin"  # type: ignore[attr-defined]
        agent_budget_save(budget=obj, user=admin_user(request), channel=Channel.ADMIN)

    def delete_model(self, request: HttpRequest, obj: AgentBudget) -> None:
        agent_budget_delete(budget=obj, user=admin_user(request), channel=Channel.ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AgentBudget]) -> None:
        for budget in queryset.select_related("agent", "system"):
            agent_budget_delete(budget=budget, user=admin_user(request), channel=Channel.ADMIN)
