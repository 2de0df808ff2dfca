"""Admin for threshold rules and their bands: one number per threshold, durations in words, the fields each band's
mode uses, and the business owner's sign-off on a page that shows what is signed."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import cached_property
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime

from audit.choices import Channel, Verb
from audit.models import AuditEvent
from core.admin import HistoryAdmin, OwnedAdminMixin, admin_user
from core.durations import DurationWordsField
from core.history import HistoryLine, amount, person
from governance.admin.base import ConfiguredAdminMixin
from governance.choices import BandMode
from governance.history import SIGNED_OFF, threshold_rule_history
from governance.models import ThresholdBand, ThresholdRule, ladder_lower_bounds, validate_bands
from governance.rule_words import band_words, sign_off_words, signed_terms
from governance.services import threshold_rule_sign_off, threshold_rule_sign_off_refusal, who_may_sign_off

DURATIONS_IN_WORDS: Mapping[type[models.Field[Any, Any]], Mapping[str, Any]] = {
    models.DurationField: {"form_class": DurationWordsField}
}
# What each mode uses beyond the amounts; the page hides the rest (fieldset classes) and the form clears it.
DECIDES = ("approver", "approver_group", "sla")
REVIEWS = ("review_group", "review_timing", "review_within")


class ConditionField(forms.JSONField):
    """A band's condition, empty rather than "{}" when it has none (and an empty box is no condition, not null)."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value in ({}, None, "{}") else super().prepare_value(value)

    def to_python(self, value: Any) -> Any:
        return {} if value in self.empty_values else super().to_python(value)


class BandForm(forms.ModelForm):
    """One band. Its lower bound is not typed: it is where the band before it ends (`ladder_lower_bounds`); only a
    band with a condition may start elsewhere ("Starting at"). Fields its mode does not use are cleared."""

    min_amount = forms.DecimalField(
        required=False,
        max_digits=14,
        decimal_places=2,
        min_value=Decimal(0),
        label="Starting at",
        help_text="Only for a band with a condition, to leave a gap below it. Empty: where the band before it ends.",
        widget=forms.NumberInput(attrs={"step": "0.01", "style": "width: 8em"}),
    )

    class Meta:
        model = ThresholdBand
        fields = ["max_amount", "mode", *DECIDES, *REVIEWS, "condition", "min_amount"]
        field_classes = {"condition": ConditionField}
        labels = {"max_amount": "Up to", "sla": "Time to decide", "review_within": "Review within"}
        help_texts = {
            "max_amount": "Not included: the next band starts here. Empty on the last band: no upper bound.",
            "sla": "e.g. “4 hours”.",
            "review_within": "e.g. “24 hours”.",
            "condition": 'Only for payloads with these values, e.g. {"status": "closed"}; empty: any payload.',
        }
        widgets = {
            "max_amount": forms.NumberInput(attrs={"step": "0.01", "style": "width: 9em"}),
            "condition": forms.TextInput(attrs={"size": "30"}),
        }

    stored_lower: Decimal | None = None
    lower_moved = False  # set by the formset: the band's lower bound moves with the band before it

    @cached_property
    def conditional(self) -> bool:
        """Whether the band has a condition, as posted (before cleaning: Django asks `has_changed` first)."""
        if not self.is_bound:
            return bool(self.instance.condition)
        raw = (self.data.get(self.add_prefix("condition")) or "").strip()
        return raw not in ("", "{}", "null")

    def has_changed(self) -> bool:
        # "Starting at" of a band without a condition is not a change (the lower bound is derived); a derived lower
        # bound that moved is one, although nothing of this band was typed.
        changed = set(self.changed_data) - (set() if self.conditional else {"min_amount"})
        return bool(changed) or self.lower_moved

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]  # Django's, missing from the stubs
        if self.instance.min_amount is None:  # until the formset derives it; a page shown again with errors reads it
            self.instance.min_amount = self.stored_lower

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        mode = cleaned.get("mode")
        if mode == BandMode.AUTO:
            cleaned |= dict.fromkeys(DECIDES)
        if mode in (BandMode.AUTO, BandMode.SINGLE):
            # The review's group is cleared; its timing and time keep what they were (they have defaults, are hashed
            # into the sign-off, and do nothing without a group): hiding them must not void a sign-off.
            cleaned["review_group"] = None
            # (`clean` runs before the instance takes the form's values: it holds the stored ones, or the defaults.)
            cleaned |= {name: getattr(self.instance, name) for name in ("review_timing", "review_within")}
        return cleaned


