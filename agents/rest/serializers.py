"""Serializers of the REST API's own answers (the agent, its systems, one record, pages, problems); the shapes both
doors share are in agents.shapes."""

from __future__ import annotations

from rest_framework import serializers

from agents.shapes import ProposalSerializer
from governance.models import ActionType, Agent, Resource, ScopeGrant, System


class GrantSerializer(serializers.ModelSerializer):
    system: serializers.SlugRelatedField[System] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    resource: serializers.SlugRelatedField[Resource] = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = ScopeGrant
        fields = ["system", "resource", "access", "fields", "actions", "expires_at"]


class MeSerializer(serializers.ModelSerializer):
    grants = serializers.SerializerMethodField()

    class Meta:
        model = Agent
        fields = ["slug", "name", "status", "grants"]

    def get_grants(self, agent: Agent) -> list[dict]:
        return list(GrantSerializer(ScopeGrant.objects.for_agent(agent), many=True).data)


class ActionSerializer(serializers.ModelSerializer):
    resource: serializers.SlugRelatedField[Resource] = serializers.SlugRelatedField(slug_field="name", read_only=True)
    reversible = serializers.BooleanField(read_only=True)

    class Meta:
        model = ActionType
        fields = ["name", "description", "resource", "payload_schema", "reversible", "not_reversible_note"]


class ResourceAccessSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # the answer's field, not Field.label
    readable_fields = serializers.ListField(child=serializers.CharField())


class SystemSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    category = serializers.CharField()
    environment = serializers.CharField()
    integration_pattern = serializers.CharField()
    write_mode = serializers.CharField()
    resources = ResourceAccessSerializer(many=True)
    actions = ActionSerializer(many=True)


class RecordSerializer(serializers.Serializer):
    system = serializers.CharField()
    resource = serializers.CharField()
    record_id = serializers.CharField()
    # The answer's field (CONTRACT.md), which the stubs read as Serializer.data.
    data = serializers.DictField(help_text="Only the fields the agent's grants allow.")  # type: ignore[assignment]


class ProposalPageSerializer(serializers.Serializer):
    """One cursor page of GET /proposals (DRF's CursorPagination, newest first)."""

    next = serializers.URLField(allow_null=True, help_text="The next (older) page; null on the last one.")
    previous = serializers.URLField(allow_null=True, help_text="The previous (newer) page; null on the first one.")
    results = ProposalSerializer(many=True)


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField()
    # The problem's field (RFC 9457, CONTRACT.md), which the stubs read as Serializer.errors.
    errors = serializers.DictField(child=serializers.CharField(), required=False)  # type: ignore[assignment]
