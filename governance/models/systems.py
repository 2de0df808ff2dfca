"""Systems Gatehouse reaches, the kinds of record they hold (resources) and the writes an agent may propose."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import jsonschema
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from simple_history.models import HistoricalRecords

from governance import connections
from governance.choices import (
    Compensation,
    ConnectorKind,
    Environment,
    ImpactKind,
    IntegrationPattern,
    SystemCategory,
    WriteMode,
)
from governance.models.validators import currency_validator, slug_validator, validate_string_list
from governance.querysets import OwnedQuerySet


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


class SystemConnection(System):
    """A system seen for its connector: the kind and settings that decide what Gatehouse runs and where it connects
    (and so where the vaulted credential goes). Its own admin page and permissions: only superusers and integrators
    see or change them (DESIGN.md, "The control plane is a privilege boundary")."""

    class Meta:
        proxy = True
        verbose_name = "connector settings"
        verbose_name_plural = "connector settings"


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
            validate_string_list(self.fields, "Fields")
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
    # Tool pinning (an `mcp` system's action: connectors/mcp/pinning.py). What the MCP server's tool looked like when a
    # person accepted it (imported or approved it), so a definition changed on the server afterwards is noticed.
    tool_digest = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of the tool's definition as pinned (empty: not pinned)."
    )
    tool_definition = models.JSONField(default=dict, blank=True, help_text="The tool's definition as pinned.")
    tool_pinned_at = models.DateTimeField(null=True, blank=True)
    tool_pinned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    tool_pending = models.JSONField(
        default=dict,
        blank=True,
        help_text='What the server offers now instead, awaiting approval: {"digest", "definition", "seen_at"}, '
        '"definition" null when the tool is gone.',
    )
    paused_reason = models.CharField(
        max_length=300,
        blank=True,
        help_text="Set while the action is paused: proposals on it are refused, approved ones wait.",
    )

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

    @property
    def paused(self) -> bool:
        return bool(self.paused_reason)

    PIN_FIELDS = ("tool_digest", "tool_definition", "tool_pinned_at", "tool_pinned_by", "tool_pending", "paused_reason")

    def pin_tool(self, *, definition: dict[str, Any], digest: str, by: Any, at: datetime) -> None:
        """Accept `definition` as the tool's (an import, a person's approval): pinned, nothing pending, not paused.
        Not saved: the caller saves `PIN_FIELDS` with the rest of its change."""
        self.tool_definition, self.tool_digest = definition, digest
        self.tool_pinned_at, self.tool_pinned_by = at, by
        self.tool_pending = {}
        self.paused_reason = ""

    @property
    def tool_name(self) -> str:
        """The downstream tool an `mcp` action calls (its operation's, or its own name)."""
        return (self.operation or {}).get("tool") or self.name

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
            unknown = set(validate_string_list(self.preconditions, "Preconditions")) - self.KNOWN_PRECONDITIONS
            if unknown:
                errors["preconditions"] = f"Unknown precondition(s): {', '.join(sorted(unknown))}."
        except ValidationError as exc:
            errors["preconditions"] = exc.messages[0]
        if self.system_id:
            errors.update(connections.operation_errors(self.system.connector_kind, self.operation, self.compensation))
        if errors:
            raise ValidationError(errors)
