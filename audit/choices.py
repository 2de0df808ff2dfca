"""Choices for audit events."""

from django.db import models


class Verb(models.TextChoices):
    READ = "read", "read"
    DENIED = "denied", "denied"
    PROPOSED = "proposed", "proposed"
    AUTO_APPROVED = "auto_approved", "auto-approved"
    APPROVED = "approved", "approved"
    REJECTED = "rejected", "rejected"
    CANCELLED = "cancelled", "cancelled"
    ESCALATED = "escalated", "escalated"
    EXPIRED = "expired", "expired"
    EXECUTING = "executing", "executing"
    EXECUTED = "executed", "executed"
    FAILED = "failed", "failed"
    REVIEWED = "reviewed", "reviewed"
    FLAGGED = "flagged", "flagged"
    REVERSED = "reversed", "reversed"
    HELD = "held", "put on hold"
    RELEASED = "released", "released from hold"
    REVERSAL_PLANNED = "reversal_planned", "reversal planned"
    REVERSAL_STEP_FAILED = "reversal_step_failed", "reversal step failed"
    REVERSAL_HELD = "reversal_held", "reversal step held for a person"
    REVERSAL_FINISHED = "reversal_finished", "reversal finished"
    DRILL = "drill", "rollback drill"
    READINESS_OVERRIDDEN = "readiness_overridden", "readiness overridden"
    KILL_SWITCH_ON = "kill_switch_on", "kill switch on"
    KILL_SWITCH_OFF = "kill_switch_off", "kill switch off"
    TOKEN_ISSUED = "token_issued", "token issued"
    TOKEN_REVOKED = "token_revoked", "token revoked"
    CREDENTIAL_SET = "credential_set", "credential set"
    CREDENTIAL_REENCRYPTED = "credential_reencrypted", "credential re-encrypted"
    RULE_SIGNED_OFF = "rule_signed_off", "rule signed off"
    TOOLS_IMPORTED = "tools_imported", "MCP tools imported"
    TOOL_CHANGED = "tool_changed", "MCP tool changed"  # a pinned tool's definition changed on the server: paused
    TOOL_APPROVED = "tool_approved", "MCP tool approved"  # a person accepted the new definition: pinned, resumed
    CONFIGURED = "configured", "configured"
    STALE = "stale", "went stale"  # the record changed after the decision: back to a person, nothing written
    REFRESHED = "refreshed", "re-decided"  # the impact and decision computed again on the record as it is now
    REASSIGNED = "reassigned", "reassigned"  # a decision handed to a delegate or the on-call group
    SIGNED_IN = "signed_in", "signed in"  # a person signed in (how, and the roles single sign-on gave them)
    WEBHOOK_REPLAYED = "webhook_replayed", "webhook replayed"  # an operator sent parked webhook deliveries again


class ActorType(models.TextChoices):
    AGENT = "agent", "Agent"
    HUMAN = "human", "Person"
    GATEHOUSE = "gatehouse", "Gatehouse"


class Channel(models.TextChoices):
    API = "api", "Agent API"
    MCP = "mcp", "MCP endpoint"
    ADMIN = "admin", "Admin"
    COMMAND = "command", "Management command"
    TASK = "task", "Background task"
    SLACK = "slack", "Slack"  # a person's decision (or its refusal) from a button in a Slack message


# Kinds of events, for the auditor's "kind of event" filter. Configuration: a person changed what governs an agent or a
# system (grants, rules and bands, sign-offs, write modes, freezes, tokens, credentials, connector settings), and an MCP
# tool's definition changing under a pinned action or approved again.
CONFIGURATION_VERBS = frozenset(
    {
        Verb.CONFIGURED,
        Verb.TOKEN_ISSUED,
        Verb.TOKEN_REVOKED,
        Verb.CREDENTIAL_SET,
        Verb.CREDENTIAL_REENCRYPTED,
        Verb.RULE_SIGNED_OFF,
        Verb.KILL_SWITCH_ON,
        Verb.KILL_SWITCH_OFF,
        Verb.READINESS_OVERRIDDEN,
        Verb.TOOLS_IMPORTED,
        Verb.TOOL_CHANGED,
        Verb.TOOL_APPROVED,
    }
)
AGENT_ACTIVITY_VERBS = frozenset(
    {Verb.READ, Verb.DENIED, Verb.PROPOSED, Verb.CANCELLED, Verb.EXECUTING, Verb.EXECUTED, Verb.FAILED}
)
DECISION_VERBS = frozenset(
    {
        Verb.AUTO_APPROVED,
        Verb.APPROVED,
        Verb.REJECTED,
        Verb.ESCALATED,
        Verb.EXPIRED,
        Verb.REVIEWED,
        Verb.FLAGGED,
        Verb.STALE,
        Verb.REFRESHED,
        Verb.REASSIGNED,
    }
)
