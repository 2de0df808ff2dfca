"""The readiness checklist, its command, and the gate on production writes (with the superuser's audited override)."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from approvals.models import Drill
from approvals.readiness import readiness
from audit.models import AuditEvent
from connectors.models import AgentCredential, Credential
from governance.choices import Access, WriteMode
from governance.models import Agent, Resource, ScopeGrant, System, ThresholdBand

pytestmark = pytest.mark.django_db
User = get_user_model()


def passed_drill(system_slug: str = "crm-staging", *, days_ago: float = 1) -> Drill:
    finished = timezone.now() - timedelta(days=days_ago)
    drill = Drill.objects.create(system=System.objects.get(slug=system_slug), passed=True, channel="command")
    Drill.objects.filter(pk=drill.pk).update(started_at=finished, finished_at=finished)
    return drill


def items(agent: Agent) -> dict[str, tuple[bool, str]]:
    return {item.key: (item.ok, item.reason) for item in readiness(agent).items}


def readiness_command(slug: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("readiness", slug, stdout=out)
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


def test_the_demo_agent_lacks_only_a_recent_drill_and_passes_once_one_passed(demo):
    agent = Agent.objects.get(slug="collections-agent")
    checklist = items(agent)
    assert {key for key, (ok, _) in checklist.items() if not ok} == {"drill"}
    assert "no rollback drill on crm-staging passed in the last 30 days" in checklist["drill"][1]
    code, out = readiness_command("collections-agent")
    assert code == 1 and "[FAIL] A rollback drill passed recently" in out and "NOT ready" in out

    passed_drill(days_ago=29)
    code, out = readiness_command("collections-agent")
    assert code == 0 and "is ready for production writes" in out

    Drill.objects.update(finished_at=timezone.now() - timedelta(days=31))  # too old to count
    assert not readiness(agent).ok


def test_each_item_fails_for_its_own_reason(demo):
    agent = Agent.objects.get(slug="collections-agent")
    passed_drill()
    crm = System.objects.get(slug="crm")
    System.objects.filter(pk=crm.pk).update(rollback_contact="")
    AgentCredential.objects.filter(agent=agent).delete()  # back on the system's shared account
    Credential.objects.filter(system=crm).update(is_shared=True, last_rotated_at=timezone.now() - timedelta(days=91))
    ThresholdBand.objects.filter(rule__system=crm, rule__action_type__name="set_status").update(sla=timedelta(hours=8))
    ScopeGrant.objects.filter(agent=agent, access=Access.READ, system=crm).update(justification=" ")

    checklist = items(agent)

    assert checklist["owners"] == (False, "crm has no rollback contact")
    assert "it would write to crm with the system's shared credential" in checklist["credentials"][1]
    assert "crm's credential is shared with people or other software" in checklist["credentials"][1]
    assert "crm's credential was due for rotation on" in checklist["credentials"][1]
    assert "“Status changes on crm” (crm.set_status) is not signed off" in checklist["rules"][1]
    assert "gives no justification" in checklist["scopes"][1]
    assert checklist["drill"][0] is True


def test_in_its_first_30_days_an_agent_keeps_to_one_workflow(demo):
    agent = Agent.objects.get(slug="collections-agent")
    passed_drill()
    staging = System.objects.get(slug="crm-staging")
    ScopeGrant.objects.create(
        agent=agent,
        system=staging,
        resource=Resource.objects.get(system=staging, name="accounts"),
        access=Access.WRITE,
        actions=["add_note"],
        justification="Also on staging.",
        granted_by=User.objects.get(username="owner"),
    )
    ok, reason = items(agent)["probation"]
    assert not ok and "it writes 2 kinds of record (one workflow at first)" in reason
    Agent.objects.filter(pk=agent.pk).update(created_at=timezone.now() - timedelta(days=31))
    assert "probation" not in items(Agent.objects.get(pk=agent.pk))


def grant_form(agent: Agent, system: System, **extra) -> dict[str, str]:
    return {
        "agent": str(agent.pk),
        "system": str(system.pk),
        "resource": str(Resource.objects.get(system=system, name="accounts").pk),
        "access": "write",
        "fields": "",
        "actions": "add_note",
        "justification": "Adds notes for reports.",
        "expires_at": "",
        "configuration_reason": "Reports need notes.",
        **extra,
    }


def test_a_production_write_grant_is_refused_until_ready_and_a_superuser_may_override_with_a_reason(demo, client):
    reporting = Agent.objects.get(slug="reporting-agent")
    crm = System.objects.get(slug="crm")
    client.force_login(User.objects.get(username="owner"))

    refused = client.post(reverse("admin:governance_scopegrant_add"), grant_form(reporting, crm))

    assert refused.status_code == 200
    page = refused.content.decode()
    assert "is refused until the readiness checklist passes" in page and "no rollback drill on crm-staging" in page
    assert not ScopeGrant.objects.filter(agent=reporting, access=Access.WRITE).exists()
    # A business owner cannot override, even by adding the field to the POST.
    crafted = client.post(
        reverse("admin:governance_scopegrant_add"), grant_form(reporting, crm, readiness_override="trust me")
    )
    assert crafted.status_code == 200 and not ScopeGrant.objects.filter(agent=reporting, access=Access.WRITE).exists()

    client.force_login(User.objects.get(username="admin"))
    overridden = client.post(
        reverse("admin:governance_scopegrant_add"),
        grant_form(reporting, crm, readiness_override="Pilot approved by the CFO, drill booked for Friday"),
    )

    assert overridden.status_code == 302
    assert ScopeGrant.objects.filter(agent=reporting, access=Access.WRITE).exists()
    event = AuditEvent.objects.get(verb="readiness_overridden")
    assert event.agent == reporting and event.actor == "admin"
    assert "Pilot approved by the CFO" in event.summary and event.input["failing"]


def test_a_ready_agent_gets_its_production_write_grant_without_an_override(demo, client):
    passed_drill()
    collections = Agent.objects.get(slug="collections-agent")
    crm = System.objects.get(slug="crm")
    ScopeGrant.objects.filter(agent=collections, access=Access.WRITE).delete()
    client.force_login(User.objects.get(username="owner"))
    response = client.post(reverse("admin:governance_scopegrant_add"), grant_form(collections, crm))
    assert response.status_code == 302
    assert not AuditEvent.objects.filter(verb="readiness_overridden").exists()


def test_switching_a_production_system_to_enabled_is_gated_on_its_writing_agents(demo, client):
    from tests.governance.test_admin import as_form_data

    crm = System.objects.get(slug="crm")
    System.objects.filter(pk=crm.pk).update(write_mode=WriteMode.READ_ONLY)
    crm.refresh_from_db()
    client.force_login(User.objects.get(username="owner"))

    refused = client.post(
        reverse("admin:governance_system_change", args=[crm.pk]), as_form_data(crm, write_mode=WriteMode.ENABLED)
    )

    assert refused.status_code == 200 and "Enabling writes to crm is refused" in refused.content.decode()
    crm.refresh_from_db()
    assert crm.write_mode == WriteMode.READ_ONLY
    passed_drill()
    allowed = client.post(
        reverse("admin:governance_system_change", args=[crm.pk]), as_form_data(crm, write_mode=WriteMode.ENABLED)
    )
    assert allowed.status_code == 302
    crm.refresh_from_db()
    assert crm.write_mode == WriteMode.ENABLED


def test_the_agent_page_shows_the_checklist_with_links_to_fix_it(demo, client):
    agent = Agent.objects.get(slug="collections-agent")
    client.force_login(User.objects.get(username="admin"))
    page = client.get(reverse("admin:governance_agent_change", args=[agent.pk])).content.decode()
    assert "Not ready: production writes are refused." in page
    assert 'class="readiness-fail"' in page and reverse("admin:approvals_drill_changelist") in page
    assert 'id="kill-switch-link"' in page and 'id="autonomy-link"' in page and 'id="reverse-link"' in page
