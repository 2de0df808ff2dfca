"""factory-boy factories for the inventory."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from governance import choices
from governance.models import ActionType, Agent, Resource, ScopeGrant, System, ThresholdBand, ThresholdRule


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery staple")

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if create and extracted:
            from governance.roles import ensure_roles

            groups = ensure_roles()
            for role in extracted:
                self.groups.add(groups[role])
        if create:
            self.save()


class GroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Group
        django_get_or_create = ["name"]

    name = factory.Sequence(lambda n: f"group{n}")


class SystemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = System
        django_get_or_create = ["slug"]

    name = factory.Sequence(lambda n: f"System {n}")
    slug = factory.Sequence(lambda n: f"system-{n}")
    category = choices.SystemCategory.RECORD
    environment = choices.Environment.PRODUCTION
    integration_pattern = choices.IntegrationPattern.DIRECT_API
    connector_kind = choices.ConnectorKind.HTTP
    connector_config = factory.LazyFunction(lambda: {"base_url": "http://127.0.0.1:9", "timeout": 5})
    owner = factory.SubFactory(UserFactory)
    rollback_contact = "Rollback desk"
    write_mode = choices.WriteMode.ENABLED


class ResourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Resource

    system = factory.SubFactory(SystemFactory)
    name = "accounts"
    label = "account"
    fields = factory.LazyFunction(lambda: ["name", "email", "status", "credit_limit"])


class ActionTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ActionType

    system = factory.LazyAttribute(lambda action: action.resource.system)
    resource = factory.SubFactory(ResourceFactory)
    name = factory.Sequence(lambda n: f"action_{n}")
    payload_schema = factory.LazyFunction(
        lambda: {
            "type": "object",
            "properties": {"credit_limit": {"type": "string"}},
            "required": ["credit_limit"],
            "additionalProperties": False,
        }
    )
    impact_kind = choices.ImpactKind.DELTA
    impact_field = "credit_limit"
    compensation = choices.Compensation.RESTORE_FIELDS


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent
        django_get_or_create = ["slug"]

    slug = factory.Sequence(lambda n: f"agent-{n}")
    name = factory.Sequence(lambda n: f"Agent {n}")
    owner = factory.SubFactory(UserFactory)


class ScopeGrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ScopeGrant

    agent = factory.SubFactory(AgentFactory)
    resource = factory.SubFactory(ResourceFactory)
    system = factory.LazyAttribute(lambda grant: grant.resource.system)
    access = choices.Access.READ
    justification = "Needed for the test."
    granted_by = factory.LazyAttribute(lambda grant: grant.system.owner)


class ThresholdRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ThresholdRule

    system = factory.SubFactory(SystemFactory)
    action_type = None
    name = factory.Sequence(lambda n: f"Rule {n}")


class ThresholdBandFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ThresholdBand

    rule = factory.SubFactory(ThresholdRuleFactory)
    min_amount = Decimal(0)
    max_amount = None
    mode = choices.BandMode.AUTO


def standard_bands(rule: ThresholdRule, approver, review_group) -> list[ThresholdBand]:
    """The brief's bands: < 500 auto; 500–5,000 one approver (4 h); > 5,000 named approver + second review."""
    return [
        ThresholdBandFactory(rule=rule, min_amount=Decimal(0), max_amount=Decimal(500), mode="auto"),
        ThresholdBandFactory(
            rule=rule,
            min_amount=Decimal(500),
            max_amount=Decimal(5000),
            mode="single",
            approver=approver,
            sla=timedelta(hours=4),
        ),
        ThresholdBandFactory(
            rule=rule,
            min_amount=Decimal(5000),
            max_amount=None,
            mode="dual",
            approver=approver,
            sla=timedelta(hours=4),
            review_group=review_group,
        ),
    ]


def billing_world(*, rule_name: str = "Credit notes on billing"):
    """On top of the demo: a billing system whose credit notes carry their amount in the payload (no record to read),
    auto below 500, one approver up to 5,000, approver and second reviewer above, signed off by `owner`; and
    collections-agent may propose credit notes."""
    from types import SimpleNamespace

    from django.contrib.auth import get_user_model

    from audit.choices import Channel
    from governance.choices import Access, ImpactKind, Role
    from governance.services import threshold_rule_sign_off

    users = get_user_model().objects
    owner, approver = users.get(username="owner"), users.get(username="approver")
    system = SystemFactory(slug="billing", name="Billing", owner=owner)
    resource = ResourceFactory(system=system, name="invoices", label="invoice", fields=["amount"])
    action = ActionTypeFactory(
        resource=resource,
        name="credit_note",
        payload_schema={
            "type": "object",
            "properties": {"amount": {"type": "string"}},
            "required": ["amount"],
            "additionalProperties": False,
        },
        impact_kind=ImpactKind.AMOUNT,
        impact_field="amount",
    )
    rule = ThresholdRuleFactory(system=system, action_type=action, name=rule_name)
    standard_bands(rule, approver, Group.objects.get(name=Role.REVIEWERS))
    threshold_rule_sign_off(rule=rule, user=owner, channel=Channel.COMMAND)
    agent = Agent.objects.get(slug="collections-agent")
    ScopeGrantFactory(agent=agent, resource=resource, access=Access.WRITE, actions=["credit_note"])
    return SimpleNamespace(
        system=system,
        action=action,
        rule=rule,
        agent=agent,
        owner=owner,
        approver=approver,
        reviewer=users.get(username="reviewer"),
    )
