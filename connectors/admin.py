"""Admin for vaulted credentials: a secret can be set or rotated here, never read back."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from audit.choices import Channel
from connectors.models import Credential
from connectors.services import credential_set
from governance.admin_base import HistoryAdmin, OwnedAdminMixin


class CredentialForm(forms.ModelForm):
    secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        help_text="Write-only. Leave empty to keep the current secret; a new value counts as a rotation.",
    )

    class Meta:
        model = Credential
        fields = ["system", "kind", "header_name", "username", "is_admin_level", "is_shared", "rotation_interval"]

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("secret"):
            self.add_error("secret", "A new credential needs its secret.")
        return cleaned


@admin.register(Credential)
class CredentialAdmin(OwnedAdminMixin, HistoryAdmin):
    form = CredentialForm
    list_display = ["system", "kind", "is_admin_level", "is_shared", "last_rotated_at", "rotation_due_at"]
    list_filter = ["kind", "is_admin_level", "is_shared"]
    list_select_related = ["system"]
    readonly_fields = ["last_rotated_at", "key_fingerprint", "updated_at"]
    owned_choice_fields = {"system": "owner"}

    def get_readonly_fields(self, request: HttpRequest, obj: Credential | None = None) -> list[str]:
        # A credential belongs to one system for life: moving it would leave the old system's secret behind.
        return [*self.readonly_fields, "system"] if obj else list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Credential, form: CredentialForm, change: bool) -> None:
        secret = form.cleaned_data.get("secret")
        if secret:
            # CredentialForm's own fields: the admin's generated subclass also lists `secret` and the read-only fields.
            attributes = {name: form.cleaned_data[name] for name in CredentialForm.Meta.fields if name != "system"}
            saved = credential_set(
                system=obj.system,  # read-only once created (get_readonly_fields)
                secret=secret,
                actor=request.user,
                channel=Channel.ADMIN,
                **attributes,
            )
            obj.pk, obj.ciphertext = saved.pk, saved.ciphertext
        else:
            super().save_model(request, obj, form, change)
