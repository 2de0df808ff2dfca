"""Threshold rules: how proposals of an action are decided by impact band, signed off by the business owner."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from simple_history.models import HistoricalRecords

from governance.choices import (
    BandMode,
    CumulativeScope,
    ReviewTiming,
)
from governance.models.systems import ActionType, System
from governance.models.validators import currency_validator
from governance.querysets import OwnedQuerySet

DEFAULT_WINDOW = timedelta(hours=24)


class ThresholdRule(models.Model):
    """How proposals of an action (or, without one, of any action of a system) are decided, by impact band.

    A rule takes effect only while signed off by the system's business owner: the sign-off stores a digest of what
    was signed, so any later edit of the rule or its bands voids it, however the edit was made.
    """

    system = models.ForeignKey(System, on_delete=models.CASCADE, related_name="threshold_rules")
    action_type = models.ForeignKey(
        ActionType,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="threshold_rules",
        help_text="Leave empty for the system's default rule.",
    )
    name = models.CharField(max_length=120)
    currency = models.CharField(max_length=3, default="USD", validators=[currency_validator])
    max_age = models.DurationField(
        default=timedelta(days=3), help_text="Pending proposals expire after this long (never auto-approved)."
    )
    owner_may_not_approve = models.BooleanField(
        default=True, help_text="The agent's owner may not approve the agent's proposals."
    )
    cumulative_scope = models.CharField(
        max_length=10,
        choices=CumulativeScope.choices,
        default=CumulativeScope.NONE,
        blank=True,
        help_text="Choose the band on this proposal's amount plus what the same agent already proposed in the window "
        "(still standing: not rejected, cancelled, expired, failed or reversed), so small steps add up.",
    )
    cumulative_window = models.DurationField(
        default=DEFAULT_WINDOW, help_text="How far back earlier proposals count, e.g. 1 day, 0:00:00 = 24 hours."
    )
    auto_executes_irreversible = models.BooleanField(
        default=False,
        help_text="Let an auto band execute a write that cannot be reversed. Off: a person approves every such write.",
    )
    edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
        help_text="Who last changed the rule or its bands: not the one who signs it off (four eyes).",
    )
    signed_off_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    signed_off_at = models.DateTimeField(null=True, blank=True)
    signed_off_digest = models.CharField(max_length=64, blank=True, editable=False)

    history = HistoricalRecords()
    objects = OwnedQuerySet.as_manager()

    OWNER_PATH = "system__owner"

    class Meta:
        ordering = ["system__slug", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["system", "action_type"],
                condition=models.Q(action_type__isnull=False),
                name="rule_one_per_action",
            ),
            models.UniqueConstraint(
                fields=["system"], condition=models.Q(action_type__isnull=True), name="rule_one_default_per_system"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.max_age is not None and self.max_age <= timedelta(0):
            raise ValidationError({"max_age": "The maximum age must be longer than zero."})
        action = self.action_type
        if action is not None and self.system_id and action.system_id != self.system_id:
            raise ValidationError({"action_type": "The action belongs to another system."})
        if self.cumulative_window is not None and self.cumulative_window <= timedelta(0):
            raise ValidationError({"cumulative_window": "The window must be longer than zero."})

    def content_digest(self) -> str:
        """SHA-256 of everything a sign-off covers: the rule's terms and each band's."""
        content: dict[str, Any] = {
            "system": self.system_id,
            "action_type": self.action_type_id,
            "currency": self.currency,
            "max_age": self.max_age.total_seconds() if self.max_age else None,
            "owner_may_not_approve": self.owner_may_not_approve,
            # Sorted here rather than by the database, so a prefetched rule costs no extra query.
            "bands": [band.terms() for band in sorted(self.bands.all(), key=lambda band: (band.min_amount, band.pk))],
        }
        # Terms added later are in the digest only when they differ from their default: a sign-off made before they
        # existed stays valid for a rule that does not use them, and any use of them voids it.
        added: dict[str, tuple[Any, Any]] = {
            "cumulative_scope": (self.cumulative_scope, CumulativeScope.NONE),
            "cumulative_window": (self.cumulative_window.total_seconds(), DEFAULT_WINDOW.total_seconds()),
            "auto_executes_irreversible": (self.auto_executes_irreversible, False),
        }
        content.update({name: value for name, (value, default) in added.items() if value != default})
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def is_signed_off(self) -> bool:
        return bool(
            self.signed_off_by_id and self.signed_off_digest and self.signed_off_digest == self.content_digest()
        )


@dataclass(frozen=True)
class BandSpec:
    """The terms of one band, as validated together with its neighbours."""

    min_amount: Decimal
    max_amount: Decimal | None
    mode: str
    has_approver: bool
    has_review_group: bool
    sla: timedelta | None
    condition: dict[str, Any] = field(default_factory=dict)


def condition_key(condition: dict[str, Any] | None) -> str:
    """One text per condition, whatever the order of its fields: bands are grouped by it."""
    return json.dumps(condition or {}, sort_keys=True)


def condition_words(condition: dict[str, Any] | None) -> str:
    """`status is "closed"`, for reasons and the sign-off page."""
    return " and ".join(f"{name} is {json.dumps(value)}" for name, value in sorted((condition or {}).items()))


def validate_condition(condition: Any, action: ActionType | None) -> list[str]:
    """A band's condition: {field: value} pairs the payload must all equal; each field in the action's payload
    schema, each value a plain JSON value (and one of the field's `enum` where it has one). Problems, in words."""
    if condition in (None, {}):
        return []
    if not isinstance(condition, dict):
        return ['A condition is a JSON object of payload fields and values, e.g. {"status": "closed"}.']
    if action is None:
        return ["Only a rule for one action can have conditions: its payload schema names the fields."]
    properties = (action.payload_schema or {}).get("properties") or {}
    problems = []
    for name, value in condition.items():
        if name not in properties:
            problems.append(f"{action.name}'s payload has no field {name!r}.")
        elif isinstance(value, (dict, list)):
            problems.append(f"The condition on {name} must be one value, not a list or an object.")
        elif "enum" in properties[name] and value not in properties[name]["enum"]:
            allowed = ", ".join(json.dumps(option) for option in properties[name]["enum"])
            problems.append(f"{name} is never {json.dumps(value)}: it is one of {allowed}.")
    return problems


def validate_bands(bands: list[BandSpec], action: ActionType | None = None) -> None:
    """Bands without a condition must start at 0, follow each other without gap or overlap, and end open-ended;
    bands with the same condition must not overlap (an amount they leave out falls to the bands without one).

    Raises one ValidationError listing every problem, in the order of the bands.
    """
    if not bands:
        raise ValidationError("A rule needs at least one band.")
    groups: dict[str, list[BandSpec]] = {}
    for band in bands:
        groups.setdefault(condition_key(band.condition), []).append(band)
    problems: list[str] = []
    for key, group in groups.items():
        if key != condition_key({}):
            problems += validate_condition(group[0].condition, action)
        problems += _validate_group(group, conditional=key != condition_key({}))
    if condition_key({}) not in groups:
        problems.append("A rule needs bands without a condition, from 0 up: they decide every other payload.")
    if problems:
        raise ValidationError(problems)


def ladder_lower_bounds(
    bands: Sequence[tuple[Mapping[str, Any] | None, Decimal | None, Decimal | None]],
) -> list[Decimal]:
    """The lower bound of each band, given as (condition, upper bound, own lower bound or None), in the order given.

    A band starts where the band before it in its ladder (the bands with the same condition, placed by their upper
    bounds, an open-ended one last) ends; the first at 0. So one number moves a threshold between two bands: the
    lower band's upper bound. Only a band with a condition may keep a lower bound of its own (its ladder may leave
    gaps, which fall to the bands without one); the ladder without a condition may not, and its own lower bounds are
    ignored here (the admin refuses one that differs). Two open-ended bands of one ladder get the same lower bound,
    which `validate_bands` then refuses as an overlap.
    """
    lowers: list[Decimal] = [Decimal(0)] * len(bands)
    ladders: dict[str, list[int]] = {}
    for index, (condition, _, _) in enumerate(bands):
        ladders.setdefault(condition_key(dict(condition or {})), []).append(index)
    for key, members in ladders.items():
        conditional = key != condition_key({})
        members.sort(key=lambda index: (bands[index][1] is None, bands[index][1] or 0))
        previous: tuple[Decimal, Decimal | None] | None = None
        for index in members:
            _, upper, own = bands[index]
            if conditional and own is not None:
                lower = own
            elif previous is None:
                lower = Decimal(0)
            else:
                lower = previous[1] if previous[1] is not None else previous[0]
            lowers[index] = lower
            previous = (lower, upper)
    return lowers


def _validate_group(bands: list[BandSpec], *, conditional: bool) -> list[str]:
    """The problems of one group of bands (the same condition), in the order of the bands."""
    problems: list[str] = []
    ordered = sorted(bands, key=lambda band: band.min_amount)
    where = f" (when {condition_words(ordered[0].condition)})" if conditional else ""
    if not conditional and ordered[0].min_amount != 0:
        problems.append(f"The first band starts at {ordered[0].min_amount}; it must start at 0.")
    for number, (band, following) in enumerate(pairwise(ordered), start=1):
        if band.max_amount is None:
            problems.append(f"Band {number}{where} has no upper bound but another band follows it (they overlap).")
        elif band.max_amount > following.min_amount:
            problems.append(
                f"Bands {number} and {number + 1}{where} overlap: {band.min_amount}–{band.max_amount} and "
                f"{following.min_amount}–{following.max_amount or '∞'}."
            )
        elif band.max_amount < following.min_amount and not conditional:
            problems.append(
                f"There is a gap between {band.max_amount} and {following.min_amount} (bands {number} and "
                f"{number + 1}): amounts there would match no band."
            )
    if ordered[-1].max_amount is not None and not conditional:
        problems.append(f"The last band ends at {ordered[-1].max_amount}; leave its upper bound empty.")
    for number, band in enumerate(ordered, start=1):
        if band.max_amount is not None and band.max_amount <= band.min_amount:
            problems.append(f"Band {number}{where}: the upper bound must be above the lower bound.")
        if band.mode in (BandMode.SINGLE, BandMode.DUAL):
            if not band.has_approver:
                problems.append(f"Band {number}{where} ({band.mode}) needs an approver: a named user or a group.")
            if band.sla is None or band.sla <= timedelta(0):
                problems.append(f"Band {number}{where} ({band.mode}) needs an SLA longer than zero.")
        if band.mode == BandMode.DUAL and not band.has_review_group:
            problems.append(f"Band {number}{where} (dual) needs a second-review group.")
        # Terms a band's mode never uses would be shown and hashed by a sign-off: refused from every door, as the
        # band's own clean() refuses them field by field in a form.
        if band.mode == BandMode.AUTO and (band.has_approver or band.sla is not None):
            problems.append(f"Band {number}{where} (auto) executes without a person: it has no approver and no SLA.")
        if band.mode != BandMode.DUAL and band.has_review_group:
            problems.append(f"Band {number}{where} ({band.mode}): only a dual band has a second review.")
    return problems


class ThresholdBand(models.Model):
    """One impact band of a rule: amounts in [min_amount, max_amount) are decided by `mode`."""

    rule = models.ForeignKey(ThresholdRule, on_delete=models.CASCADE, related_name="bands")
    min_amount = models.DecimalField(max_digits=14, decimal_places=2, validators=[MinValueValidator(Decimal(0))])
    max_amount = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, help_text="Exclusive; empty means no upper bound."
    )
    mode = models.CharField(max_length=10, choices=BandMode.choices)
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approver_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    sla = models.DurationField(null=True, blank=True, help_text="Time to decide, e.g. 4:00:00 for four hours.")
    review_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    review_timing = models.CharField(
        max_length=10,
        choices=ReviewTiming.choices,
        default=ReviewTiming.BEFORE_EXECUTION,  # new bands: execution waits for both; after is a deliberate choice
        blank=True,
        help_text="Before: the write waits for both people. After: it runs on the approval, and the second review "
        "follows within the review time (a flag then plans its reversal).",
    )
    review_within = models.DurationField(default=timedelta(hours=24))
    condition = models.JSONField(
        default=dict,
        blank=True,
        help_text='Only for payloads with these values, e.g. {"status": "closed"}; empty: any payload. A band whose '
        "condition matches wins over one without.",
    )

    history = HistoricalRecords()
    objects = OwnedQuerySet.as_manager()

    OWNER_PATH = "rule__system__owner"

    class Meta:
        ordering = ["rule", "min_amount"]

    def __str__(self) -> str:
        upper = self.max_amount if self.max_amount is not None else "∞"
        when = f" when {condition_words(self.condition)}" if self.condition else ""
        return f"{self.min_amount}–{upper}{when}: {self.get_mode_display()}"

    def matches(self, payload: dict[str, Any] | None) -> bool:
        """Whether the payload has every value the condition names (no condition: every payload)."""
        payload = payload or {}
        return all(name in payload and payload[name] == value for name, value in (self.condition or {}).items())

    def spec(self) -> BandSpec:
        return BandSpec(
            min_amount=self.min_amount,
            max_amount=self.max_amount,
            mode=self.mode,
            has_approver=bool(self.approver_id or self.approver_group_id),
            has_review_group=bool(self.review_group_id),
            sla=self.sla,
            condition=self.condition or {},
        )

    def terms(self) -> dict[str, Any]:
        return {
            "min": str(self.min_amount),
            "max": str(self.max_amount) if self.max_amount is not None else None,
            "mode": self.mode,
            "approver": self.approver_id,
            "approver_group": self.approver_group_id,
            "sla": self.sla.total_seconds() if self.sla else None,
            "review_group": self.review_group_id,
            "review_timing": self.review_timing,
            "review_within": self.review_within.total_seconds() if self.review_within else None,
            # Only when set: the digests of bands signed off before conditions existed stay as they were.
            **({"condition": self.condition} if self.condition else {}),
        }

    def clean(self) -> None:
        if self.sla is not None and self.sla <= timedelta(0):
            raise ValidationError({"sla": "The SLA must be longer than zero."})
        if self.approver_id and self.approver_group_id:
            raise ValidationError({"approver_group": "Name either one approver or an approver group, not both."})
        problems = validate_condition(self.condition, self.rule.action_type if self.rule_id else None)
        if problems:
            raise ValidationError({"condition": problems})
        # Terms a band of this mode never uses are refused, not kept: a sign-off shows and hashes them.
        unused: dict[str, str] = {}
        if self.mode == BandMode.AUTO:
            message = "An auto band executes without a person: it has no approver and no SLA."
            present = {"approver": self.approver_id, "approver_group": self.approver_group_id, "sla": self.sla}
            unused |= {name: message for name, value in present.items() if value}
        if self.mode != BandMode.DUAL and self.review_group_id:
            unused["review_group"] = "Only a dual band has a second review."
        if unused:
            raise ValidationError(unused)
