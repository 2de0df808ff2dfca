"""The way back in the admin: the confirmed kill switch, planning and running a reversal, drills — and who may."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from approvals.choices import ProposalStatus
from approvals.models import Proposal, Reversal, ReversalStep
from audit.models import AuditEvent
from governance.models import Agent, GlobalSwitch, System
from tests.approvals.test_rollback import execute, propose

pytestmark = pytest.mark.django_db
User = get_user_model()


def switch_url(**target: str) -> str:
    from urllib.parse import urlencode

    return reverse("admin:approvals_kill_switch") + ("?" + urlencode(target) if target else "")


def test_the_kill_switch_page_says_what_it_will_do_and_needs_a_reason_and_a_confirmation(demo, client):
    client.force_login(User.objects.get(username="operator"))
    page = client.get(switch_url(agent="collections-agent")).content.decode()
    assert "is off" in page and "Turn the kill switch ON" in page and "refuses the next request" in page

    unconfirmed = client.post(switch_url(agent="collections-agent"), {"reason": "looping"})
    assert unconfirmed.status_code == 200
    no_reason = client.post(switch_url(agent="collections-agent"), {"reason": "", "confirm": "on"})
    assert no_reason.status_code == 200
    assert Agent.objects.get(slug="collections-agent").is_active

    done = client.post(switch_url(agent="collections-agent"), {"reason": "looping", "confirm": "on"})
    assert done.status_code == 302
    assert not Agent.objects.get(slug="collections-agent").is_active
    page = client.get(switch_url(agent="collections-agent")).content.decode()
    assert "is <strong>ON</strong>: “looping”" in page and "Turn the kill switch OFF" in page
    client.post(switch_url(agent="collections-agent"), {"reason": "fixed", "confirm": "on"})
    assert Agent.objects.get(slug="collections-agent").is_active
    assert AuditEvent.objects.filter(verb__in=["kill_switch_on", "kill_switch_off"]).count() == 2


def test_only_operators_superusers_and_owners_reach_the_switch(demo, client, f):
    from governance.choices import Role

    client.force_login(f.UserFactory(username="casey", roles=[Role.AUDITORS]))
    assert client.get(switch_url(agent="collections-agent")).status_code == 403
    assert client.post(switch_url(), {"reason": "x", "confirm": "on"}).status_code == 403
    client.force_login(User.objects.get(username="owner"))  # owns the agent and the CRM, not everything
    assert client.get(switch_url(system="crm")).status_code == 200
    assert client.get(switch_url()).status_code == 403
    client.force_login(User.objects.get(username="admin"))
    assert client.post(switch_url(), {"reason": "incident", "confirm": "on"}).status_code == 302
    assert GlobalSwitch.is_engaged() == (True, "incident")
    assert client.get(switch_url(agent="nobody")).status_code == 404


@pytest.mark.slow
def test_plan_then_run_a_reversal_from_the_admin(crm_demo, client):
    agent = Agent.objects.get(slug="collections-agent")
    execute(propose(agent, "update_credit_limit", {"credit_limit": "2300.00"}))
    execute(propose(agent, "send_statement", {"period": "2026-10"}))
    client.force_login(User.objects.get(username="operator"))

    form = client.get(reverse("admin:approvals_reversal_plan") + "?agent=collections-agent").content.decode()
    assert 'id="moving-warning"' in form  # the switch is off: the window is moving
    planned = client.post(reverse("admin:approvals_reversal_plan") + "?agent=collections-agent", {"hours": "24"})

    reversal = Reversal.objects.get()
    assert planned.status_code == 302 and planned["Location"].endswith(f"/{reversal.pk}/change/")
    page = client.get(planned["Location"]).content.decode()
    assert 'id="run-submit"' in page and "A statement e-mail that has been sent cannot be unsent." in page
    assert Proposal.objects.filter(status=ProposalStatus.EXECUTED).count() == 2  # planning changed nothing

    run = client.post(reverse("admin:approvals_reversal_run", args=[reversal.pk]))

    assert run.status_code == 302
    reversal.refresh_from_db()
    assert reversal.status == Reversal.Status.RUNNING
    page = client.get(reverse("admin:approvals_reversal_change", args=[reversal.pk])).content.decode()
    assert 'http-equiv="refresh"' in page and 'id="reversal-progress"' in page and 'id="run-submit"' not in page
    again = client.post(reverse("admin:approvals_reversal_run", args=[reversal.pk]), follow=True)
    assert "is running, not planned" in again.content.decode()
    assert reversal.steps.filter(kind=ReversalStep.Kind.NOT_REVERSIBLE).count() == 1


def test_people_who_may_not_reverse_are_refused(demo, client, f):
    from governance.choices import Role

    client.force_login(f.UserFactory(username="dana", roles=[Role.APPROVERS]))
    assert client.get(reverse("admin:approvals_reversal_plan") + "?agent=collections-agent").status_code == 403
    assert client.post(reverse("admin:approvals_reversal_plan") + "?system=crm", {"hours": "24"}).status_code == 403
    assert not Reversal.objects.exists()


def test_the_drill_page_offers_staging_systems_and_refuses_others(demo, client):
    client.force_login(User.objects.get(username="admin"))
    page = client.get(reverse("admin:approvals_drill_changelist")).content.decode()
    assert 'id="drill-form"' in page and "crm-staging" in page
    legacy = System.objects.get(slug="legacy-inventory")
    response = client.post(reverse("admin:approvals_drill_run"), {"system": legacy.pk}, follow=True)
    assert "without a staging twin" in response.content.decode()
