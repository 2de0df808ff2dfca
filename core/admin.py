"""Admin building blocks shared by every app: history with a change reason, and object-level restriction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.admin.utils import unquote
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse
from simple_history.admin import SimpleHistoryAdmin

from core.history import HistoryLine, record_lines


class HistoryAdmin(SimpleHistoryAdmin):
    """Every edit through the admin leaves a history row naming the user (middleware) and `origin=admin`.

    The history page lists each change readably ("Write mode: Read only → Enabled", who, when) instead of
    simple-history's raw columns; `history_lines` is the hook for folding in related rows (a rule's bands).
    """

    object_history_list_template = "admin/history_lines.html"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        obj._change_reason = "origin=admin"
        super().save_model(request, obj, form, change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        for inline_form in formset.forms:
            inline_form.instance._change_reason = "origin=admin"
        super().save_formset(request, form, formset, change)

    def history_form_view(
        self, request: HttpRequest, object_id: str, version_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # simple-history only hides the Revert button when reverting is disabled: a POSTed form is still saved, with
        # nothing but view permission checked and without the inlines. Refuse the POST itself.
        if request.method == "POST":
            obj = self.get_object(request, unquote(object_id))
            if self.revert_disabled(request, obj) or not self.has_change_permission(request, obj):
                raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)

    def history_hidden_fields(self, request: HttpRequest) -> Sequence[str]:
        """Fields whose changes this person may not read on the history page (e.g. settings others may change)."""
        return ()

    def history_lines(self, request: HttpRequest, object_id: Any, records: Sequence[Any]) -> list[HistoryLine]:
        """The lines for one page of the object's history records (newest first); each names its `version_id`."""
        before = records[-1].prev_record if records else None  # the page's oldest row is diffed too
        return record_lines(records, before=before, exclude=self.history_hidden_fields(request))

    def set_history_delta_changes(
        self, request: HttpRequest, historical_records: Any, foreign_keys_are_objs: bool = True
    ) -> None:
        # simple-history's hook for per-row diffs, called by its history_view with the page's records: each record
        # gets the lines listed under it, newest first (a rule's band changes made under that version, then its own).
        records = list(historical_records)
        if not records:
            return
        object_id = getattr(records[0], self.model._meta.pk.attname)
        lines = self.history_lines(request, object_id, records)
        for record in records:
            record.history_lines = [line for line in lines if line.version_id == record.history_id]


class OwnedAdminMixin:
    """Limits changes to rows the user may edit (`editable_by`): a business owner edits only their systems' terms.

    Hiding is not enough: a crafted POST for another owner's row is refused by the permission checks, and system
    choices in forms are limited to owned systems, so a new row cannot be attached to someone else's system.
    """

    # Foreign keys whose choices are limited to what the user may edit, with the queryset path to the owner.
    owned_choice_fields: dict[str, str] = {}
    model: Any  # the ModelAdmin's, which this mixin is combined with

    def _editable(self, request: HttpRequest, obj: models.Model | None) -> bool:
        if obj is None:
            return True
        return self.model.objects.editable_by(request.user).filter(pk=obj.pk).exists()

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).visible_to(request.user)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._editable(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._editable(request, obj)  # type: ignore[misc]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        path = self.owned_choice_fields.get(db_field.name)
        if path is not None and not request.user.is_superuser:
            kwargs["queryset"] = db_field.related_model.objects.filter(**{path: request.user})
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]


class ReadOnlyAdminMixin:
    """For records nobody edits in the admin (audit events, tokens): view only, for everyone."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def admin_user(request: HttpRequest) -> User:
    """The person an admin page serves: admin views only ever let a signed-in staff user through, so anything else
    is refused rather than passed on to a service as an actor."""
    user = request.user
    if not isinstance(user, User) or not user.is_authenticated:
        raise PermissionDenied
    return user
