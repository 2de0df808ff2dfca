"""Configuration in the trail: a person's change of a grant, a band, a write mode or a credential, made through the
real admin forms, is one `configured` event with before/after, the person and the reason, in the agent's (or the
system's) timeline and in the CSV export; a secret never is; a save that changes nothing writes nothing."""

from __future__ import annotations

import csv as csv_module
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from audit.models import AuditEvent
from connectors.models import Credential
from governance.choices import Access
from governance.configuration import REDACTED, field_values
from governance.models import Agent, ScopeGrant, System, ThresholdRule
from tests.governance.test_admin import as_form_data, rule_change_post

pytestmark = pytest.mark.django_db
User = get_user_model()


def url(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


def configured() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(verb="configured").order_by("id"))


@pytest.fixture
def grant(demo) -> ScopeGrant:
    return ScopeGrant.objects.get(agent__slug="reporting-agent", system__slug="crm", access=Access.READ)


def grant_post(grant: ScopeGrant, **changes) -> dict[str, str]:
    data = as_form_data(grant, **changes)
    data["fields"] = ", ".join(changes.get("fields", grant.fields))
    data["actions"] = ", ".join(changes.get("actions", grant.actions))
    return data


def test_a_grant_edited_in_the_admin_is_one_configured_event_in_the_agents_timeline_and_the_csv(client, grant):
    client.force_login(User.objects.get(username="owner"))
    before = list(grant.fields)
    after = [*before, "credit_limit"] if "credit_limit" not in before else before[:-1]
    response = client.post(
        url("governance_scopegrant_change", grant.pk),
        grant_post(grant, fields=after, configuration_reason="Reports now show the credit limit (ticket FIN-88)."),
    )
    assert response.status_code == 302, response.context and response.context["errors"]

    [event] = configured()
    assert (event.agent.slug, event.system.slug, event.person.username) == ("reporting-agent", "crm", "owner")
    assert (event.state_before, event.state_after) == ({"fields": before}, {"fields": after})
    assert event.input["reason"] == "Reports now show the credit limit (ticket FIN-88)."
    assert event.resource == "scopegrant" and event.channel == "admin"

    timeline = client.get(url("audit_agent_timeline", "reporting-agent")).content.decode()
    assert "changed scope grant" in timeline and "ticket FIN-88" in timeline
    assert "fields: " + ", ".join(before) + " → " + ", ".join(after) in timeline.replace("&gt;", ">")

    client.force_login(User.objects.get(username="admin"))
    agent_page = client.get(url("governance_agent_change", event.agent.pk)).content.decode()
    assert url("audit_agent_timeline", "reporting-agent") in agent_page  # the agent's page links its timeline

    csv = b"".join(client.get(url("audit_export_csv") + "?kind=configuration").streaming_content).decode()
    header, *rows = csv.lstrip("\ufeff").splitlines()
    assert header.endswith(",hash,reason,trace_id")  # columns are appended, never moved: readers rely on the order
    [row] = [row for row in csv_module.DictReader(rows, fieldnames=header.split(",")) if "FIN-88" in row["reason"]]
    assert "credit_limit" in row["state_after"]
    assert row["reason"] == "Reports now show the credit limit (ticket FIN-88)."


def test_a_grant_change_without_a_reason_is_refused_and_writes_nothing(client, grant):
    client.force_login(User.objects.get(username="owner"))
    response = client.post(
        url("governance_scopegrant_change", grant.pk), grant_post(grant, fields=["name"], configuration_reason="")
    )
    assert response.status_code == 200
    assert "Say why you change this" in response.content.decode()
    grant.refresh_from_db()
    assert grant.fields != ["name"] and configured() == []


def test_saving_a_grant_unchanged_writes_nothing(client, grant):
    client.force_login(User.objects.get(username="owner"))
    response = client.post(url("governance_scopegrant_change", grant.pk), grant_post(grant))
    assert response.status_code == 302
    assert configured() == []


