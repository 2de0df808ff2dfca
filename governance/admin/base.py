"""What the inventory's admin pages share: name lists, links to the audit trail, the readiness gate on a form."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse

from approvals.readiness import production_writes_gate, readiness_override
from audit.choices import Channel
from audit.links import audit_trail_url
from core.admin import admin_user
from governance.configuration import configuration_change, snapshot
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


def timeline_tool(request: HttpRequest, name: str, slug: str) -> list[dict[str, str]]:
    """The agent's or system's timeline: what it did and every change of what governs it, who, before → after, why."""
    if not request.user.has_perm("audit.view_auditevent"):
        return []
    return [{"label": "Timeline", "url": reverse(name, args=[slug]), "id": "timeline-link"}]


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
        user = admin_user(self.request) if self.request else None
        failing = production_writes_gate(
            agents,
            what=what,
            user=user,
            override_reason=self.cleaned_data.get("readiness_override") or "",
            extra_grants=extra_grants,
            changed_systems=changed_systems,
        )
        self.readiness_failing = (what, failing)


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


# --- Configuration in the trail --------------------------------------------------------------------------------

REASON = "configuration_reason"
_NOT_A_CHANGE = {REASON, "readiness_override"}


def _reason_form(base: type[forms.ModelForm], required: bool | tuple[str, ...]) -> type[forms.ModelForm]:
    """`base` with a "reason for this change" field, required when the change is one that `required` names."""

    def clean(self: Any) -> dict[str, Any]:
        cleaned = base.clean(self) or {}
        changed = set(self.changed_data) - _NOT_A_CHANGE
        needed = bool(changed) if required is True else bool(changed & set(required or ()))
        if needed and not (cleaned.get(REASON) or "").strip():
            names = ", ".join(sorted(changed if required is True else changed & set(required or ())))
            self.add_error(REASON, f"Say why you change this ({names}): it is kept in the audit trail.")
        return cleaned

    reason = forms.CharField(
        required=False,
        max_length=300,
        label="Reason for this change",
        help_text="Kept in the audit trail with who changed what, before and after.",
    )
    return type(base.__name__, (base,), {REASON: reason, "clean": clean})


def _reason_formset(base: Any, reason: str, what: str) -> Any:
    """An inline formset that refuses a change of its rows (added, changed, deleted) without the form's reason."""

    def clean(self: Any) -> None:
        base.clean(self)
        if not reason and self.has_changed():
            raise ValidationError(f"Say why you change the {what}: fill in “Reason for this change” below.")

    return type(base.__name__, (base,), {"clean": clean})


class ConfiguredAdminMixin:
    """Every save and delete of a governed object through the admin writes one `configured` audit event (field by
    field, before and after, inline rows included, the person and the reason) via `configuration_change`, attached to
    the agent and/or system it governs. Mix it in first on any admin of something that gives an agent power.

    `configuration_children`: related names of inline rows recorded with the object (a rule's "bands").
    `configuration_exclude`: fields another service audits itself (the owner: the hand-over's own event).
    `configuration_reason_required`: True (any change needs a reason), or the field names that need one.
    """

    configuration_children: tuple[str, ...] = ()
    configuration_exclude: tuple[str, ...] = ()
    configuration_reason_required: bool | tuple[str, ...] = False

    def get_form(self, request: HttpRequest, obj=None, change=False, **kwargs):
        base = kwargs.pop("form", self.form)  # type: ignore[attr-defined]
        kwargs["form"] = _reason_form(base, self.configuration_reason_required)
        return super().get_form(request, obj, change, **kwargs)  # type: ignore[misc]

    def get_fieldsets(self, request: HttpRequest, obj=None) -> Any:
        fieldsets = [
            (name, {**options, "fields": [f for f in options["fields"] if f != REASON]})
            for name, options in super().get_fieldsets(request, obj)  # type: ignore[misc]
        ]
        may = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)  # type: ignore[attr-defined]
        return [*fieldsets, ("Why", {"fields": [REASON]})] if may else fieldsets

    def get_formsets_with_inlines(self, request: HttpRequest, obj=None):
        reason = (request.POST.get(REASON) or "").strip()
        for formset, inline in super().get_formsets_with_inlines(request, obj):  # type: ignore[misc]
            if self.configuration_reason_required is True and request.method == "POST":
                formset = _reason_formset(formset, reason, str(inline.model._meta.verbose_name_plural))
            yield formset, inline

    def _configuration_snapshot(self, obj: Any, *, whole: bool = False) -> Any:
        """`whole`: a new object, every field (its first owner too: nothing else records it)."""
        exclude = () if whole else self.configuration_exclude
        return snapshot(obj, children=self.configuration_children, exclude=exclude)

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        form._configuration_before = self._configuration_snapshot(obj) if change else None
        super().save_model(request, obj, form, change)  # type: ignore[misc]

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        """After the inlines: one event for the object and its rows, in the admin's transaction."""
        super().save_related(request, form, formsets, change)  # type: ignore[misc]
        obj = form.instance
        configuration_change(
            obj=obj,
            before=getattr(form, "_configuration_before", None),
            after=self._configuration_snapshot(obj, whole=not change),
            user=admin_user(request),
            channel=Channel.ADMIN,
            reason=form.cleaned_data.get(REASON, ""),
        )

    def delete_model(self, request: HttpRequest, obj) -> None:
        with transaction.atomic():
            before = self._configuration_snapshot(obj)
            configuration_change(obj=obj, before=before, after=None, user=admin_user(request), channel=Channel.ADMIN)
            super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        with transaction.atomic():
            for obj in queryset:
                configuration_change(
                    obj=obj,
                    before=self._configuration_snapshot(obj),
                    after=None,
                    user=admin_user(request),
                    channel=Channel.ADMIN,
                )
            super().delete_queryset(request, queryset)  # type: ignore[misc]