class BandFormSet(BaseInlineFormSet):
    """Validates the bands together: from 0, no gaps, no overlaps, open-ended, approvers and SLAs where needed.

    Each band's lower bound is derived here from the upper bound of the band before it (`ladder_lower_bounds`), so
    moving a threshold is one number; a lower bound posted for a band without a condition must agree with it.
    """

    def _construct_form(self, i: int, **kwargs: Any) -> BandForm:
        form = super()._construct_form(i, **kwargs)  # type: ignore[misc]  # Django's, missing from the stubs
        form.stored_lower = form.instance.min_amount if form.instance.pk else None
        shown = self._shown_lowers.get(form.instance.pk) if form.instance.pk else None
        form.initial["min_amount"] = shown
        return form

    @cached_property
    def _shown_lowers(self) -> dict[int, Decimal | None]:
        """The "Starting at" each stored band shows: only a conditional band's that does not follow from its ladder."""
        bands = list(self.get_queryset()) if self.instance.pk else []
        derived = ladder_lower_bounds([(band.condition, band.max_amount, None) for band in bands])
        return {
            band.pk: band.min_amount if band.condition and band.min_amount != lower else None
            for band, lower in zip(bands, derived, strict=True)
        }

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        kept = [form for form in self.forms if form.cleaned_data and not form.cleaned_data.get("DELETE")]
        lowers = ladder_lower_bounds(
            [
                (
                    form.cleaned_data.get("condition") or {},
                    form.cleaned_data.get("max_amount"),
                    form.cleaned_data.get("min_amount") if form.cleaned_data.get("condition") else None,
                )
                for form in kept
            ]
        )
        problems = []
        for number, (form, lower) in enumerate(zip(kept, lowers, strict=True), start=1):
            posted = form.cleaned_data.get("min_amount")
            # An echo of the stored bound is not a request (a script posting the old form's two bounds): it moves.
            if not form.cleaned_data.get("condition") and posted not in (None, lower, form.stored_lower):
                problems.append(
                    f"Band {number} starts where the band before it ends, at {amount(lower)}, not at {amount(posted)}: "
                    "to move that threshold, change the “Up to” of the band before it."
                )
            form.instance.min_amount = form.cleaned_data["min_amount"] = lower
            form.lower_moved = form.stored_lower is not None and form.stored_lower != lower
        if problems:
            raise ValidationError(problems)
        validate_bands([form.instance.spec() for form in kept], action=self.instance.action_type)


class ThresholdBandInline(admin.StackedInline):
    model = ThresholdBand
    form = BandForm
    formset = BandFormSet
    extra = 0
    min_num = 1
    verbose_name = "band"
    verbose_name_plural = "bands"
    formfield_overrides = DURATIONS_IN_WORDS
    readonly_fields = ["lower_bound"]
    fieldsets = [
        (None, {"fields": [("lower_bound", "max_amount", "mode")]}),
        ("Who approves", {"fields": [DECIDES], "classes": ["band-decides"]}),
        ("Second review", {"fields": [REVIEWS], "classes": ["band-review"]}),
        ("Only for some payloads", {"fields": [("condition", "min_amount")], "classes": ["band-condition"]}),
    ]

    @admin.display(description="From")
    def lower_bound(self, band: ThresholdBand) -> str:
        return amount(band.min_amount) if band.pk else "where the band before it ends"


