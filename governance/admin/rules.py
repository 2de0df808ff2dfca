"""Admin for threshold rules and their bands, with the readable history of what was signed off."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html_join

from audit.choices import Channel
from core.admin import HistoryAdmin, OwnedAdminMixin, admin_user
from core.history import HistoryLine
from governance.admin.base import ConfiguredAdminMixin
from governance.history import threshold_rule_history
from governance.models import (
    ThresholdBand,
    ThresholdRule,
    validate_bands,
)
from governance.services import threshold_rule_sign_off


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
class ThresholdRuleAdmin(ConfiguredAdminMixin, OwnedAdminMixin, HistoryAdmin):
    configuration_children = ("bands",)  # the bands inline: added, changed and deleted bands in the rule's event
    configuration_reason_required = True
    list_display = ["name", "system", "action_type", "currency", "band_summary", "signed_off"]
    list_filter = ["system"]
    search_fields = ["name", "system__slug", "action_type__name"]
    list_select_related = ["system", "action_type", "signed_off_by"]
    readonly_fields = ["edited_by", "signed_off_by", "signed_off_at", "sign_off_state"]
    inlines = [ThresholdBandInline]
    actions = ["sign_off"]
    owned_choice_fields = {"system": "owner", "action_type": "system__owner"}

    def save_model(self, request: HttpRequest, obj: ThresholdRule, form: Any, change: bool) -> None:
        obj.edited_by = admin_user(request)  # four eyes: whoever edits it is not who signs it off
        super().save_model(request, obj, form, change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)
        if formset.has_changed():  # a band changed without the rule's own fields: the rule was still edited
            rule = form.instance
            if rule.edited_by_id != request.user.pk:
                rule.edited_by = admin_user(request)
                rule._change_reason = "origin=admin"
                rule.save(update_fields=["edited_by"])

    def history_lines(self, request: HttpRequest, object_id: Any, records: Any) -> list[HistoryLine]:
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
                threshold_rule_sign_off(rule=rule, user=admin_user(request), channel=Channel.ADMIN)
                done += 1
            except (PermissionDenied, ValidationError) as exc:
                refused.append(f"{rule.name}: {' '.join(getattr(exc, 'messages', [str(exc)]))}")
        if done:
            self.message_user(request, f"Signed off {done} rule(s).")
        for reason in refused:
            self.message_user(request, reason, messages.ERROR)
