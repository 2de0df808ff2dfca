"""Admin for vaulted credentials: a secret can be set or rotated here, never read back."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from audit.choices import Channel
from audit.links import audit_trail_url
from connectors.models import AgentCredential, Credential
from connectors.services import Rotation, agent_credential_remove, credential_rotate, credential_set
from core.admin import HistoryAdmin, OwnedAdminMixin, admin_user
from governance.admin.base import REASON, ConfiguredAdminMixin


class CredentialForm(forms.ModelForm):
    secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        help_text="Write-only. Leave empty to keep the current secret; a new value counts as a rotation, checked "
        "against the system first (or use “Rotate credential”).",
    )

    class Meta:
        model = Credential
        fields = ["system", "kind", "header_name", "username", "is_admin_level", "is_shared", "rotation_interval"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.instance.pk and not cleaned.get("secret"):
            self.add_error("secret", "A new credential needs its secret.")
        return cleaned


class RotateForm(forms.Form):
    secret = forms.CharField(
        label="New secret",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        strip=False,
        help_text="Write-only: never shown again. The system is checked with it before it is stored.",
    )
    reason = forms.CharField(
        required=False, max_length=300, label="Reason", help_text="Why now (kept in the audit trail, the secret never)."
    )


@admin.register(Credential)
class CredentialAdmin(ConfiguredAdminMixin, OwnedAdminMixin, HistoryAdmin):
    """Its settings (kind, admin level, sharing, rotation interval) recorded by ConfiguredAdminMixin; the secret
    never: setting or rotating it is its own `credential_set` event."""

    form = CredentialForm
    configuration_exclude = ("ciphertext", "key_fingerprint", "last_rotated_at")
    change_form_template = "admin/audit/trail_link_change_form.html"
    list_display = [
        "system",
        "kind",
        "is_admin_level",
        "is_shared",
        "last_rotated_at",
        "rotation_due_at",
        "rotation_state",
    ]
    list_filter = ["kind", "is_admin_level", "is_shared"]
    list_select_related = ["system"]
    readonly_fields = ["last_rotated_at", "key_fingerprint", "updated_at"]
    owned_choice_fields = {"system": "owner"}

    def get_readonly_fields(self, request: HttpRequest, obj: Credential | None = None) -> list[str]:
        # A credential belongs to one system for life: moving it would leave the old system's secret behind.
        return [*self.readonly_fields, "system"] if obj else list(self.readonly_fields)

    @admin.display(description="Rotation")
    def rotation_state(self, obj: Credential) -> str:
        return obj.rotation_state()

    def get_urls(self):
        urls = [
            path(
                "<path:object_id>/rotate/",
                self.admin_site.admin_view(self.rotate_view),
                name=f"connectors_{self.opts.model_name}_rotate",
            ),
        ]
        return urls + super().get_urls()

    def object_tools(self, request: HttpRequest, obj: Credential) -> list[dict[str, str]]:
        tools = [
            {
                "label": "Blast radius",
                "url": reverse("admin:connectors_credential_blast_radius", args=[obj.system.slug]),
                "id": "blast-radius-link",
            }
        ]
        if self.has_change_permission(request, obj):
            tools.insert(0, self._rotate_tool(obj))
        return tools

    def _rotate_tool(self, obj: Credential | AgentCredential) -> dict[str, str]:
        return {
            "label": "Rotate credential…",
            "url": reverse(f"admin:connectors_{self.opts.model_name}_rotate", args=[obj.pk]),
            "id": "rotate-link",
        }

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        extra: dict = {}
        obj = self.get_object(request, unquote(object_id))
        if obj is not None:
            extra["object_tools"] = self.object_tools(request, obj)
            if request.user.has_perm("audit.view_auditevent"):
                extra["audit_trail_url"] = audit_trail_url(system__id__exact=obj.system_id)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def rotate_view(self, request: HttpRequest, object_id: str) -> TemplateResponse | HttpResponseRedirect:
        """A password field, the same service as `rotate_credential`, and the health result as a message."""
        credential = self.get_object(request, unquote(object_id))
        if credential is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, credential):
            raise PermissionDenied
        form = RotateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                rotation = credential_rotate(
                    system=credential.system,
                    new_secret=form.cleaned_data["secret"],
                    actor=admin_user(request),
                    channel=Channel.ADMIN,
                    agent=credential.holder,
                    reason=form.cleaned_data.get("reason", ""),
                )
            except ValidationError as exc:
                form.add_error("secret", exc)
            else:
                self._report(request, rotation)
                return HttpResponseRedirect(
                    reverse(f"admin:connectors_{self.opts.model_name}_change", args=[credential.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Rotate the {credential}",
            "credential": credential,
            "form": form,
        }
        return TemplateResponse(request, "admin/connectors/credential/rotate.html", context)

    def _report(self, request: HttpRequest, rotation: Rotation) -> None:
        system = rotation.credential.system
        agent = rotation.credential.holder
        what = f"credential of {system}" if agent is None else f"credential of {agent.slug} at {system}"
        if rotation.health.ok:
            self.message_user(request, f"Rotated the {what}; the health check with it passed.")
        elif rotation.stored:
            self.message_user(
                request,
                f"Rotated the {what}, but the health check with the new secret FAILED: "
                f"{rotation.health.reason}. The previous secret fails too, so the new one is kept; the owner and "
                "on-call were told.",
                level=messages.ERROR,
            )
        else:
            self.message_user(
                request,
                f"Not rotated: the health check of {system} with the new secret FAILED: {rotation.health.reason}. "
                "The system still accepts the current secret, so nothing was changed; the owner was told.",
                level=messages.ERROR,
            )

    def save_model(self, request: HttpRequest, obj: Credential, form: CredentialForm, change: bool) -> None:
        secret = form.cleaned_data.get("secret")
        if secret and change:
            # The other fields first (the kind may change with the secret), then the rotation with its check.
            super().save_model(request, obj, form, change)
            try:
                rotation = credential_rotate(
                    system=obj.system,
                    new_secret=secret,
                    actor=admin_user(request),
                    channel=Channel.ADMIN,
                    agent=obj.holder,
                    reason=form.cleaned_data.get(REASON, ""),
                )
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), level=messages.ERROR)
            else:
                self._report(request, rotation)
                obj.ciphertext = rotation.credential.ciphertext
        elif secret:
            # The form's own fields: the admin's generated subclass also lists `secret` and the read-only fields.
            fields = self.form.Meta.fields
            attributes = {name: form.cleaned_data[name] for name in fields if name not in ("system", "agent")}
            saved = credential_set(
                system=obj.system,  # read-only once created (get_readonly_fields)
                secret=secret,
                actor=admin_user(request),
                channel=Channel.ADMIN,
                agent=obj.holder,
                reason=form.cleaned_data.get(REASON, ""),
                **attributes,
            )
            obj.pk, obj.ciphertext = saved.pk, saved.ciphertext
        else:
            super().save_model(request, obj, form, change)


class AgentCredentialForm(CredentialForm):
    class Meta:
        model = AgentCredential
        fields = ["system", "agent", "kind", "header_name", "username", "is_admin_level", "rotation_interval"]


@admin.register(AgentCredential)
class AgentCredentialAdmin(CredentialAdmin):
    """An agent's own account at a system: set, rotated and removed by the system's owner, each audited. Its reads
    and writes there are made with it, so the system's logs name the agent."""

    form = AgentCredentialForm
    list_display = ["system", "agent", "kind", "is_admin_level", "last_rotated_at", "rotation_due_at", "rotation_state"]
    list_filter = ["kind", "is_admin_level"]
    list_select_related = ["system", "agent"]

    def get_readonly_fields(self, request: HttpRequest, obj: Credential | None = None) -> list[str]:
        # Whose account at which system is fixed for life: a new pairing is a new credential.
        return [*self.readonly_fields, "system", "agent"] if obj else list(self.readonly_fields)

    def object_tools(self, request: HttpRequest, obj: Credential) -> list[dict[str, str]]:
        return [self._rotate_tool(obj)] if self.has_change_permission(request, obj) else []

    def delete_model(self, request: HttpRequest, obj: AgentCredential) -> None:
        agent_credential_remove(credential=obj, actor=admin_user(request), channel=Channel.ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for credential in queryset.select_related("system", "agent"):
            agent_credential_remove(credential=credential, actor=admin_user(request), channel=Channel.ADMIN)


# Batch systems' files, quarantined rows and polling state: their admin lives beside the connector.
from connectors.legacy_batch import admin as legacy_batch_admin  # noqa: E402, F401
