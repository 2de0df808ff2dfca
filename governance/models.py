"""The inventory: systems, their resources and actions, agents and their tokens, scope grants, threshold rules."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import jsonschema
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords

from governance import connections
from governance.choices import (
    Access,
    AgentStatus,
    BandMode,
    Compensation,
    ConnectorKind,
    Environment,
    ImpactKind,
    IntegrationPattern,
    ReviewTiming,
    SystemCategory,
    WriteMode,
)
from governance.querysets import AgentQuerySet, AgentTokenQuerySet, OwnedQuerySet, ScopeGrantQuerySet

slug_validator = RegexValidator(
    r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$",
    "Use lowercase letters and digits, joined by single hyphens or underscores (for example crm-staging).",
    code="invalid_slug",
)
currency_validator = RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 currency code, such as USD.")


def _validate_string_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValidationError(f"{what} must be a list of names.")
    if len(set(value)) != len(value):
        raise ValidationError(f"{what} lists a name twice.")
    return value


class System(models.Model):
    """A system an agent can reach through Gatehouse, with the people answerable for it and how it may be written."""

    name = models.CharField(max_length=120)
    slug = models.CharField(max_length=60, unique=True, validators=[slug_validator])
    description = models.TextField(blank=True)
    category = models.CharField(max_length=20, choices=SystemCategory.choices)
    environment = models.CharField(max_length=20, choices=Environment.choices, default=Environment.PRODUCTION)
    integration_pattern = models.CharField(max_length=20, choices=IntegrationPattern.choices)
    connector_kind = models.CharField(max_length=20, choices=ConnectorKind.choices)
    connector_config = models.JSONField(default=dict, blank=True, help_text="Connection settings for the connector.")
    record_of = models.CharField(
        max_length=200, blank=True, help_text="The data this system is the system of record for (e.g. accounts)."
    )
    conflict_winner = models.CharField(max_length=200, blank=True, help_text="Who wins when data conflicts.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="owned_systems",
        help_text="The business owner: signs off threshold rules and grants scopes.",
    )
    rollback_contact = models.CharField(max_length=200, blank=True, help_text="Who to call to undo a change.")
    oncall_contact = models.EmailField(blank=True, help_text="Told when proposals escalate or executions fail.")
    write_mode = models.CharField(max_length=20, choices=WriteMode.choices, default=WriteMode.READ_ONLY)
    staging_twin = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="Used for drills."
    )
    drill_record_id = models.CharField(
        max_length=200, blank=True, help_text="Staging systems: a record rollback drills may write to and restore."
    )
    writes_frozen = models.BooleanField(default=False, help_text="Kill switch: refuse writes to this system.")
    frozen_reason = models.CharField(max_length=300, blank=True)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        verbose_name="Calls per minute",
        help_text="Most calls Gatehouse makes to this system a minute (reads, writes and undos together); beyond it "
        "writes wait their turn. Empty: no limit of ours, only the system's own Retry-After.",
    )
    rate_limit_burst = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        verbose_name="Burst",
        help_text="Calls allowed at once after a quiet spell. Empty: one second's worth of the rate.",
    )
    breaker_threshold = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1)],
        verbose_name="Failures before the breaker opens",
        help_text="Consecutive failures (timeouts, refused connections, 5xx) after which Gatehouse stops calling the "
        "system: reads answer 503 and writes wait, until a probe call succeeds.",
    )
    breaker_cooldown = models.DurationField(
        default=timedelta(seconds=30),
        verbose_name="Breaker cooldown",
        help_text="How long an open breaker waits before letting one probe call through (hh:mm:ss).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()
    objects = OwnedQuerySet.as_manager()

    OWNER_PATH = "owner"
    OPERATORS_EDIT = True  # write mode and the kill switch are operators' work

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        if self.writes_frozen and not self.frozen_reason:
            raise ValidationError({"frozen_reason": "Say why writes are frozen."})
        if self.staging_twin_id and self.staging_twin_id == self.pk:
            raise ValidationError({"staging_twin": "A system cannot be its own staging twin."})
        if self.rate_limit_burst and not self.rate_limit_per_minute:
            raise ValidationError({"rate_limit_burst": "A burst needs a rate: set the calls per minute too."})
        if self.breaker_cooldown is not None and not (
            timedelta(seconds=1) <= self.breaker_cooldown <= timedelta(hours=24)
        ):
            raise ValidationError({"breaker_cooldown": "Between one second and 24 hours."})
        if not isinstance(self.connector_config, dict):
            raise ValidationError({"connector_config": "Connector settings must be a JSON object."})
        problems = connections.settings_errors(self.connector_kind, self.connector_config)
        if problems:
            raise ValidationError({"connector_config": problems})


class Resource(models.Model):
    """A kind of record in a system (e.g. CRM accounts) and the fields Gatehouse knows it has."""

    system = models.ForeignKey(System, on_delete=models.CASCADE, related_name="resources")
    name = models.CharField(max_length=60, validators=[slug_validator], help_text="Plural, as in the API path.")
    label = models.CharField(max_length=60, help_text="One record, in plain words (e.g. account).")
    fields = models.JSONField(default=list, help_text="Field names a record of this resource has.")

    history = HistoricalRecords()
    objects = OwnedQuerySet.as_manager()

    OWNER_PATH = "system__owner"

    class Meta:
        ordering = ["system__slug", "name"]
        constraints = [models.UniqueConstraint(fields=["system", "name"], name="resource_unique_name_per_system")]

    def __str__(self) -> str:
        return f"{self.system.slug}/{self.name}"

    def clean(self) -> None:
        try:
            _validate_string_list(self.fields, "Fields")
        except ValidationError as exc:
            raise ValidationError({"fields": exc.messages}) from exc


class ActionType(models.Model):
    """A write an agent may propose on a resource: its payload schema, how its impact is computed, how to undo it."""

    system = models.ForeignKey(System, on_delete=models.CASCADE, related_name="action_types")
    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="action_types")
    name = models.CharField(max_length=60, validators=[slug_validator])
    description = models.CharField(max_length=300, blank=True)
    payload_schema = models.JSONField(
        default=dict, help_text='JSON Schema of the payload; must say "additionalProperties": false.'
    )
    impact_kind = models.CharField(max_length=20, choices=ImpactKind.choices, default=ImpactKind.NONE)
    impact_field = models.CharField(
        max_length=60, blank=True, help_text="Payload field holding the new value or the amount."
    )
    impact_currency = models.CharField(max_length=3, default="USD", validators=[currency_validator])
    preconditions = models.JSONField(
        default=list, blank=True, help_text='Checks against the current record, e.g. ["record_exists"].'
    )
    operation = models.JSONField(default=dict, blank=True, help_text="How the connector performs this action.")
    compensation = models.CharField(max_length=20, choices=Compensation.choices, default=Compensation.NONE)
    not_reversible_note = models.CharField(max_length=300, blank=True)

    history = HistoricalRecords()
    objects = OwnedQuerySet.as_manager()

    OWNER_PATH = "system__owner"

    KNOWN_PRECONDITIONS = frozenset({"record_exists"})

    class Meta:
        ordering = ["system__slug", "name"]
        constraints = [models.UniqueConstraint(fields=["system", "name"], name="action_unique_name_per_system")]

    def __str__(self) -> str:
        return f"{self.system.slug}.{self.name}"

    @property
    def reversible(self) -> bool:
        return self.compensation != Compensation.NONE

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.resource_id and self.system_id and self.resource.system_id != self.system_id:
            errors["resource"] = "The resource belongs to another system."
        schema = self.payload_schema
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            errors["payload_schema"] = f"Not a valid JSON Schema: {exc.message}"
        else:
            if not isinstance(schema, dict) or schema.get("type") != "object":
                errors["payload_schema"] = 'The payload schema must describe an object ("type": "object").'
            elif schema.get("additionalProperties") is not False:
                errors["payload_schema"] = 'Add "additionalProperties": false so unknown fields are rejected.'
        if self.impact_kind != ImpactKind.NONE:
            properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
            if not self.impact_field:
                errors["impact_field"] = "Name the payload field the impact is computed from."
            elif self.impact_field not in properties:
                errors["impact_field"] = f"The payload schema has no field {self.impact_field!r}."
        if self.compensation == Compensation.NONE and not self.not_reversible_note:
            errors["not_reversible_note"] = "Say why this action cannot be reversed (shown in reversal plans)."
        try:
            unknown = set(_validate_string_list(self.preconditions, "Preconditions")) - self.KNOWN_PRECONDITIONS
            if unknown:
                errors["preconditions"] = f"Unknown precondition(s): {', '.join(sorted(unknown))}."
        except ValidationError as exc:
            errors["preconditions"] = exc.messages[0]
        if self.system_id:
            errors.update(connections.operation_errors(self.system.connector_kind, self.operation, self.compensation))
        if errors:
            raise ValidationError(errors)


class Agent(models.Model):
    """A service account for an AI agent; never a person's account. Write access is none until granted."""

    slug = models.CharField(max_length=60, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_agents")
    status = models.CharField(max_length=20, choices=AgentStatus.choices, default=AgentStatus.ACTIVE)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()
    objects = AgentQuerySet.as_manager()

    OWNER_PATH = "owner"
    OPERATORS_EDIT = True  # disabling an agent is operators' work

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    # DRF and the MCP SDK treat the authenticated principal as a user-like object.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.status == AgentStatus.ACTIVE

    def clean(self) -> None:
        if self.status == AgentStatus.DISABLED and not self.disabled_reason:
            raise ValidationError({"disabled_reason": "Say why the agent is disabled."})


class AgentToken(models.Model):
    """A bearer token of an agent. Only a lookup prefix and the SHA-256 of the whole token are stored.

    The secret has 256 bits of entropy, so a fast hash is enough: there is nothing to brute-force from a dump.
    """

    PREFIX = "gh"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tokens")
    prefix = models.CharField(max_length=16, unique=True)
    token_hash = models.CharField(max_length=64)
    label = models.CharField(max_length=120, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = AgentTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.agent.slug} {self.PREFIX}_{self.prefix}_…"

    @staticmethod
    def hash_token(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class ScopeGrant(models.Model):
    """Permission for an agent on one resource of one system: read (optionally narrowed to fields) or write actions."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="grants")
    system = models.ForeignKey(System, on_delete=models.CASCADE, related_name="grants")
    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="grants")
    access = models.CharField(max_length=10, choices=Access.choices)
    fields = models.JSONField(
        default=list, blank=True, help_text="Read grants: fields the agent may see. Empty: every field of the resource."
    )
    actions = models.JSONField(default=list, blank=True, help_text="Write grants: names of the actions allowed.")
    justification = models.TextField(help_text="Why the agent needs this access.")
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords()
    objects = ScopeGrantQuerySet.as_manager()

    OWNER_PATH = "system__owner"

    class Meta:
        ordering = ["agent__slug", "system__slug", "resource__name", "access"]
        indexes = [models.Index(fields=["agent", "system", "access"], name="grant_lookup_idx")]

    def __str__(self) -> str:
        return f"{self.agent.slug} {self.access} {self.system.slug}/{self.resource.name}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.resource_id and self.system_id and self.resource.system_id != self.system_id:
            errors["resource"] = "The resource belongs to another system."
        if not self.justification.strip():
            errors["justification"] = "Say why the agent needs this access."
        try:
            fields = _validate_string_list(self.fields, "Fields")
            actions = _validate_string_list(self.actions, "Actions")
        except ValidationError as exc:
            raise ValidationError(exc.messages[0]) from exc
        if self.access == Access.READ:
            if actions:
                errors["actions"] = "A read grant allows no actions; make a separate write grant."
            if fields and self.resource_id:
                unknown = sorted(set(fields) - set(self.resource.fields))
                if unknown:
                    errors["fields"] = f"{self.resource} has no field(s): {', '.join(unknown)}."
        elif self.access == Access.WRITE:
            if fields:
                errors["fields"] = "Fields narrow reads; a write grant lists actions."
            if not actions:
                errors["actions"] = "A write grant must name at least one action."
            elif self.resource_id:
                own = set(
                    ActionType.objects.filter(
                        system_id=self.system_id, resource_id=self.resource_id, name__in=actions
                    ).values_list("name", flat=True)
                )
                elsewhere = dict(
                    ActionType.objects.filter(name__in=set(actions) - own)
                    .exclude(system_id=self.system_id)
                    .values_list("name", "system__slug")
                )
                problems = []
                for name in actions:
                    if name in own:
                        continue
                    if name in elsewhere:
                        problems.append(f"{name!r} is an action of system {elsewhere[name]!r}, not {self.system}")
                    else:
                        problems.append(f"{self.resource} has no action {name!r}")
                if problems:
                    errors["actions"] = "; ".join(problems) + "."
        if self.expires_at and self.expires_at <= timezone.now() and self._state.adding:
            errors["expires_at"] = "The expiry is in the past."
        if errors:
            raise ValidationError(errors)

    def is_current(self, now=None) -> bool:
        return self.expires_at is None or self.expires_at > (now or timezone.now())


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
        if self.action_type_id and self.system_id and self.action_type.system_id != self.system_id:
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
        max_length=10, choices=ReviewTiming.choices, default=ReviewTiming.AFTER_EXECUTION, blank=True
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


class GlobalSwitch(models.Model):
    """The global stop: while engaged, every agent call is refused (503 system_frozen). One row, id 1."""

    engaged = models.BooleanField(default=False)
    reason = models.CharField(max_length=300, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = "global kill switch"

    def __str__(self) -> str:
        return "engaged" if self.engaged else "off"

    @classmethod
    def is_engaged(cls) -> tuple[bool, str]:
        row = cls.objects.filter(pk=1).values_list("engaged", "reason").first()
        return (bool(row[0]), row[1]) if row else (False, "")
