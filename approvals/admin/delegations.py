"""Out of office in the admin: a person names their delegate for a period (a superuser, anyone's), and ends it.

Every save goes through approvals/delegation.py, which checks the delegation (no chain, no overlap, not to oneself)
and writes the `configured` audit event; nothing here writes the row itself. Any active staff member may delegate
their own decisions: the service allows only their own (superusers any).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from approvals.delegation import delegation_check, delegation_create, delegation_end, possible_delegates
from approvals.models import Delegation
from audit.choices import Channel
from core.admin import admin_user


class DelegationForm(forms.ModelForm):
    class Meta:
        model = Delegation
        fields = ["who", "delegate", "starts_at", "ends_at", "reason"]

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        people = get_user_model().objects.filter(is_active=True, is_staff=True).order_by("username")
        self.fields["delegate"].queryset = possible_delegates().order_by("username")  # type: ignore[attr-defined]
        mine = people if user is not None and user.is_superuser else people.filter(pk=getattr(user, "pk", 0))
        self.fields["who"].queryset = mine  # type: ignore[attr-defined]
        self.fields["who"].initial = getattr(user, "pk", None)
        self.fields["starts_at"].initial = timezone.now()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if all(data.get(name) for name in ("who", "delegate", "starts_at", "ends_at")):
            delegation_check(
                who=data["who"], delegate=data["delegate"], starts_at=data["starts_at"], ends_at=data["ends_at"]
            )  # the same check the service makes: said on the form instead of as an error page
        return data


@admin.register(Delegation)
class DelegationAdmin(admin.ModelAdmin):
    list_display = ["who", "delegate", "starts_at", "ends_at", "is_active", "reason", "created_by"]
    list_select_related = ["who", "delegate", "created_by"]
    actions = ["end_now"]
    form = DelegationForm

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        user = request.user

        class Bound(form):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **inner: Any) -> None:
                super().__init__(*args, user=user, **inner)

        return Bound

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delegation]:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(Q(who=request.user.pk) | Q(delegate=request.user.pk))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a delegation is ended (the action), not edited: the trail keeps what was in force when

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Active now", boolean=True)
    def is_active(self, delegation: Delegation) -> bool:
        return delegation.active

    def save_model(self, request: HttpRequest, obj: Delegation, form: Any, change: bool) -> None:
        try:
            saved = delegation_create(
                who=obj.who,
                delegate=obj.delegate,
                starts_at=obj.starts_at,
                ends_at=obj.ends_at,
                reason=obj.reason,
                user=admin_user(request),
                channel=Channel.ADMIN,
            )
        except (PermissionDenied, ValidationError) as exc:
            raise PermissionDenied(str(exc)) from exc
        obj.pk = saved.pk

    @admin.action(description="End the selected delegations now")
    def end_now(self, request: HttpRequest, queryset: QuerySet[Delegation]) -> None:
        ended, refused = 0, []
        for delegation in queryset:
            try:
                delegation_end(delegation_id=delegation.pk, user=admin_user(request), channel=Channel.ADMIN)
                ended += 1
            except PermissionDenied as exc:
                refused.append(f"{delegation}: {exc}")
        self.message_user(
            request,
            f"Ended {ended} delegation(s)" + (f"; not ended: {'; '.join(refused)}" if refused else "."),
            messages.WARNING if refused else messages.SUCCESS,
        )
