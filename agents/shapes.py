"""What both agent doors share: the proposal request, the proposal and event answers, and the rules for the ids and
keys an agent sends. The REST API (agents/rest) and the MCP tools (agents/mcp) validate and answer with these, so a
proposal reads the same at either door and an idempotent answer stored by one replays at the other.

A proposal's answer shows its impact only when the agent's read grants cover the record fields the impact is computed
from (CONTRACT.md): an agent must not learn through a proposal what it may not read."""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from typing import Any

from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.utils.encoders import JSONEncoder

from approvals.choices import DecisionMode
from approvals.models import Proposal
from governance import policy_cache
from governance.choices import Access, ImpactKind
from governance.gate import granted_fields
from governance.models import ActionType, ScopeGrant, System

# An Idempotency-Key (the REST header, the MCP propose tools' argument): any text but control characters (C0, DEL, C1;
# NUL is what PostgreSQL refuses), 1-255 characters; in the documents as the same pattern. Match with fullmatch: `$`
# alone would let a trailing newline through.
IDEMPOTENCY_KEY = re.compile(r"^[^\x00-\x1f\x7f-\x9f]+$")

# --- Record ids ---------------------------------------------------------------------------------------------------

# The one record-id rule of every door (REST reads, proposals, MCP reads and proposals; CONTRACT.md, input rules):
# 1-200 letters, digits and . _ : @ - matched whole, so no path character reaches a connector's URL (and no trailing
# newline: `$` alone would let one through); and never "." or ".." alone, which a URL resolves as a dot segment, so
# /accounts/.. would name the collection, or whatever lies above it, rather than a record.
RECORD_ID = re.compile(r"\A[A-Za-z0-9._:@-]{1,200}\Z")
DOT_SEGMENTS = frozenset({".", ".."})
RECORD_ID_RULE = "A record id is 1 to 200 letters, digits and . _ : @ - (not . or .. alone)."
# The same rule as JSON Schema, for the OpenAPI document (the REST path and the proposal body) and the MCP tools'
# input schemas. Their `$` lets a final newline through, so every door checks with record_id_problem as well.
RECORD_ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": r"^[A-Za-z0-9._:@-]{1,200}$",
    "not": {"enum": sorted(DOT_SEGMENTS)},
}


def record_id_problem(value: str) -> str | None:
    """What is wrong with `value` as a record id, in words for the agent; None when it is one."""
    if RECORD_ID.fullmatch(value) and value not in DOT_SEGMENTS:
        return None
    return RECORD_ID_RULE


# --- The proposal request -----------------------------------------------------------------------------------------


