"""Admin for outbound webhooks: subscriptions (the secret shown once, never readable again) and deliveries (status,
attempts, last error; parked ones replayed). Every change goes through webhooks.services, audited there."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from audit.choices import Channel
from core.admin import admin_user
from webhooks.addresses import url_refusal
from webhooks.choices import DeliveryStatus
from webhooks.events import ALL, GROUPS, TYPES, pattern_errors
from webhooks.models import Delivery, Subscription
from webhooks.services import deliveries_replay, subscription_rotate_secret, subscription_save
from webhooks.signing import secret_error

EVENT_CHOICES = [
    (ALL, "every event"),
    ("Groups", [(group, group) for group in GROUPS]),
    ("Event types", [(name, name) for name in TYPES]),
]
_SECRET_SHOWN = "_webhook_secret_shown_once"


class SubscriptionForm(forms.ModelForm):
    url = forms.URLField(
        max_length=500,
        assume_scheme="https",
        help_text="Where deliveries are POSTed: a public host, or one GATEHOUSE_CONNECTOR_HOSTS lists.",
    )
    event_types = forms.MultipleChoiceField(
        choices=EVENT_CHOICES,
        widget=forms.SelectMultiple(attrs={"size": 14}),
        help_text='A group ("proposal.*") takes its types added later too.',
    )
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty: Gatehouse makes one and shows it once. Or enter the receiver's own (whsec_…, "
        "24–64 bytes in base64): kept encrypted, never shown again.",
    )
    reason = forms.CharField(
        required=False, max_length=300, label="Reason for this change", help_text="Kept in the audit trail."
    )

    class Meta:
        model = Subscription
        fields = ["url", "description", "event_types", "active"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        refusal = url_refusal(url)
        if refusal:
            raise ValidationError(refusal)
        return url

    def clean_event_types(self) -> list[str]:
        chosen = list(self.cleaned_data["event_types"])
        problems = pattern_errors(chosen)
        if problems:
            raise ValidationError(problems)
        return chosen

    def clean_secret(self) -> str:
        secret = self.cleaned_data.get("secret") or ""
        problem = secret_error(secret) if secret else None
        if problem:
            raise ValidationError(problem)
        return secret


class SubscriptionChangeForm(SubscriptionForm):
    secret = None  # type: ignore[assignment]  # rotated with its own action, never set by editing


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    form = SubscriptionForm
    list_display = ["id", "url", "events", "active", "delivered", "waiting", "parked", "secret_rotated_at"]
    list_filter = ["active"]
    search_fields = ["url", "description"]
    readonly_fields = ["key_fingerprint", "secret_rotated_at", "previous_until", "created_by", "created_at"]
    actions = ["rotate_secret"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Subscription]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_delivered=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.DELIVERED)),
                n_waiting=Count(
                    "deliveries",
                    filter=Q(deliveries__status__in=[DeliveryStatus.PENDING, DeliveryStatus.RETRYING]),
                ),
                n_parked=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.PARKED)),
            )
        )

    @admin.display(description="Events")
    def events(self, obj: Subscription) -> str:
        return ", ".join(obj.event_types or [])

    @admin.display(description="Delivered", ordering="n_delivered")
    def delivered(self, obj: Subscription) -> int:
        return getattr(obj, "n_delivered", 0)

    @admin.display(description="Waiting", ordering="n_waiting")
    def waiting(self, obj: Subscription) -> int:
        return getattr(obj, "n_waiting", 0)

    @admin.display(description="Parked", ordering="n_parked")
    def parked(self, obj: Subscription) -> str:
        count = getattr(obj, "n_parked", 0)
        if not count:
            return "0"
        url = reverse("admin:webhooks_delivery_changelist") + f"?status__exact=parked&subscription__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, count)

    def get_form(self, request: HttpRequest, obj: Subscription | None = None, change: bool = False, **kwargs: Any):
        kwargs["form"] = SubscriptionChangeForm if obj is not None else SubscriptionForm
        return super().get_form(request, obj, change, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Subscription | None = None) -> bool:
        return False  # switched off, never deleted: its deliveries are the record of what was sent where

    def save_model(self, request: HttpRequest, obj: Subscription, form: Any, change: bool) -> None:
        made = subscription_save(
            subscription=obj,
            actor=admin_user(request),
            channel=Channel.ADMIN,
            reason=form.cleaned_data.get("reason", ""),
            secret=form.cleaned_data.get("secret", "") if not change else "",
        )
        if made:
            setattr(request, _SECRET_SHOWN, [(obj, made, None)])

    def response_add(
        self, request: HttpRequest, obj: Subscription, post_url_continue: str | None = None
    ) -> HttpResponse:
        shown = getattr(request, _SECRET_SHOWN, None)
        if shown:
            # Rendered straight into the response: a message would put the secret in a cookie or the session.
            return self._show_secrets(request, shown)
        return super().response_add(request, obj, post_url_continue)

    def _show_secrets(self, request: HttpRequest, shown: list) -> TemplateResponse:
        context = {**self.admin_site.each_context(request), "title": "Webhook signing secret", "shown": shown}
        return TemplateResponse(request, "admin/webhooks/subscription/secrets_shown_once.html", context)

    @admin.action(description="Rotate the signing secret (shown once)", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> TemplateResponse | None:
        user = admin_user(request)
        shown = []
        for subscription in queryset:
            try:
                rotation = subscription_rotate_secret(
                    subscription_id=subscription.pk, actor=user, channel=Channel.ADMIN
                )
            except PermissionDenied as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return None
            shown.append((rotation.subscription, rotation.secret, rotation.previous_until))
        return self._show_secrets(request, shown) if shown else None


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "event_type",
        "subscription",
        "status",
        "attempts",
        "created_at",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "replays",
    ]
    list_filter = ["status", "event_type", "subscription"]
    list_select_related = ["subscription"]
    search_fields = ["event_type", "subscription__url"]
    actions = ["replay"]
    show_full_result_count = False  # a big table: no count(*) on every page

    def get_readonly_fields(self, request: HttpRequest, obj: Delivery | None = None) -> list[str]:
        return [field.name for field in Delivery._meta.fields] + ["audit_event"]

    @admin.display(description="Audit event")
    def audit_event(self, obj: Delivery) -> str:
        return format_html(
            '<a href="{}">#{}</a>', reverse("admin:audit_auditevent_change", args=[obj.event_id]), obj.event_id
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    @admin.action(description="Replay parked deliveries", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        try:
            result = deliveries_replay(
                delivery_ids=list(queryset.values_list("pk", flat=True)),
                actor=admin_user(request),
                channel=Channel.ADMIN,
            )
        except PermissionDenied as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Replayed {len(result.replayed)} parked delivery(ies).")
        if result.skipped:
            self.message_user(
                request, f"{result.skipped} left alone: only parked deliveries are replayed.", messages.WARNING
            )
