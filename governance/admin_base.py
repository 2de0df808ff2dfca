"""Admin building blocks shared by every app: history with a change reason, and object-level restriction."""

from __future__ import annotations

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest
from simple_history.admin import SimpleHistoryAdmin


class HistoryAdmin(SimpleHistoryAdmin):
    """Every edit through the admin leaves a history row naming the user (middleware) and `origin=admin`."""

    def save_model(self, request: HttpRequest, obj: models.Model, form, change: bool) -> None:
        obj._change_reason = "origin=admin"  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        for inline_form in formset.forms:
            inline_form.instance._change_reason = "origin=admin"
        super().save_formset(request, form, formset, change)

    def history_form_view(self, request: HttpRequest, object_id: str, version_id: str, extra_context=None):
        # simple-history only hides the Revert button when reverting is disabled: a POSTed form is still saved, with
        # nothing but view permission checked and without the inlines. Refuse the POST itself.
        if request.method == "POST":
            obj = self.get_object(request, unquote(object_id))
            if self.revert_disabled(request, obj) or not self.has_change_permission(request, obj):
                raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)


class OwnedAdminMixin:
    """Limits changes to rows the user may edit (`editable_by`): a business owner edits only their systems' terms.

    Hiding is not enough: a crafted POST for another owner's row is refused by the permission checks, and system
    choices in forms are limited to owned systems, so a new row cannot be attached to someone else's system.
    """

    # Foreign keys whose choices are limited to what the user may edit, with the queryset path to the owner.
    owned_choice_fields: dict[str, str] = {}

    def _editable(self, request: HttpRequest, obj: models.Model | None) -> bool:
        if obj is None:
            return True
        return self.model.objects.editable_by(request.user).filter(pk=obj.pk).exists()

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).visible_to(request.user)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._editable(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._editable(request, obj)  # type: ignore[misc]

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        path = self.owned_choice_fields.get(db_field.name)
        if path is not None and not request.user.is_superuser:
            kwargs["queryset"] = db_field.related_model.objects.filter(**{path: request.user})
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]


class ReadOnlyAdminMixin:
    """For records nobody edits in the admin (audit events, tokens): view only, for everyone."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
