"""What the inventory's admin pages share: name lists, links to the audit trail, the readiness gate on a form."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib.admin.utils import unquote
from django.http import HttpRequest
from django.urls import reverse

from approvals.readiness import (
    production_writes_failing,
    readiness_override,
    refusal,
)
from audit.links import audit_trail_url
from core.admin import admin_user
from governance.models import (
    ScopeGrant,
)


class NameListField(forms.CharField):
    """A list of names edited as comma-separated text."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]  # a list is what this field holds
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


def switch_tool(request: HttpRequest, *, on: bool, **target: str) -> dict[str, str]:
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

    def gate(self, *, agents: Any, what: str, extra_grants: Any = (), changed_systems: Any = ()) -> None:
        """Refuse the save while the checklist fails, unless a superuser gave a reason (recorded at save)."""
        failing = production_writes_failing(agents, extra_grants=extra_grants, changed_systems=changed_systems)
        self.readiness_failing = (what, failing)
        if not failing:
            return
        user = admin_user(self.request) if self.request else None
        reason = (self.cleaned_data.get("readiness_override") or "").strip()
        if not reason or not (user and user.is_superuser):
            raise refusal(what, failing, user=user)


class GatedAdmin:
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
                user=admin_user(request),
                agent=agent,
            )
