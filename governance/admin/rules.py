"""Admin for threshold rules and their bands, with the readable history of what was signed off."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from audit.choices import Channel
from core.admin import HistoryAdmin, OwnedAdminMixin, admin_user
from core.history import HistoryLine, window_words
from governance.admin.base import ConfiguredAdminMixin
from governance.choices import CumulativeScope
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
        validate_bands(specs, action=self.instance.action_type)


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
        "condition",
    ]


@admin.register(ThresholdRule)
class ThresholdRuleAdmin(ConfiguredAdminMixin, OwnedAdminMixin, HistoryAdmin):
    configuration_children = ("bands",)  # the bands inline: added, changed and deleted bands in the rule's event
    configuration_reason_required = True
    list_display = ["name", "system", "action_type", "currency", "band_summary", "signed_off"]
    list_filter = ["system"]
    search_fields = ["name", "system__slug", "action_type__name"]
    list_select_related = ["system", "action_type", "signed_off_by"]
    readonly_fields = ["edited_by", "signed_off_by", "signed_off_at", "what_is_signed", "sign_off_state"]
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

    @admin.display(description="What a sign-off puts in force")
    def what_is_signed(self, rule: ThresholdRule) -> str:
        """The terms beyond the bands' amounts, in words, so the owner sees what they sign."""
        window = window_words(rule.cumulative_window)
        if rule.cumulative_scope == CumulativeScope.RECORD:
            counting = f"the agent's standing proposals on the same record in the last {window} count"
        elif rule.cumulative_scope == CumulativeScope.SYSTEM:
            counting = f"the agent's standing proposals on any record of the system in the last {window} count"
        else:
            counting = "each proposal is judged alone"
        action = rule.action_type if rule.pk else None
        if action is not None and action.reversible:
            irreversible = f"{action.name} can be reversed"
        elif rule.auto_executes_irreversible:
            irreversible = "an auto band EXECUTES writes that cannot be reversed without a person"
        else:
            irreversible = "a write that cannot be reversed always waits for a person, whatever its band"
        conditions = [str(band) for band in rule.bands.all() if band.condition] if rule.pk else []
        items = [
            f"Amounts: {counting}.",
            f"Irreversible writes: {irreversible}.",
            "Payload conditions: " + ("; ".join(conditions) if conditions else "none") + ".",
        ]
        return format_html('<ul id="signed-terms">{}</ul>', format_html_join("", "<li>{}</li>", ((i,) for i in items)))

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
