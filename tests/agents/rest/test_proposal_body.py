"""A proposal's body is built straight as JSON (agents.shapes.proposal_body) on every answer's path; ProposalSerializer
describes the same body for the OpenAPI document. The two must never drift: compared here over every shape a
proposal's answer takes (status, mode, review, impact shown or hidden, dates set or not)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from agents.shapes import READ_GRANTS, ProposalSerializer, ReadGrants, as_json, proposal_body
from approvals.choices import DecisionMode
from approvals.models import Proposal
from tests.agents.impact import narrow
from tests.factories import propose_limit

NOW = timezone.now().replace(microsecond=123456)

SHAPES = {
    "pending, one approver": {},
    "auto, executed": {"status": "executed", "mode": DecisionMode.AUTO, "decided_at": NOW, "executed_at": NOW},
    "rejected with a comment": {"status": "rejected", "decision_comment": "Not this quarter.", "decided_at": NOW},
    "cancelled, nothing decided": {"status": "cancelled", "sla_due_at": None, "expires_at": None},
    "failed": {"status": "failed", "failure_reason": "crm answered 409 (version moved)"},
    "dual, review due": {"status": "executed", "mode": DecisionMode.DUAL, "decided_by": "approver"},
    "dual, flagged and escalated": {
        "status": "executed",
        "mode": DecisionMode.DUAL,
        "decided_by": "approver",
        "reviewed_by": "reviewer",
        "review_outcome": "flagged",
        "review_due_at": NOW + timedelta(hours=24),
        "review_escalated_at": NOW,
    },
    "no impact computed": {"impact_amount": None},
    "no rule": {"decision": {"mode": "single", "reason": "no threshold rule covers it: a human decides"}},
}


def _shaped(proposal, shape: dict):
    users = get_user_model().objects
    for name, value in shape.items():
        if name in ("decided_by", "reviewed_by"):
            value = users.get(username=value)
        setattr(proposal, name, value)
    return proposal


@pytest.mark.parametrize("grants", ["impact shown", "impact hidden"])
def test_the_body_is_the_serializer_s_to_the_byte(crm_demo, grants):
    if grants == "impact hidden":
        narrow()
    made = propose_limit("5000.00")
    for name, shape in SHAPES.items():
        proposal = _shaped(Proposal.objects.get(pk=made.pk), shape)
        expected = as_json(ProposalSerializer(proposal, context={READ_GRANTS: ReadGrants()}).data)
        # Same values and same types (a Decimal or a datetime left in would only show once stored or sent).
        assert repr(proposal_body(proposal)) == repr(expected), name


def test_a_hidden_impact_shows_no_amount_in_the_body(crm_demo):
    narrow()
    body = proposal_body(propose_limit("5000.00"))
    assert body["impact"]["amount"] is None and body["decision"]["band"] is None
    assert "3000" not in repr(body)