class TextField(serializers.CharField):
    """A CharField whose refusal of NUL (PostgreSQL cannot store it) is in the OpenAPI document as a pattern, not only
    in the server's checks: DRF's own null-character validator is invisible to drf-spectacular."""

    # `+`, not `*`: DRF never validates a blank value (allowed or refused before), and drf-spectacular documents an
    # allow_blank field with a pattern as oneOf(pattern, empty), which "" must match only once.
    NO_NUL = RegexValidator(r"\A[^\x00]+\Z", "Null characters are not allowed.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        kept = [v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)]
        self.validators = [*kept, self.NO_NUL]


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not declare, so a typo is an error rather than silently ignored, and numbers or booleans
    where it declares text: DRF's CharField would take `"reason": 0` as "0", which the OpenAPI document (type string)
    says is no request."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
            not_text = [
                name
                for name, field in self.fields.items()
                if isinstance(field, serializers.CharField)
                and data.get(name) is not None
                and not isinstance(data[name], str)
            ]
            if not_text:
                raise serializers.ValidationError({name: ["Must be a string."] for name in not_text})
        return super().to_internal_value(data)


@extend_schema_field(RECORD_ID_SCHEMA)
class RecordIdField(serializers.CharField):
    """A record id, taken exactly as sent (" 4471" is no record id) and judged by record_id_problem."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("error_messages", {"blank": RECORD_ID_RULE})
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        problem = record_id_problem(value)
        if problem is not None:
            raise serializers.ValidationError(problem)
        return value


class ProposalCreateSerializer(StrictSerializer):
    """A proposal: an action on one record of a system, its payload and the agent's reason. Identifiers are taken
    exactly as sent: " 4471" is no record id."""

    # No trimming, and patterns matched whole (\A…\Z; the document shows ^…$): " 4471" or "4471\n" must not quietly
    # become "4471", which the OpenAPI document says is refused.
    system = serializers.SlugField(max_length=60, trim_whitespace=False)
    action = TextField(min_length=1, max_length=60, trim_whitespace=False)
    record_id = RecordIdField()
    payload = serializers.DictField(help_text="Checked against the action's payload schema.")
    reason = TextField(max_length=2000, required=False, allow_blank=True, default="")


# --- What a proposal's answer may show ----------------------------------------------------------------------------


def impact_fields(action: ActionType) -> frozenset[str]:
    """The record fields an action's impact is computed from, as approvals.policy.compute_impact computes it: `delta`
    subtracts the record's current `impact_field`; `amount` is the agent's own payload and `none` is 0, no record."""
    if action.impact_kind == ImpactKind.DELTA:
        return frozenset({action.impact_field})
    return frozenset()


def _read_grants(agent_id: int) -> list[ScopeGrant]:
    """Every read grant of the agent, expired or not (cached per process under the policy generation)."""
    return list(ScopeGrant.objects.filter(agent_id=agent_id, access=Access.READ).select_related("system", "resource"))


class ReadGrants:
    """The fields an agent's current read grants show, per resource: read in one query per agent, when a proposal
    first needs them, and kept for one answer (one proposal, or a whole page of them)."""

    def __init__(self) -> None:
        self._by_agent: dict[int, dict[int, frozenset[str]]] = {}

    def fields(self, agent_id: int, resource_id: int) -> frozenset[str]:
        if agent_id not in self._by_agent:
            by_resource: dict[int, list[ScopeGrant]] = {}
            now = timezone.now()
            for grant in policy_cache.cached(("read_grants_of", agent_id), functools.partial(_read_grants, agent_id)):
                if grant.expires_at is None or grant.expires_at > now:  # ScopeGrant.objects.current
                    by_resource.setdefault(grant.resource_id, []).append(grant)
            self._by_agent[agent_id] = {
                resource: frozenset(granted_fields(grants[0].resource, grants))
                for resource, grants in by_resource.items()
            }
        return self._by_agent[agent_id].get(resource_id, frozenset())

    def cover_impact(self, proposal: Proposal) -> bool:
        """Whether the proposal's agent may read every field its impact is computed from (none: always)."""
        needed = impact_fields(proposal.action_type)
        return not needed or needed <= self.fields(proposal.agent_id, proposal.action_type.resource_id)


# The serializer context's ReadGrants (made on first use when the caller passes none).
READ_GRANTS = "read_grants"
# A decision's mode in words, for the reason an answer gives in place of one that names the amount.
_MODE_WORDS: dict[str, str] = {
    DecisionMode.AUTO: "it executes without approval",
    DecisionMode.SINGLE: "one person approves it",
    DecisionMode.DUAL: "one person approves it and a second person reviews it",
}


def reason_without_amount(proposal: Proposal) -> str:
    """The decision's reason when the impact is not shown: the rule and the mode, and why no amount. The stored reason
    ("1000.00 USD falls in band …") and the band's range would tell the amount, or narrow it down."""
    rule = (proposal.decision or {}).get("rule")
    decided = f"By rule “{rule}”" if rule else "With no threshold rule to decide by"
    mode = _MODE_WORDS.get(proposal.mode, f"mode {proposal.mode}")
    fields = ", ".join(sorted(impact_fields(proposal.action_type)))
    return f"{decided}, {mode}; the amount is not shown: it is computed from {fields}, which this agent may not read"


class ImpactSerializer(serializers.Serializer):
    amount = serializers.CharField(
        allow_null=True,
        help_text="Null when it could not be computed, or when it is computed from record fields this agent's read "
        "grants do not cover.",
    )
    currency = serializers.CharField()


class DecisionSerializer(serializers.Serializer):
    mode = serializers.CharField()
    reason = serializers.CharField()
    rule = serializers.CharField(allow_null=True)
    band = serializers.CharField(allow_null=True, help_text="Null too when the impact's amount is not shown.")
    approver = serializers.CharField(allow_null=True)
    approver_group = serializers.CharField(allow_null=True)
    review_group = serializers.CharField(allow_null=True)
    sla_due_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)


class ReviewSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["due", "reviewed", "flagged"])
    due_at = serializers.DateTimeField(allow_null=True)
    by = serializers.CharField(allow_null=True, help_text="Who gave the second review; null while it is due.")
    escalated_at = serializers.DateTimeField(
        allow_null=True, help_text="When the review passed its due time undone and was escalated (it stays due)."
    )


class ProposalSerializer(serializers.ModelSerializer):
    system: serializers.SlugRelatedField[System] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    action = serializers.CharField(source="action_type.name")
    impact = serializers.SerializerMethodField()
    decision = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()
    rejection_reason = serializers.SerializerMethodField()
    review = serializers.SerializerMethodField()

    class Meta:
        model = Proposal
        fields = [
            "id",
            "status",
            "system",
            "action",
            "record_id",
            "payload",
            "reason",
            "impact",
            "decision",
            "rejection_reason",
            "review",
            "failure_reason",
            "created_at",
            "decided_at",
            "executed_at",
            "links",
        ]

    def _impact_shown(self, proposal: Proposal) -> bool:
        # The context is the root serializer's: a page of proposals shares one ReadGrants, so one query per page.
        grants = self.context.get(READ_GRANTS)
        if grants is None:
            grants = self.context[READ_GRANTS] = ReadGrants()
        return grants.cover_impact(proposal)

    @extend_schema_field(ImpactSerializer)
    def get_impact(self, proposal: Proposal) -> dict[str, Any]:
        shown = proposal.impact_amount is not None and self._impact_shown(proposal)
        amount = f"{proposal.impact_amount:.2f}" if shown else None
        return ImpactSerializer({"amount": amount, "currency": proposal.impact_currency}).data

    @extend_schema_field(DecisionSerializer)
    def get_decision(self, proposal: Proposal) -> dict[str, Any]:
        decision = proposal.decision or {}
        shown = self._impact_shown(proposal)
        return DecisionSerializer(
            {
                "mode": proposal.mode,
                "reason": decision.get("reason", "") if shown else reason_without_amount(proposal),
                "rule": decision.get("rule"),
                "band": decision.get("band") if shown else None,
                "approver": decision.get("approver"),
                "approver_group": decision.get("approver_group"),
                "review_group": decision.get("review_group"),
                "sla_due_at": proposal.sla_due_at,
                "expires_at": proposal.expires_at,
            }
        ).data

    @extend_schema_field(ReviewSerializer(allow_null=True))
    def get_review(self, proposal: Proposal) -> dict[str, Any] | None:
        """Dual approval, once the first person approved: the second review, due or given (CONTRACT.md)."""
        if proposal.mode != DecisionMode.DUAL or not proposal.decided_by_id:
            return None
        status = proposal.review_outcome or "due"
        return ReviewSerializer(
            {
                "status": status,
                "due_at": proposal.review_due_at,
                "by": proposal.reviewed_by.get_username() if proposal.reviewed_by else None,
                "escalated_at": proposal.review_escalated_at,
            }
        ).data

    def get_links(self, proposal: Proposal) -> dict[str, str]:
        return {"self": f"/api/v1/proposals/{proposal.pk}"}

    def get_rejection_reason(self, proposal: Proposal) -> str | None:
        return proposal.decision_comment if proposal.status == "rejected" else None


def as_json(data: Any) -> Any:
    """Serializer output as plain JSON types (dates as ISO strings, decimals as strings): what is stored and replayed,
    and what MCP tools return as structured content."""
    return json.loads(json.dumps(data, cls=JSONEncoder))


