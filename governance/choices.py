"""Choices for the inventory models."""

from django.db import models


class SystemCategory(models.TextChoices):
    RECORD = "record", "System of record"
    ENGAGEMENT = "engagement", "System of engagement"
    LAST_RESORT = "last_resort", "System of last resort"


class Environment(models.TextChoices):
    PRODUCTION = "production", "Production"
    STAGING = "staging", "Staging"


class IntegrationPattern(models.TextChoices):
    DIRECT_API = "direct_api", "Direct API with scoped credentials"
    MCP = "mcp", "MCP connector"
    EVENT_QUEUE = "event_queue", "Event queue (legacy batch)"


class ConnectorKind(models.TextChoices):
    HTTP = "http", "HTTP / JSON"
    MCP = "mcp", "MCP server"
    LEGACY_BATCH = "legacy_batch", "Legacy batch drop"
    SOAP = "soap", "SOAP / WSDL"


class WriteMode(models.TextChoices):
    DISABLED = "disabled", "Disabled (no reads, no writes)"
    READ_ONLY = "read_only", "Read only"
    PROPOSE_ONLY = "propose_only", "Propose only (approved writes become manual tasks)"
    ENABLED = "enabled", "Enabled"


class AgentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DISABLED = "disabled", "Disabled"


class Access(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"


class ImpactKind(models.TextChoices):
    NONE = "none", "No money at stake (impact 0)"
    DELTA = "delta", "New value minus current value of a record field"
    AMOUNT = "amount", "The amount given in a payload field"


class Compensation(models.TextChoices):
    RESTORE_FIELDS = "restore_fields", "Write back the values from before"
    DELETE_CREATED = "delete_created", "Delete what the action created"
    NONE = "none", "Not reversible"


class BandMode(models.TextChoices):
    AUTO = "auto", "Auto-execute and log"
    SINGLE = "single", "One approver within the SLA"
    DUAL = "dual", "Named approver plus a second reviewer"


class CumulativeScope(models.TextChoices):
    """What a rule counts with a proposal: nothing (each judged alone), or what the same agent already did in the
    rule's window to the same record, or to every record of the system."""

    NONE = "", "Each proposal alone"
    RECORD = "record", "Add the agent's earlier proposals on the same record"
    SYSTEM = "system", "Add the agent's earlier proposals on any record of the system"


class ReviewTiming(models.TextChoices):
    BEFORE_EXECUTION = "before", "Review before execution"
    AFTER_EXECUTION = "after", "Review after execution"


class Role(models.TextChoices):
    """Admin roles, each a Django group of the same name."""

    BUSINESS_OWNERS = "Business owners"
    APPROVERS = "Approvers"
    REVIEWERS = "Reviewers"
    AUDITORS = "Auditors"
    OPERATORS = "Operators"
    INTEGRATORS = "Integrators"