def test_a_band_edit_is_recorded_on_the_rules_system_with_the_band_before_and_after(client, demo):
    rule = ThresholdRule.objects.get(name="Credit limit changes on crm")
    band = rule.bands.order_by("min_amount")[1]
    client.force_login(User.objects.get(username="owner"))

    refused = client.post(
        url("governance_thresholdrule_change", rule.pk),
        rule_change_post(rule, bands={1: {"sla": timedelta(hours=8)}}, configuration_reason=""),
    )
    assert refused.status_code == 200 and "fill in “Reason for this change”" in refused.content.decode()
    assert configured() == []

    response = client.post(
        url("governance_thresholdrule_change", rule.pk),
        rule_change_post(rule, bands={1: {"sla": timedelta(hours=8)}}, configuration_reason="Approvers are abroad."),
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    [event] = configured()
    label = f"threshold band #{band.pk}"
    assert event.system.slug == "crm" and event.agent is None and event.person.username == "owner"
    assert (event.state_before, event.state_after) == ({label: {"sla": "04:00:00"}}, {label: {"sla": "08:00:00"}})
    assert event.input["reason"] == "Approvers are abroad."
    timeline = client.get(url("audit_system_timeline", "crm")).content.decode()
    assert f"{label} sla: 04:00:00 → 08:00:00" in timeline.replace("&gt;", ">") and "Approvers are abroad." in timeline


def test_a_write_mode_change_needs_a_reason_and_is_recorded_with_before_and_after(client, demo):
    crm = System.objects.get(slug="crm")
    client.force_login(User.objects.get(username="owner"))
    refused = client.post(
        url("governance_system_change", crm.pk), as_form_data(crm, write_mode="read_only", configuration_reason="")
    )
    assert refused.status_code == 200 and configured() == []

    response = client.post(
        url("governance_system_change", crm.pk),
        as_form_data(crm, write_mode="read_only", configuration_reason="Quarter close: no writes until Monday."),
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    [event] = configured()
    assert (event.state_before, event.state_after) == ({"write_mode": "enabled"}, {"write_mode": "read_only"})
    assert event.system == crm and event.person.username == "owner"
    assert "Quarter close" in event.input["reason"]


def test_a_credential_secret_never_reaches_the_trail_or_the_export(client, demo):
    secret = "s3cr3t-value-never-logged-XYZ"
    admin = User.objects.get(username="admin")
    client.force_login(admin)
    credential = Credential.objects.get(system__slug="crm")
    data = as_form_data(credential, is_shared=True, secret=secret, configuration_reason="Shared for the pilot.")
    data.pop("ciphertext", None)
    response = client.post(url("connectors_credential_change", credential.pk), data)
    assert response.status_code == 302, response.context and response.context["errors"]

    [event] = configured()
    assert (event.state_before, event.state_after) == ({"is_shared": False}, {"is_shared": True})
    assert event.system.slug == "crm"
    everything = (
        " ".join(f"{e.summary} {e.input} {e.state_before} {e.state_after}" for e in AuditEvent.objects.all())
        + b"".join(client.get(url("audit_export_csv")).streaming_content).decode()
    )
    assert secret not in everything
    assert credential.ciphertext not in everything
    # Whatever an admin leaves out, a snapshot never holds a secret column's value.
    credential.refresh_from_db()
    assert field_values(credential)["ciphertext"] == REDACTED


def test_an_added_grant_lists_every_field_and_a_deleted_one_what_it_was(client, demo):
    client.force_login(User.objects.get(username="admin"))
    grant = ScopeGrant.objects.get(agent__slug="collections-agent", system__slug="crm", access=Access.READ)
    response = client.post(url("governance_scopegrant_delete", grant.pk), {"post": "yes"})
    assert response.status_code == 302
    [event] = configured()
    assert event.input["action"] == "deleted" and event.state_after is None
    assert event.state_before["justification"] == grant.justification
    assert event.agent == Agent.objects.get(slug="collections-agent")

    data = grant_post(grant, configuration_reason="Back, narrower.", fields=["name"])
    assert client.post(url("governance_scopegrant_add"), data).status_code == 302
    added = configured()[-1]
    assert added.input["action"] == "added" and added.state_before is None
    assert added.state_after["fields"] == ["name"] and added.state_after["granted_by"] == "admin"
    assert added.agent.slug == "collections-agent" and added.input["reason"] == "Back, narrower."
