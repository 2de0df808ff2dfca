"""factory-boy factories for the inventory."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from approvals.choices import ProposalStatus
from approvals.decisions import proposal_approve
from approvals.execution import proposal_claim, proposal_execute, proposal_record_executed
from approvals.models import Proposal
from approvals.services import ProposalRequest, proposal_create
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
    # The bands these tests were written for review after execution, like the demo's; a new band made in the admin
    # or without a timing reviews before (the model's default; tests/approvals/test_reviews.py).
    review_timing = choices.ReviewTiming.AFTER_EXECUTION


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


# --- Proposals: made and executed the way the doors and the workers do it ------------------------------------------


def propose(
    agent: Agent | str,
    action: str,
    payload: dict,
    record: str = "4471",
    *,
    system: str = "crm",
    reason: str = "test",
    channel: str = "api",
) -> Proposal:
    """A proposal through the service, as the API makes it (the agent by object or slug)."""
    if isinstance(agent, str):
        agent = Agent.objects.get(slug=agent)
    request = ProposalRequest(system=system, action=action, record_id=record, payload=payload, reason=reason)
    proposal, replayed = proposal_create(agent=agent, request=request, channel=channel)
    assert replayed is None
    return proposal


def propose_limit(credit_limit: str, *, reason: str = "Paid on time for a year.", record: str = "4471") -> Proposal:
    """collections-agent raises (or lowers) a crm account's credit limit (the sample CRM's 4471 starts at 2000.00)."""
    return propose("collections-agent", "update_credit_limit", {"credit_limit": credit_limit}, record, reason=reason)


def propose_credit_note(amount: str, record: str = "INV-1", system: str = "billing") -> Proposal:
    """collections-agent proposes a credit note on `billing_world()`'s system (the amount is in the payload)."""
    return propose("collections-agent", "credit_note", {"amount": amount}, record, system=system, reason="")


def execute(proposal: Proposal) -> Proposal:
    """Run the execution in this process, against the real system (the same service a worker runs); a proposal
    still waiting for a person is approved by the demo's `approver` first."""
    if proposal.status != ProposalStatus.APPROVED:
        proposal_approve(
            proposal_id=proposal.pk, user=get_user_model().objects.get(username="approver"), channel="admin"
        )
    assert proposal_execute(proposal_id=proposal.pk).status == "executed"
    return Proposal.objects.get(pk=proposal.pk)


def record_execution(
    proposal: Proposal, *, before: dict | None = None, after: dict | None = None, compensation: dict | None = None
) -> Proposal:
    """What a worker does once the system has answered, without calling it: claim the proposal, record the write.

    By default the system answers as a REST system of record would: the record was as when it was proposed (the
    snapshot), it is now as the payload says, and writing the snapshot back undoes it."""
    snapshot = dict(proposal.record_snapshot or {})
    assert proposal_claim(proposal_id=proposal.pk) is not None
    return proposal_record_executed(
        proposal_id=proposal.pk,
        before=snapshot if before is None else before,
        after=dict(proposal.payload) if after is None else after,
        compensation={"method": "PATCH", "fields": snapshot} if compensation is None else compensation,
    )


def post_proposal(client, action: str, payload: dict, record: str = "4471", reason: str = "test", **headers):
    """POST a crm proposal with Django's test client or an httpx client; `idempotency_key="k"` becomes the
    `Idempotency-Key` header."""
    body = {"system": "crm", "action": action, "record_id": record, "payload": payload, "reason": reason}
    headers = {name.replace("_", "-").title(): value for name, value in headers.items()}
    if hasattr(client, "build_request"):  # httpx, against a running stack
        return client.post("/api/v1/proposals", json=body, headers=headers)
    return client.post("/api/v1/proposals", body, content_type="application/json", headers=headers)


def propose_raise(
    live, limit: str, expected_status: str | None = None, reason: str = "Paid on time for 12 months"
) -> str:
    """The collections agent, over HTTP to the running stack, proposes 4471's credit limit; returns the proposal id."""
    response = post_proposal(live.agent(), "update_credit_limit", {"credit_limit": limit}, reason=reason)
    assert response.status_code == 201, response.text
    if expected_status is not None:
        assert response.json()["status"] == expected_status
    return response.json()["id"]


def forget_forgeries() -> None:
    """Zero the count of forged Slack requests audited this minute (console/slack.py caps it; the web processes and
    this one share it through the cache), so one test's forgeries do not silence the next one's."""
    import time

    from django.core.cache import cache

    from console.slack import unverified_counter

    now = time.time()
    cache.delete_many([unverified_counter(now + shift) for shift in (-60, 0, 60)])
