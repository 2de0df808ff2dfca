"""Drill leftovers on the home pages: the drill agent's writes and reversals are labelled and kept apart, never
counted as real agents' activity (console/dashboard/drills.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from approvals.drills import DRILL_AGENT, rollback_drill
from approvals.execution import proposal_claim, proposal_record_failure
from approvals.models import Proposal
from audit.choices import Channel
from console.dashboard import dashboard_for
from console.dashboard.charts import NO_RULE_LABEL
from governance.choices import Access
from governance.models import Agent, Resource, System
from sandbox.testing import crm_control
from tests.factories import ScopeGrantFactory, execute, propose, propose_limit

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

User = get_user_model()


def failed_drill_write() -> Proposal:
    """A write of the drill agent that failed, as a drill against a broken staging system leaves one. Made through
    the services: the agent is given a grant on crm-staging (drills need none) to propose it."""
    agent = Agent.objects.get(slug=DRILL_AGENT)
    resource = Resource.objects.get(system__slug="crm-staging", name="accounts")
    ScopeGrantFactory(agent=agent, resource=resource, access=Access.WRITE, actions=["update_credit_limit"])
    proposal = propose(agent, "update_credit_limit", {"credit_limit": "2001.00"}, system="crm-staging")
    assert proposal.status == "approved"  # auto; the worker never sees it (this transaction never commits)
    proposal_claim(proposal_id=proposal.pk)
    return proposal_record_failure(proposal_id=proposal.pk, reason="crm-staging answered 500.")


def test_drill_leftovers_are_labelled_and_left_out_of_real_activity(crm_demo, stack_processes, client):
    """Two drills (one passed: three writes reversed; one failed at its first read) and a failed drill write, beside
    one real executed raise."""
    assert rollback_drill(system=System.objects.get(slug="crm"), channel=Channel.COMMAND).passed
    crm_control(stack_processes.crm_staging_url, "/_control/mode", {"mode": "error", "status": 500})
    try:
        assert not rollback_drill(system=System.objects.get(slug="crm"), channel=Channel.COMMAND).passed
    finally:
        crm_control(stack_processes.crm_staging_url, "/_control/mode", {"mode": "normal"})
    assert sorted(Proposal.objects.filter(agent__slug=DRILL_AGENT).values_list("status", flat=True)) == ["reversed"] * 3
    assert failed_drill_write().status == "failed"
    execute(propose_limit("2400.00"))  # the one real write: 2,000.00 → 2,400.00, auto-approved

    board = dashboard_for(User.objects.get(username="operator"))

    charts = board.charts
    assert [(bar.label, bar.total) for bar in charts.bands] == [("Auto-executed", 1)]
    assert NO_RULE_LABEL not in [bar.label for bar in charts.bands]
    assert charts.proposed == 1 and charts.reversals == 0 and charts.failures == 0
    assert (charts.drills.total, charts.drills.passed, charts.drills.failed) == (2, 1, 1)
    assert charts.drills.url == reverse("admin:approvals_drill_changelist")
    assert board.failures.total == 0
    assert DRILL_AGENT not in [row.agent.slug for row in board.readiness.agents]
    assert board.readiness.total == 2  # collections-agent and reporting-agent

    client.force_login(User.objects.get(username="auditor"))
    page = client.get(reverse("admin:index")).content.decode()
    assert '<span class="dash-drill-badge">drill</span>' in page
    assert "Rollback drills on staging: 2</a> (1 passed, " in page
    assert "not counted in the charts above" in page and NO_RULE_LABEL not in page