class ThresholdRuleForm(forms.ModelForm):
    class Meta:
        model = ThresholdRule
        # Not the sign-off's fields: it is made on its own page (sign_off_view), never typed.
        fields = [
            "system",
            "action_type",
            "name",
            "currency",
            "max_age",
            "owner_may_not_approve",
            "cumulative_scope",
            "cumulative_window",
            "auto_executes_irreversible",
        ]
        help_texts = {
            "max_age": "Pending proposals expire after this long (never auto-approved), e.g. “3 days”.",
            "cumulative_window": "How far back earlier proposals count, e.g. “24 hours” or “7 days”.",
        }


@admin.register(ThresholdRule)
class ThresholdRuleAdmin(ConfiguredAdminMixin, OwnedAdminMixin, HistoryAdmin):
    configuration_children = ("bands",)  # the bands inline: added, changed and deleted bands in the rule's event
    configuration_reason_required = True
    form = ThresholdRuleForm
    change_form_template = "admin/governance/thresholdrule/change_form.html"
    formfield_overrides = DURATIONS_IN_WORDS
    list_display = ["name", "system", "action_type", "currency", "band_summary", "sign_off"]
    list_filter = ["system"]
    search_fields = ["name", "system__slug", "action_type__name"]
    list_select_related = ["system", "action_type", "signed_off_by"]
    readonly_fields = ["edited_by", "what_is_signed"]
    inlines = [ThresholdBandInline]
    owned_choice_fields = {"system": "owner", "action_type": "system__owner"}

    def get_queryset(self, request: HttpRequest) -> QuerySet[ThresholdRule]:
        return super().get_queryset(request).prefetch_related("bands")  # the list's bands and sign-off digests

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/sign-off/", view(self.sign_off_view), name="governance_thresholdrule_sign_off"),
            *super().get_urls(),
        ]

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

    def response_add(self, request: HttpRequest, obj: ThresholdRule, post_url_continue: str | None = None) -> Any:
        response = super().response_add(request, obj, post_url_continue)
        self._warn_until_signed_off(request, obj)
        return response

    def response_change(self, request: HttpRequest, obj: ThresholdRule) -> Any:
        response = super().response_change(request, obj)
        self._warn_until_signed_off(request, obj)
        return response

    def _warn_until_signed_off(self, request: HttpRequest, obj: ThresholdRule) -> None:
        """After a save that leaves the rule out of force (an edit voids the sign-off): what that means, and who can
        put it back, since the editor cannot (four eyes)."""
        rule = ThresholdRule.objects.select_related("system__owner").prefetch_related("bands").get(pk=obj.pk)
        if rule.is_signed_off:
            return
        editor = admin_user(request)
        self.message_user(
            request,
            f"“{rule.name}” is not in force: every proposal under it now waits for a person until someone other than "
            f"you signs it off — {who_may_sign_off(rule, editor=editor)}. They sign it off with the Sign off button "
            "on this page.",
            messages.WARNING,
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        rule = self.get_object(request, object_id)
        extra: dict[str, Any] = {}
        if rule is not None:
            user = admin_user(request)
            refusal = None if rule.is_signed_off else threshold_rule_sign_off_refusal(user, rule)
            extra["sign_off"] = {
                "words": sign_off_words(rule),
                "in_force": rule.is_signed_off,
                "url": reverse("admin:governance_thresholdrule_sign_off", args=[rule.pk]),
                "refusal": refusal,
                "who": who_may_sign_off(rule, editor=rule.edited_by),
            }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def history_lines(self, request: HttpRequest, object_id: Any, records: Any) -> list[HistoryLine]:
        return threshold_rule_history(object_id)  # the bands' changes too, each with the sign-off it left in force

    @admin.display(description="Bands")
    def band_summary(self, rule: ThresholdRule) -> str:
        return format_html_join(", ", "{}", ((str(band),) for band in rule.bands.all()))

    @admin.display(description="Sign-off")
    def sign_off(self, rule: ThresholdRule) -> str:
        words = sign_off_words(rule, short=True)
        return format_html('<span class="{}">{}</span>', "" if rule.is_signed_off else "sign-off-void", words)

    @admin.display(description="What a sign-off puts in force")
    def what_is_signed(self, rule: ThresholdRule) -> str:
        """The terms beyond the bands' amounts, in words, so the owner sees what they sign."""
        items = signed_terms(rule)
        return format_html('<ul id="signed-terms">{}</ul>', format_html_join("", "<li>{}</li>", ((i,) for i in items)))

    def sign_off_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The business owner's sign-off: the bands and the other terms in words, what changed since the last
        sign-off and why, and a button that signs exactly what the page shows (the service refuses anything else)."""
        rules = self.get_queryset(request).select_related("system__owner", "action_type", "edited_by")
        rule = get_object_or_404(
            rules.prefetch_related("bands__approver", "bands__approver_group", "bands__review_group"), pk=object_id
        )
        if not self.has_view_permission(request, rule):
            raise PermissionDenied
        page = reverse("admin:governance_thresholdrule_sign_off", args=[rule.pk])
        user = admin_user(request)
        if request.method == "POST":
            try:
                threshold_rule_sign_off(
                    rule=rule,
                    user=user,
                    channel=Channel.ADMIN,
                    reason=request.POST.get("reason", ""),
                    seen_digest=request.POST.get("digest", ""),
                )
            except (PermissionDenied, ValidationError) as exc:
                self.message_user(request, " ".join(getattr(exc, "messages", None) or [str(exc)]), messages.ERROR)
                return HttpResponseRedirect(page)
            self.message_user(
                request, f"You signed off “{rule.name}”: its bands decide proposals from now on.", messages.SUCCESS
            )
            return HttpResponseRedirect(reverse("admin:governance_thresholdrule_change", args=[rule.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Sign off “{rule.name}”",
            "rule": rule,
            "state": sign_off_words(rule),
            "in_force": rule.is_signed_off,
            "bands": [band_words(band, rule.currency) for band in rule.bands.all()],
            "terms": signed_terms(rule),
            "changes": _changes_since_sign_off(rule),
            "last_change": _last_change(rule),
            "refusal": threshold_rule_sign_off_refusal(user, rule),
            "digest": rule.content_digest(),
            "signer": person(user),
        }
        return TemplateResponse(request, "admin/governance/thresholdrule/sign_off.html", context)


CHANGES_SHOWN = 12  # lines of "what changed since the last sign-off"; the history page has the rest


def _changes_since_sign_off(rule: ThresholdRule) -> list[HistoryLine]:
    """The history lines that changed a term after the last sign-off, newest first (every one for a rule never
    signed off)."""
    lines = []
    for line in threshold_rule_history(rule.pk):
        if line.sign_off.startswith(SIGNED_OFF.format(signer="")):
            break
        if line.changes:
            lines.append(line)
    return lines[:CHANGES_SHOWN]


def _last_change(rule: ThresholdRule) -> str:
    """Who last changed the rule since its last sign-off, when, and the reason they gave (from the audit trail)."""
    events = AuditEvent.objects.filter(
        verb=Verb.CONFIGURED, system=rule.system, resource="thresholdrule", input__object_id=rule.pk
    )
    if rule.signed_off_at:
        events = events.filter(occurred_at__gt=rule.signed_off_at)
    event = events.select_related("person").order_by("-occurred_at", "-id").first()
    if event is None:
        return ""
    text = f"Last changed by {person(event.person) or event.actor} on {localtime(event.occurred_at):%Y-%m-%d %H:%M}."
    reason = str((event.input or {}).get("reason") or "").strip()
    return text + (f" Their reason: “{reason}”" if reason else " They gave no reason.")
