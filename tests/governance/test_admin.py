"""The admin for each role: what a role may change, and refusals that hold against crafted POSTs, not only hidden UI."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils.duration import duration_string

from audit.models import AuditEvent
from audit.services import audit_record
from governance.choices import AgentStatus, Role, WriteMode
from governance.models import ScopeGrant, ThresholdBand, ThresholdRule
from governance.services import threshold_rule_sign_off
from tests import factories

pytestmark = pytest.mark.django_db

VIEW_ONLY_ROLES = [Role.APPROVERS, Role.REVIEWERS, Role.AUDITORS]


# --- helpers ------------------------------------------------------------------------------------------------------


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


def as_form_data(instance, **changes) -> dict[str, str]:
    """The values an admin form of `instance` submits unchanged (as a browser would), with `changes` applied."""
    data = {}
    for name, value in {**model_to_dict(instance), **changes}.items():
        if value is None or value is False:
            value = ""  # an empty field, an unticked box
        elif value is True:
            value = "on"
        elif isinstance(value, timedelta):
            value = duration_string(value)
        elif isinstance(value, dict | list):
            value = json.dumps(value)
        data[name] = str(value)
    data.setdefault("configuration_reason", "Test change.")  # the reason a governed object's change form asks for
    return data


def rule_change_post(rule: ThresholdRule, bands: dict[int, dict] | None = None, **changes) -> dict[str, str]:
    """The rule's change form as it stands, bands inline included; `bands` maps a band's position to its changes."""
    current = list(rule.bands.order_by("min_amount"))
    data = as_form_data(rule, **changes)
    data |= {
        "bands-TOTAL_FORMS": str(len(current)),
        "bands-INITIAL_FORMS": str(len(current)),
        "bands-MIN_NUM_FORMS": "1",
        "bands-MAX_NUM_FORMS": "1000",
    }
    for index, band in enumerate(current):
        band_data = as_form_data(band, **(bands or {}).get(index, {}))
        data |= {f"bands-{index}-{name}": value for name, value in band_data.items()}
        # A field with a callable default (the band's condition, default {}) is rendered with a hidden copy of its
        # initial value, which the browser sends back; without it, Django sees the field as changed.
        data[f"initial-bands-{index}-condition"] = json.dumps(band.condition)
    return data


def login(client, user):
    client.force_login(user)
    return client


def band_terms(rule: ThresholdRule) -> list[dict]:
    return [band.terms() for band in ThresholdBand.objects.filter(rule=rule).order_by("min_amount", "pk")]


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture
def owner():
    return factories.UserFactory(username="olivia", roles=[Role.BUSINESS_OWNERS])


@pytest.fixture
def other_owner():
    return factories.UserFactory(username="oscar", roles=[Role.BUSINESS_OWNERS])


@pytest.fixture
def superuser():
    return factories.UserFactory(username="root", is_superuser=True)


@pytest.fixture
def system(owner):
    return factories.SystemFactory(slug="owned-crm", owner=owner)


@pytest.fixture
def other_system(other_owner):
    return factories.SystemFactory(slug="foreign-erp", owner=other_owner)


@pytest.fixture
def rule(system, owner):
    rule = factories.ThresholdRuleFactory(system=system, name="CRM default")
    approver = factories.UserFactory(username="amy", roles=[Role.APPROVERS])
    factories.standard_bands(rule, approver, factories.GroupFactory(name="Second reviewers"))
    return rule


@pytest.fixture
def two_band_rule(system, owner):
    """0–500 auto, 500–∞ one approver."""
    rule = factories.ThresholdRuleFactory(system=system, name="Two bands")
    factories.ThresholdBandFactory(rule=rule, min_amount=Decimal(0), max_amount=Decimal(500), mode="auto")
    factories.ThresholdBandFactory(
        rule=rule, min_amount=Decimal(500), mode="single", approver=owner, sla=timedelta(hours=4)
    )
    return rule


# --- business owners ----------------------------------------------------------------------------------------------


def test_business_owner_saves_a_change_to_their_own_rule_and_history_names_them_with_origin_admin(client, owner, rule):
    login(client, owner)
    change_url = url("governance_thresholdrule_change", rule.pk)

    page = client.get(change_url)
    assert page.status_code == 200
    assert b'name="_save"' in page.content

    response = client.post(change_url, rule_change_post(rule, name="CRM default, tightened"))

    assert response.status_code == 302, response.context and response.context["errors"]
    rule.refresh_from_db()
    assert rule.name == "CRM default, tightened"
    record = rule.history.first()
    assert record.name == "CRM default, tightened"
    assert record.history_user == owner
    assert "origin=admin" in record.history_change_reason


def test_another_business_owner_sees_the_rule_read_only_and_a_crafted_change_is_refused(client, other_owner, rule):
    login(client, other_owner)
    change_url = url("governance_thresholdrule_change", rule.pk)
    before = band_terms(rule)

    page = client.get(change_url)
    assert page.status_code == 200  # business owners read every rule
    assert b'name="_save"' not in page.content
    assert page.context["has_change_permission"] is False

    response = client.post(
        change_url, rule_change_post(rule, name="Hijacked", bands={0: {"max_amount": "100000", "mode": "auto"}})
    )

    assert response.status_code == 403
    rule.refresh_from_db()
    assert rule.name == "CRM default"
    assert band_terms(rule) == before


def test_another_business_owner_cannot_delete_the_rule_by_url_or_by_bulk_action(client, other_owner, rule):
    login(client, other_owner)

    assert client.post(url("governance_thresholdrule_delete", rule.pk), {"post": "yes"}).status_code == 403
    bulk = client.post(
        url("governance_thresholdrule_changelist"),
        {"action": "delete_selected", "_selected_action": [rule.pk], "post": "yes"},
    )

    assert bulk.status_code == 403
    assert ThresholdRule.objects.filter(pk=rule.pk).exists()
    assert rule.bands.count() == 3


def test_business_owner_adding_a_grant_is_offered_only_their_own_systems(client, owner, system, other_system):
    login(client, owner)

    page = client.get(url("governance_scopegrant_add"))

    assert page.status_code == 200
    system_select = re.search(r'<select name="system".*?</select>', page.content.decode(), re.DOTALL)
    assert system_select is not None
    assert "owned-crm" in system_select.group()
    assert "foreign-erp" not in system_select.group()


def test_business_owner_grant_on_another_owners_system_is_rejected_with_a_form_error_and_nothing_saved(
    client, owner, system, other_system
):
    login(client, owner)
    agent = factories.AgentFactory(slug="helper-bot")
    foreign_resource = factories.ResourceFactory(system=other_system)
    crafted = {
        "agent": agent.pk,
        "system": other_system.pk,
        "resource": foreign_resource.pk,
        "access": "read",
        "fields": "",
        "actions": "",
        "justification": "Reads accounts.",
    }

    response = client.post(url("governance_scopegrant_add"), crafted)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "system" in errors
    assert "Select a valid choice" in response.content.decode()
    assert not ScopeGrant.objects.exists()


def test_business_owner_grant_on_their_own_system_is_saved_with_them_as_granter(client, owner, system):
    login(client, owner)
    agent = factories.AgentFactory(slug="helper-bot")
    resource = factories.ResourceFactory(system=system)
    form = {
        "agent": agent.pk,
        "system": system.pk,
        "resource": resource.pk,
        "access": "read",
        "fields": "name, email",
        "actions": "",
        "justification": "Reads accounts.",
        "configuration_reason": "Helper bot reads accounts for the weekly report.",
    }

    response = client.post(url("governance_scopegrant_add"), form)

    assert response.status_code == 302
    grant = ScopeGrant.objects.get()
    assert (grant.system, grant.fields, grant.granted_by) == (system, ["name", "email"], owner)


def test_business_owner_cannot_attach_a_new_rule_to_another_owners_system(client, owner, system, other_system):
    login(client, owner)
    crafted = {
        "system": other_system.pk,
        "action_type": "",
        "name": "Sneaky",
        "currency": "USD",
        "max_age": "3 00:00:00",
        "owner_may_not_approve": "on",
        "bands-TOTAL_FORMS": "1",
        "bands-INITIAL_FORMS": "0",
        "bands-MIN_NUM_FORMS": "1",
        "bands-MAX_NUM_FORMS": "1000",
        "bands-0-min_amount": "0",
        "bands-0-max_amount": "",
        "bands-0-mode": "auto",
        "bands-0-review_timing": "after",
        "bands-0-review_within": "1 00:00:00",
    }

    response = client.post(url("governance_thresholdrule_add"), crafted)

    assert response.status_code == 200
    assert "system" in response.context["adminform"].form.errors
    assert not ThresholdRule.objects.exists()
    assert not ThresholdBand.objects.exists()


def test_business_owner_changes_their_own_system_but_cannot_hand_it_to_someone_else(client, owner, other_owner, system):
    login(client, owner)

    response = client.post(
        url("governance_system_change", system.pk),
        as_form_data(system, write_mode=WriteMode.PROPOSE_ONLY, owner=other_owner.pk),
    )

    assert response.status_code == 302
    system.refresh_from_db()
    assert system.write_mode == WriteMode.PROPOSE_ONLY
    assert system.owner == owner


def test_business_owner_cannot_change_another_owners_system(client, owner, other_system):
    login(client, owner)

    response = client.post(
        url("governance_system_change", other_system.pk), as_form_data(other_system, write_mode=WriteMode.DISABLED)
    )

    assert response.status_code == 403
    other_system.refresh_from_db()
    assert other_system.write_mode == WriteMode.ENABLED


# --- approvers, reviewers, auditors -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.APPROVERS, Role.REVIEWERS])
def test_approvers_and_reviewers_list_rules_but_cannot_change_add_or_delete_them(client, role, rule):
    login(client, factories.UserFactory(username="viewer", roles=[role]))

    changelist = client.get(url("governance_thresholdrule_changelist"))
    change = client.post(url("governance_thresholdrule_change", rule.pk), rule_change_post(rule, name="Changed"))
    add_page = client.get(url("governance_thresholdrule_add"))
    add = client.post(url("governance_thresholdrule_add"), rule_change_post(rule, name="Copy"))
    delete = client.post(url("governance_thresholdrule_delete", rule.pk), {"post": "yes"})

    assert changelist.status_code == 200
    assert "CRM default" in changelist.content.decode()
    assert (change.status_code, add_page.status_code, add.status_code, delete.status_code) == (403, 403, 403, 403)
    rule.refresh_from_db()
    assert rule.name == "CRM default"
    assert ThresholdRule.objects.count() == 1


def test_auditor_reads_the_audit_trail(client):
    audit_record(verb="read", actor=None, channel="admin", summary="Auditors can read this")
    login(client, factories.UserFactory(username="audrey", roles=[Role.AUDITORS]))

    response = client.get(url("audit_auditevent_changelist"))

    assert response.status_code == 200
    assert "Auditors can read this" in response.content.decode()


@pytest.mark.parametrize("who", ["auditor", "superuser"])
def test_nobody_adds_changes_or_deletes_audit_events_in_the_admin(client, who, superuser):
    event = audit_record(verb="read", actor=None, channel="admin", summary="x")
    user = superuser if who == "superuser" else factories.UserFactory(username="audrey", roles=[Role.AUDITORS])
    login(client, user)

    add_page = client.get(url("audit_auditevent_add"))
    add = client.post(url("audit_auditevent_add"), {"verb": "read", "channel": "admin", "summary": "forged"})
    change = client.post(url("audit_auditevent_change", event.pk), {"summary": "rewritten"})
    delete = client.post(url("audit_auditevent_delete", event.pk), {"post": "yes"})

    assert (add_page.status_code, add.status_code, change.status_code, delete.status_code) == (403, 403, 403, 403)
    assert list(AuditEvent.objects.values_list("summary", flat=True)) == ["x"]


@pytest.mark.parametrize("role", VIEW_ONLY_ROLES)
def test_view_only_roles_cannot_change_a_system(client, role, system):
    login(client, factories.UserFactory(username="viewer", roles=[role]))

    response = client.post(
        url("governance_system_change", system.pk), as_form_data(system, write_mode=WriteMode.DISABLED)
    )

    assert response.status_code == 403
    system.refresh_from_db()
    assert system.write_mode == WriteMode.ENABLED


# --- operators ----------------------------------------------------------------------------------------------------


@pytest.fixture
def operator():
    return factories.UserFactory(username="opal", roles=[Role.OPERATORS])


def test_operator_changes_the_write_mode_of_a_system_someone_else_owns_but_not_its_owner(
    client, operator, owner, system
):
    login(client, operator)

    response = client.post(
        url("governance_system_change", system.pk),
        as_form_data(system, write_mode=WriteMode.READ_ONLY, owner=operator.pk),
    )

    assert response.status_code == 302
    system.refresh_from_db()
    assert system.write_mode == WriteMode.READ_ONLY
    assert system.owner == owner
    assert "origin=admin" in system.history.first().history_change_reason


def test_operator_stops_an_agent_someone_else_owns_with_the_kill_switch_not_the_form(client, operator):
    agent = factories.AgentFactory(slug="rogue-bot")
    login(client, operator)
    form = as_form_data(agent, status=AgentStatus.DISABLED, disabled_reason="Looping on refunds")
    form |= {"tokens-TOTAL_FORMS": "0", "tokens-INITIAL_FORMS": "0"}
    client.post(url("governance_agent_change", agent.pk), form)
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE  # the form does not stop agents: no reason, no audit, no held work

    response = client.post(
        url("approvals_kill_switch") + "?agent=rogue-bot", {"reason": "Looping on refunds", "confirm": "on"}
    )

    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.status, agent.disabled_reason) == (AgentStatus.DISABLED, "Looping on refunds")
    assert AuditEvent.objects.get(verb="kill_switch_on").agent == agent


def test_operator_cannot_change_add_or_delete_a_threshold_rule(client, operator, rule):
    login(client, operator)
    before = band_terms(rule)

    change = client.post(
        url("governance_thresholdrule_change", rule.pk), rule_change_post(rule, bands={2: {"mode": "auto"}})
    )
    add = client.post(url("governance_thresholdrule_add"), rule_change_post(rule, name="Copy"))
    delete = client.post(url("governance_thresholdrule_delete", rule.pk), {"post": "yes"})

    assert (change.status_code, add.status_code, delete.status_code) == (403, 403, 403)
    assert band_terms(rule) == before
    assert ThresholdRule.objects.count() == 1


# --- history ------------------------------------------------------------------------------------------------------


def test_superuser_post_to_a_historical_record_does_not_revert_the_rule(client, superuser, rule):
    original = rule.history.earliest()
    rule.name = "Renamed"
    rule.save()
    login(client, superuser)
    history_url = url("governance_thresholdrule_simple_history", rule.pk, original.history_id)

    page = client.get(history_url)
    response = client.post(history_url, rule_change_post(rule, name="CRM default"))

    assert page.status_code == 200  # the old version can still be looked at
    assert b'name="_save"' not in page.content
    assert response.status_code in (200, 403)
    rule.refresh_from_db()
    assert rule.name == "Renamed"


def test_another_business_owner_cannot_move_a_rule_to_their_system_through_its_history_form(
    client, other_owner, system, other_system, rule
):
    original = rule.history.earliest()
    login(client, other_owner)

    response = client.post(
        url("governance_thresholdrule_simple_history", rule.pk, original.history_id),
        rule_change_post(rule, system=other_system.pk, owner_may_not_approve=False),
    )

    assert response.status_code == 403
    rule.refresh_from_db()
    assert (rule.system, rule.owner_may_not_approve) == (system, True)


@pytest.mark.parametrize("role", [*VIEW_ONLY_ROLES, Role.BUSINESS_OWNERS])
def test_users_without_change_rights_cannot_change_a_system_through_its_history_form(client, role, system):
    original = system.history.earliest()
    login(client, factories.UserFactory(username="viewer", roles=[role]))

    response = client.post(
        url("governance_system_simple_history", system.pk, original.history_id),
        as_form_data(system, write_mode=WriteMode.DISABLED, slug="renamed-crm"),
    )

    assert response.status_code == 403
    system.refresh_from_db()
    assert (system.slug, system.write_mode) == ("owned-crm", WriteMode.ENABLED)


# --- bands --------------------------------------------------------------------------------------------------------


def test_overlapping_bands_are_refused_with_the_overlap_named_and_nothing_half_saved(client, owner, two_band_rule):
    rule = two_band_rule
    before = band_terms(rule)
    login(client, owner)

    response = client.post(
        url("governance_thresholdrule_change", rule.pk),
        rule_change_post(rule, name="Overlapping", bands={0: {"max_amount": ""}}),  # two open-ended bands
    )

    assert response.status_code == 200
    assert "Band 1 has no upper bound but another band follows it (they overlap)" in response.content.decode()
    rule.refresh_from_db()
    assert rule.name == "Two bands"
    assert band_terms(rule) == before
    assert rule.history.count() == 1


def test_a_posted_lower_bound_that_disagrees_with_the_band_before_is_refused_not_ignored(client, owner, two_band_rule):
    """A script still posting both bounds of a threshold (the form before one number moved it) is told, not obeyed
    halfway."""
    rule = two_band_rule
    before = band_terms(rule)
    login(client, owner)

    response = client.post(
        url("governance_thresholdrule_change", rule.pk), rule_change_post(rule, bands={1: {"min_amount": "400"}})
    )

    assert response.status_code == 200
    assert (
        "Band 2 starts where the band before it ends, at 500.00, not at 400.00: to move that threshold, change the "
        "“Up to” of the band before it." in response.content.decode()
    )
    assert band_terms(rule) == before


def test_editing_a_band_after_sign_off_voids_the_sign_off(client, owner, rule):
    threshold_rule_sign_off(rule=rule, user=owner, channel="admin")
    rule.refresh_from_db()
    assert rule.is_signed_off
    login(client, owner)

    response = client.post(
        url("governance_thresholdrule_change", rule.pk),
        rule_change_post(rule, bands={0: {"max_amount": "400"}, 1: {"min_amount": "400"}}),
    )

    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.bands.order_by("min_amount").first().max_amount == Decimal(400)
    assert not rule.is_signed_off
    page = client.get(url("governance_thresholdrule_change", rule.pk))
    assert "VOID: edited after olivia signed it off" in page.content.decode()