def proposal_body(proposal: Proposal, grants: ReadGrants | None = None) -> dict[str, Any]:
    """A proposal as GET /api/v1/proposals/{id} answers it, and as an idempotency record keeps it for both doors.

    Built straight as JSON types, on every answer's path: ProposalSerializer (above) describes the same body for the
    OpenAPI document, and a test holds the two equal (tests/agents/rest/test_proposal_body.py); building it through
    the serializer cost more Python time than deciding the proposal."""
    grants = grants if grants is not None else ReadGrants()
    shown = grants.cover_impact(proposal)
    decision = proposal.decision or {}
    amount = proposal.impact_amount
    review = None
    if proposal.mode == DecisionMode.DUAL and proposal.decided_by_id:
        review = {
            "status": _text(proposal.review_outcome or "due"),
            "due_at": _when(proposal.review_due_at),
            "by": proposal.reviewed_by.get_username() if proposal.reviewed_by else None,
            "escalated_at": _when(proposal.review_escalated_at),
        }
    return {
        "id": str(proposal.pk),
        "status": _text(proposal.status),
        "system": proposal.system.slug,
        "action": proposal.action_type.name,
        "record_id": proposal.record_id,
        "payload": proposal.payload,
        "reason": proposal.reason,
        "impact": {
            "amount": f"{amount:.2f}" if amount is not None and shown else None,
            "currency": _text(proposal.impact_currency),
        },
        "decision": {
            "mode": _text(proposal.mode),
            "reason": _text(decision.get("reason", "")) if shown else reason_without_amount(proposal),
            "rule": _text(decision.get("rule")),
            "band": _text(decision.get("band")) if shown else None,
            "approver": _text(decision.get("approver")),
            "approver_group": _text(decision.get("approver_group")),
            "review_group": _text(decision.get("review_group")),
            "sla_due_at": _when(proposal.sla_due_at),
            "expires_at": _when(proposal.expires_at),
        },
        "rejection_reason": proposal.decision_comment if proposal.status == "rejected" else None,
        "review": review,
        "failure_reason": proposal.failure_reason,
        "created_at": _when(proposal.created_at),
        "decided_at": _when(proposal.decided_at),
        "executed_at": _when(proposal.executed_at),
        "links": {"self": f"/api/v1/proposals/{proposal.pk}"},
    }


def _text(value: Any) -> str | None:
    """DRF's CharField output: the value as text, None kept."""
    return None if value is None else str(value)


def _when(value: datetime | None) -> str | None:
    """DRF's DateTimeField output (ISO 8601 in the current time zone, UTC as "Z")."""
    if value is None:
        return None
    text = value.astimezone(timezone.get_current_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class ProposalAnswer:
    """proposal_create's `respond`: the body it stores for an idempotent replay is the very body the door answers
    with, built once; the read grants behind it are read once and kept for the door's further answers."""

    def __init__(self) -> None:
        self.grants = ReadGrants()
        self.body: dict[str, Any] | None = None

    def __call__(self, proposal: Proposal) -> dict[str, Any]:
        self.body = proposal_body(proposal, self.grants)
        return self.body


class EventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    system = serializers.CharField()
    resource = serializers.CharField()
    record_id = serializers.CharField()
    data = serializers.DictField()  # type: ignore[assignment]  # the answer's field, not Serializer.data
    received_at = serializers.DateTimeField()


class EventPageSerializer(serializers.Serializer):
    events = EventSerializer(many=True)
    next_after = serializers.IntegerField(help_text="Pass as `after` to read on.")


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, str]:
    """DRF's nested error lists → {"payload.credit_limit": "message"}."""
    flat: dict[str, str] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = "" if key in ("non_field_errors", "detail") else str(key)
            flat.update(flatten_errors(value, f"{prefix}.{name}".strip(".") if name else prefix))
    elif isinstance(errors, list):
        if all(not isinstance(item, dict | list) for item in errors):
            flat[prefix or "request"] = " ".join(str(item) for item in errors)
        else:
            for index, item in enumerate(errors):
                flat.update(flatten_errors(item, f"{prefix}.{index}".strip(".")))
    else:
        flat[prefix or "request"] = str(errors)
    return flat
