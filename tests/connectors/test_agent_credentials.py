"""No shared accounts at the system of record: an agent's own credential at a system is used for its reads, writes
and reversals there, so the system's own log names it; the shared credential still serves agents without one, and
counts against their readiness. Set, rotated and removed by the system's owner, each audited.

Against the session's sample CRM, which names the account behind each accepted request (`/_stats`
`requests_by_caller`, and its log line `caller=NAME`).
"""

from __future__ import annotations

import io
import secrets
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from approvals.killswitch import SwitchTarget, kill_switch_on
from approvals.readiness import production_writes_pause, readiness
from approvals.reversal import reversal_plan
from approvals.reversal_rounds import reversal_run_here
from audit.models import AuditEvent
from connectors.models import AgentCredential, Credential
from connectors.services import credential_set, credentials_tell_rotation_due
from governance.models import Agent, System
from sandbox.testing import crm_control
from tests.factories import execute, propose

User = get_user_model()
OWN = "collections-own-" + secrets.token_hex(8)


def callers(url: str) -> dict[str, int]:
    return crm_control(url, "/_stats")["requests_by_caller"]


@pytest.fixture
def own_account(crm_demo, stack_processes):
    """The CRM gives the collections agent an account of its own beside the service account; Gatehouse vaults it."""
    crm = System.objects.get(slug="crm")
    crm_control(stack_processes.crm_url, "/_control/token", {"tokens": {"service": stack_processes.crm_token}})
    crm_control(
        stack_processes.crm_url,
        "/_control/token",
        {"tokens": {"service": stack_processes.crm_token, "collections-agent": OWN}},
    )
    agent = Agent.objects.get(slug="collections-agent")
    credential_set(system=crm, agent=agent, secret=OWN, actor=crm.owner, channel="admin")
    yield crm, agent
    crm_control(stack_processes.crm_url, "/_control/reset", {})


@pytest.mark.django_db
def test_an_agents_reads_writes_and_reversals_go_with_its_own_account_and_the_system_names_it(
    own_account, stack_processes, agent_client, monkeypatch
):
    _, agent = own_account
    url = stack_processes.crm_url
    monkeypatch.setattr("approvals.reversal_rounds.ROUND_BACKOFF", timedelta(seconds=0.05))

    assert agent_client("collections-agent").get("/api/v1/systems/crm/accounts/4471").status_code == 200
    assert callers(url) == {"collections-agent": 1}
    assert agent_client("reporting-agent").get("/api/v1/systems/crm/accounts/4471").status_code == 200
    assert callers(url) == {"collections-agent": 1, "service": 1}  # no account of its own: the shared one

    raised = execute(propose(agent, "update_credit_limit", {"credit_limit": "2300.00"}))
    assert raised.status == "executed"
    after_write = callers(url)
    assert after_write["collections-agent"] >= 3 and after_write["service"] == 1  # its read, the write, the check

    # The CRM retires the shared service account: the agent with its own keeps working, the other is refused.
    crm_control(url, "/_control/token", {"tokens": {"collections-agent": OWN}})
    assert agent_client("collections-agent").get("/api/v1/systems/crm/accounts/4472").status_code == 200
    refused = agent_client("reporting-agent").get("/api/v1/systems/crm/accounts/4472")
    assert refused.status_code == 503 and "401" in refused.json()["detail"] and OWN not in refused.text

    # And the reversal of its write goes with the agent's account too: the shared one is no longer accepted.
    kill_switch_on(target=SwitchTarget(agent=agent), reason="undo it", channel="command")
    reversal = reversal_run_here(reversal_id=reversal_plan(agent=agent, hours=24, channel="command").pk)
    assert reversal.status == "done"
    assert crm_control(url, "/_control/set", {"account": "4471", "fields": {}})["credit_limit"] == "2000.00"
    assert callers(url)["service"] == 1


