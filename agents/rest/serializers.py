"""Serializers of the REST API's own answers (the agent, its systems, one record, pages, problems); the shapes both
doors share are in agents.shapes."""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.shapes import ProposalSerializer, ReadGrants, impact_fields
from approvals.limits import BudgetUse, budgets_of
from approvals.models import Proposal
from governance.choices import Access
from governance.models import ActionType, Agent, Resource, ScopeGrant, System, ThresholdRule


class GrantSerializer(serializers.ModelSerializer):
    system: serializers.SlugRelatedField[System] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    resource: serializers.SlugRelatedField[Resource] = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = ScopeGrant
        fields = ["system", "resource", "access", "fields", "actions", "expires_at"]


class BudgetSerializer(serializers.Serializer):
    """One budget of the agent on a system, and what it used of it in the window ending now."""

    system = serializers.CharField()
    window_seconds = serializers.IntegerField()
    currency = serializers.CharField()
    max_amount = serializers.CharField(allow_null=True, help_text="Null: no limit on the sum.")
    used_amount = serializers.CharField(
        allow_null=True,
        help_text="The sum of the size of its standing proposals' impacts; null also when an impact it sums is "
        "computed from record fields this agent's read grants do not cover.",
    )
    left_amount = serializers.CharField(allow_null=True)
    max_writes = serializers.IntegerField(allow_null=True, help_text="Null: no limit on the count.")
    used_writes = serializers.IntegerField()
    left_writes = serializers.IntegerField(allow_null=True)


class CumulativeRuleSerializer(serializers.Serializer):
    """A rule that adds the agent's earlier proposals to the next one's amount before choosing the band."""

    system = serializers.CharField()
    rule = serializers.CharField()
    actions = serializers.ListField(child=serializers.CharField())
    scope = serializers.ChoiceField(choices=["record", "system"])
    window_seconds = serializers.IntegerField()


class MeSerializer(serializers.ModelSerializer):
    grants = serializers.SerializerMethodField()
    budgets = serializers.SerializerMethodField()
    cumulative_rules = serializers.SerializerMethodField()

    class Meta:
        model = Agent
        fields = ["slug", "name", "status", "grants", "budgets", "cumulative_rules"]

    def get_grants(self, agent: Agent) -> list[dict]:
        return list(GrantSerializer(ScopeGrant.objects.for_agent(agent), many=True).data)

    @extend_schema_field(BudgetSerializer(many=True))
    def get_budgets(self, agent: Agent) -> list[dict]:
        return [
            _budget(use, shows_amount=_reads_every_impact(agent, use.budget.system_id)) for use in budgets_of(agent)
        ]

    @extend_schema_field(CumulativeRuleSerializer(many=True))
    def get_cumulative_rules(self, agent: Agent) -> list[dict]:
        granted: dict[int, set[str]] = {}
        for grant in ScopeGrant.objects.for_agent(agent).filter(access=Access.WRITE):
            granted.setdefault(grant.system_id, set()).update(grant.actions)
        rules = ThresholdRule.objects.filter(system_id__in=granted).exclude(cumulative_scope="")
        answer = []
        for rule in rules.select_related("system", "action_type"):
            if rule.action_type is not None:
                actions = [rule.action_type.name] if rule.action_type.name in granted[rule.system_id] else []
            else:
                own = set(rule.system.action_types.filter(threshold_rules__isnull=False).values_list("name", flat=True))
                actions = sorted(granted[rule.system_id] - own)
            if actions:
                answer.append(
                    {
                        "system": rule.system.slug,
                        "rule": rule.name,
                        "actions": actions,
                        "scope": rule.cumulative_scope,
                        "window_seconds": int(rule.cumulative_window.total_seconds()),
                    }
                )
        return answer


def _reads_every_impact(agent: Agent, system_id: int) -> bool:
    """Whether the agent's read grants cover the fields every action whose impacts a budget's sum may hold computes
    its impact from: those it may propose now and those it proposed before (a grant withdrawn since still leaves its
    proposals in the sum). Otherwise the sum would tell it what it may not read (CONTRACT.md, as for an impact)."""
    granted: set[str] = set()
    for grant in ScopeGrant.objects.for_agent(agent).filter(access=Access.WRITE, system_id=system_id):
        granted.update(grant.actions)
    proposed = Proposal.objects.filter(agent=agent, system_id=system_id).values("action_type_id")
    actions = ActionType.objects.filter(system_id=system_id).filter(Q(name__in=granted) | Q(pk__in=proposed))
    reads = ReadGrants()
    return all(impact_fields(action) <= reads.fields(agent.pk, action.resource_id) for action in actions)


def _budget(use: BudgetUse, *, shows_amount: bool) -> dict:
    budget = use.budget
    money = budget.max_amount is not None and shows_amount
    return {
        "system": budget.system.slug,
        "window_seconds": int(budget.window.total_seconds()),
        "currency": budget.currency,
        "max_amount": f"{budget.max_amount:.2f}" if budget.max_amount is not None else None,
        "used_amount": f"{use.amount:.2f}" if shows_amount else None,
        "left_amount": f"{use.amount_left:.2f}" if money and use.amount_left is not None else None,
        "max_writes": budget.max_writes,
        "used_writes": use.writes,
        "left_writes": use.writes_left,
    }


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
