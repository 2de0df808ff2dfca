"""What both agent doors share: the proposal request, the proposal and event answers, and the rules for the ids and
keys an agent sends. The REST API (agents/rest) and the MCP tools (agents/mcp) validate and answer with these, so a
proposal reads the same at either door and an idempotent answer stored by one replays at the other."""

from __future__ import annotations

import json
import re
from typing import Any

from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from rest_framework import serializers
from rest_framework.utils.encoders import JSONEncoder

from approvals.models import Proposal
from governance.models import System

# An Idempotency-Key (the REST header, the MCP propose tools' argument): any text but control characters (C0, DEL, C1;
# NUL is what PostgreSQL refuses), 1-255 characters; in the documents as the same pattern. Match with fullmatch: `$`
# alone would let a trailing newline through.
IDEMPOTENCY_KEY = re.compile(r"^[^\x00-\x1f\x7f-\x9f]+$")
# A record id a proposal (or an MCP read) may name, matched whole: letters, digits and . _ : @ - only, so no path
# characters reach a connector's URL, and no trailing newline either (`$` alone would let one through).
RECORD_ID = re.compile(r"\A[A-Za-z0-9._:@-]{1,200}\Z")


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


class ProposalCreateSerializer(StrictSerializer):
    """A proposal: an action on one record of a system, its payload and the agent's reason. Identifiers are taken
    exactly as sent: " 4471" is no record id."""

    # No trimming, and patterns matched whole (\A…\Z; the document shows ^…$): " 4471" or "4471\n" must not quietly
    # become "4471", which the OpenAPI document says is refused.
    system = serializers.SlugField(max_length=60, trim_whitespace=False)
    action = TextField(min_length=1, max_length=60, trim_whitespace=False)
    record_id = serializers.RegexField(
        RECORD_ID,
        trim_whitespace=False,
        error_messages={"invalid": "Use letters, digits and . _ : @ - only (at most 200)."},
    )
    payload = serializers.DictField(help_text="Checked against the action's payload schema.")
    reason = TextField(max_length=2000, required=False, allow_blank=True, default="")


class ImpactSerializer(serializers.Serializer):
    amount = serializers.CharField(allow_null=True)
    currency = serializers.CharField()


class DecisionSerializer(serializers.Serializer):
    mode = serializers.CharField()
    reason = serializers.CharField()
    rule = serializers.CharField(allow_null=True)
    band = serializers.CharField(allow_null=True)
    approver = serializers.CharField(allow_null=True)
    approver_group = serializers.CharField(allow_null=True)
    review_group = serializers.CharField(allow_null=True)
    sla_due_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)


class ProposalSerializer(serializers.ModelSerializer):
    system: serializers.SlugRelatedField[System] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    action = serializers.CharField(source="action_type.name")
    impact = serializers.SerializerMethodField()
    decision = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()
    rejection_reason = serializers.SerializerMethodField()

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
            "failure_reason",
            "created_at",
            "decided_at",
            "executed_at",
            "links",
        ]

    def get_impact(self, proposal: Proposal) -> dict[str, Any]:
        amount = None if proposal.impact_amount is None else f"{proposal.impact_amount:.2f}"
        return ImpactSerializer({"amount": amount, "currency": proposal.impact_currency}).data

    def get_decision(self, proposal: Proposal) -> dict[str, Any]:
        decision = proposal.decision or {}
        return DecisionSerializer(
            {
                "mode": proposal.mode,
                "reason": decision.get("reason", ""),
                "rule": decision.get("rule"),
                "band": decision.get("band"),
                "approver": decision.get("approver"),
                "approver_group": decision.get("approver_group"),
                "review_group": decision.get("review_group"),
                "sla_due_at": proposal.sla_due_at,
                "expires_at": proposal.expires_at,
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


def proposal_body(proposal: Proposal) -> dict[str, Any]:
    """A proposal as GET /api/v1/proposals/{id} answers it, and as an idempotency record keeps it for both doors."""
    return as_json(ProposalSerializer(proposal).data)


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