@pytest.mark.django_db
def test_the_shared_credential_counts_against_the_readiness_of_an_agent_that_writes_with_it(demo):
    agent = Agent.objects.get(slug="collections-agent")
    item = next(item for item in readiness(agent).items if item.key == "credentials")
    assert item.ok, item.reason  # the demo gives it an account of its own at the CRM

    AgentCredential.objects.filter(agent=agent).delete()
    item = next(item for item in readiness(agent).items if item.key == "credentials")
    assert not item.ok
    assert "it would write to crm with the system's shared credential: give it its own" in item.reason


@pytest.mark.django_db
def test_an_agents_own_credential_overdue_for_rotation_pauses_its_writes_not_the_others(demo):
    crm = System.objects.get(slug="crm")
    System.objects.filter(pk=crm.pk).update(environment="production", write_mode="enabled")
    crm.refresh_from_db()
    collections = Agent.objects.get(slug="collections-agent")
    reporting = Agent.objects.get(slug="reporting-agent")
    AgentCredential.objects.filter(agent=collections, system=crm).update(
        last_rotated_at=timezone.now() - timedelta(days=91)
    )
    assert "the credential of collections-agent at crm was due for rotation" in production_writes_pause(
        crm, agent=collections
    )
    assert production_writes_pause(crm, agent=reporting) is None  # the shared one is current


def add_in_admin(client, system: System, agent: Agent, secret: str):
    """The add form of an agent's credential, posted as the signed-in person would."""
    form = {"system": system.pk, "agent": agent.pk, "kind": "bearer", "rotation_interval": "90 00:00:00"}
    return client.post(reverse("admin:connectors_agentcredential_add"), {**form, "secret": secret})


@pytest.mark.django_db
def test_only_the_systems_owner_or_a_superuser_sets_an_agents_credential_and_each_change_is_audited(demo, client):
    crm = System.objects.get(slug="crm")
    reporting = Agent.objects.get(slug="reporting-agent")
    for username in ("operator", "approver", "auditor"):
        with pytest.raises(PermissionDenied):
            credential_set(
                system=crm, agent=reporting, secret="x" * 20, actor=User.objects.get(username=username), channel="api"
            )
        client.force_login(User.objects.get(username=username))
        assert add_in_admin(client, crm, reporting, "y" * 20).status_code == 403
    assert not AgentCredential.objects.filter(agent=reporting).exists()

    client.force_login(User.objects.get(username="owner"))
    page = add_in_admin(client, crm, reporting, "z" * 20)
    assert page.status_code == 302, page.content.decode()[:2000]
    credential = AgentCredential.objects.get(agent=reporting, system=crm)
    assert credential.reveal() == "z" * 20
    event = AuditEvent.objects.filter(verb="credential_set", agent=reporting).latest("id")
    assert event.actor == "owner" and event.input["agent"] == "reporting-agent" and "z" * 20 not in str(event.input)

    page = client.post(reverse("admin:connectors_agentcredential_delete", args=[credential.pk]), {"post": "yes"})
    assert page.status_code == 302
    assert not AgentCredential.objects.filter(pk=credential.pk).exists()
    removed = AuditEvent.objects.filter(verb="credential_set", agent=reporting).latest("id")
    assert removed.outcome == "removed" and removed.actor == "owner"


@pytest.mark.django_db
def test_an_agents_own_credential_is_rotated_by_command_and_its_due_date_told_once(
    own_account, mailoutbox, django_capture_on_commit_callbacks
):
    crm, agent = own_account
    out = io.StringIO()
    call_command("rotate_credential", "crm", "--agent", "collections-agent", stdin=io.StringIO(OWN + "\n"), stdout=out)
    assert "Rotated the credential of collections-agent at crm" in out.getvalue()
    assert AgentCredential.objects.get(agent=agent, system=crm).reveal() == OWN
    assert Credential.objects.get(system=crm).reveal() != OWN  # the shared one untouched

    AgentCredential.objects.filter(agent=agent).update(last_rotated_at=timezone.now() - timedelta(days=85))
    with django_capture_on_commit_callbacks(execute=True):
        assert credentials_tell_rotation_due() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert credentials_tell_rotation_due() == 0  # once a day
    assert mailoutbox[-1].subject == "[Gatehouse] Credential of collections-agent at crm is due for rotation"
    assert "rotate_credential crm --agent collections-agent" in mailoutbox[-1].body
