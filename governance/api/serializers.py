"""Output serializers of the agent API (input serializers reject unknown fields)."""

from rest_framework import serializers

from governance.models import Agent, ScopeGrant


class GrantSerializer(serializers.ModelSerializer):
    system = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    resource = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = ScopeGrant
        fields = ["system", "resource", "access", "fields", "actions", "expires_at"]


class MeSerializer(serializers.ModelSerializer):
    grants = serializers.SerializerMethodField()

    class Meta:
        model = Agent
        fields = ["slug", "name", "status", "grants"]

    def get_grants(self, agent: Agent) -> list[dict]:
        return GrantSerializer(ScopeGrant.objects.for_agent(agent), many=True).data
