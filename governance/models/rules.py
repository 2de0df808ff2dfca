"""Threshold rules: how proposals of an action are decided by impact band, signed off by the business owner."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
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
    ReviewTiming,
)
from governance.models.systems import ActionType, System
from governance.models.validators import currency_validator
from governance.querysets import OwnedQuerySet


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

    def content_digest(self) -> str:
        """SHA-256 of everything a sign-off covers: the rule's terms and each band's."""
        content = {
            "system": self.system_id,
            "action_type": self.action_type_id,
            "currency": self.currency,
            "max_age": self.max_age.total_seconds() if self.max_age else None,
            "owner_may_not_approve": self.owner_may_not_approve,
            # Sorted here rather than by the database, so a prefetched rule costs no extra query.
            "bands": [band.terms() for band in sorted(self.bands.all(), key=lambda band: (band.min_amount, band.pk))],
        }
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


def validate_bands(bands: list[BandSpec]) -> None:
    """Bands must start at 0, follow each other without gap or overlap, and end open-ended.

    Raises one ValidationError listing every problem, in the order of the bands.
    """
    problems: list[str] = []
    if not bands:
        raise ValidationError("A rule needs at least one band.")
    ordered = sorted(bands, key=lambda band: band.min_amount)
    if ordered[0].min_amount != 0:
        problems.append(f"The first band starts at {ordered[0].min_amount}; it must start at 0.")
    for number, (band, following) in enumerate(pairwise(ordered), start=1):
        if band.max_amount is None:
            problems.append(f"Band {number} has no upper bound but another band follows it (they overlap).")
        elif band.max_amount > following.min_amount:
            problems.append(
                f"Bands {number} and {number + 1} overlap: {band.min_amount}–{band.max_amount} and "
                f"{following.min_amount}–{following.max_amount or '∞'}."
            )
        elif band.max_amount < following.min_amount:
            problems.append(
                f"There is a gap between {band.max_amount} and {following.min_amount} (bands {number} and "
                f"{number + 1}): amounts there would match no band."
            )
    if ordered[-1].max_amount is not None:
        problems.append(f"The last band ends at {ordered[-1].max_amount}; leave its upper bound empty.")
    for number, band in enumerate(ordered, start=1):
        if band.max_amount is not None and band.max_amount <= band.min_amount:
            problems.append(f"Band {number}: the upper bound must be above the lower bound.")
        if band.mode in (BandMode.SINGLE, BandMode.DUAL):
            if not band.has_approver:
                problems.append(f"Band {number} ({band.mode}) needs an approver: a named user or a group.")
            if band.sla is None or band.sla <= timedelta(0):
                problems.append(f"Band {number} ({band.mode}) needs an SLA longer than zero.")
        if band.mode == BandMode.DUAL and not band.has_review_group:
            problems.append(f"Band {number} (dual) needs a second-review group.")
    if problems:
        raise ValidationError(problems)


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

    history = HistoricalRecords()
    objects = OwnedQuerySet.as_manager()

    OWNER_PATH = "rule__system__owner"

    class Meta:
        ordering = ["rule", "min_amount"]

    def __str__(self) -> str:
        upper = self.max_amount if self.max_amount is not None else "∞"
        return f"{self.min_amount}–{upper}: {self.get_mode_display()}"

    def spec(self) -> BandSpec:
        return BandSpec(
            min_amount=self.min_amount,
            max_amount=self.max_amount,
            mode=self.mode,
            has_approver=bool(self.approver_id or self.approver_group_id),
            has_review_group=bool(self.review_group_id),
            sla=self.sla,
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
        }

    def clean(self) -> None:
        if self.sla is not None and self.sla <= timedelta(0):
            raise ValidationError({"sla": "The SLA must be longer than zero."})
        if self.approver_id and self.approver_group_id:
            raise ValidationError({"approver_group": "Name either one approver or an approver group, not both."})
