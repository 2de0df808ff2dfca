"""Agents (service accounts), their bearer tokens, and the scope grants that say what each may read and write."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords

from governance.choices import (
    Access,
    AgentStatus,
)
from governance.models.systems import ActionType, Resource, System
from governance.models.validators import slug_validator, validate_string_list
from governance.querysets import AgentQuerySet, AgentTokenQuerySet, ScopeGrantQuerySet


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
    networks = models.JSONField(
        default=list, blank=True, help_text="Networks (CIDR) it may be used from; empty: anywhere."
    )

    objects = AgentTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.agent.slug} {self.PREFIX}_{self.prefix}_…"

    @staticmethod
    def hash_token(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    def is_usable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def allows_source(self, address: str | None) -> bool:
        """Whether a call from `address` may use this token: anywhere without networks, else only from within one
        (an unknown or unparsable address is refused)."""
        if not self.networks:
            return True
        try:
            source = ipaddress.ip_address((address or "").strip("[]"))
        except ValueError:
            return False
        return any(source in ipaddress.ip_network(network, strict=False) for network in self.networks)


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
            fields = validate_string_list(self.fields, "Fields")
            actions = validate_string_list(self.actions, "Actions")
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
