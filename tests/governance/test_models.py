"""Inventory validation: clear messages for bad bands, slugs, grants and schemas; sign-off voided by any edit."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from governance.models import BandSpec, ThresholdBand, validate_bands
from governance.services import threshold_rule_sign_off
from tests.factories import standard_bands


def band(low, high, mode="auto", approver=None, review=None, sla=timedelta(hours=4)) -> BandSpec:
    """A band with the terms its mode uses, unless told otherwise (an auto band has no approver, SLA or review)."""
    return BandSpec(
        min_amount=Decimal(low),
        max_amount=None if high is None else Decimal(high),
        mode=mode,
        has_approver=mode != "auto" if approver is None else approver,
        has_review_group=mode == "dual" if review is None else review,
        sla=None if mode == "auto" else sla,
    )


def messages_of(bands) -> str:
    with pytest.raises(ValidationError) as caught:
        validate_bands(bands)
    return " ".join(caught.value.messages)


def test_contiguous_bands_from_zero_to_open_end_are_valid():
    validate_bands([band(0, 500), band(500, 5000, "single"), band(5000, None, "dual")])


def test_bands_listed_out_of_order_are_judged_in_amount_order():
    validate_bands([band(5000, None, "dual"), band(0, 500), band(500, 5000, "single")])


def test_overlapping_bands_are_named():
    assert "Bands 1 and 2 overlap" in messages_of([band(0, 600), band(500, None, "single")])


def test_a_gap_between_bands_is_named_with_its_amounts():
    text = messages_of([band(0, 500), band(800, None, "single")])
    assert "gap between 500 and 800" in text


def test_bands_must_start_at_zero_and_end_open():
    assert "must start at 0" in messages_of([band(100, None)])
    assert "leave its upper bound empty" in messages_of([band(0, 500)])


def test_an_open_band_followed_by_another_overlaps():
    assert "no upper bound but another band follows" in messages_of([band(0, None), band(500, None)])


def test_an_sla_of_zero_is_refused():
    assert "SLA longer than zero" in messages_of([band(0, None, "single", sla=timedelta(0))])
    assert "SLA longer than zero" in messages_of([band(0, None, "single", sla=None)])


def test_approval_bands_need_an_approver_and_dual_a_review_group():
    assert "needs an approver" in messages_of([band(0, None, "single", approver=False)])
    assert "second-review group" in messages_of([band(0, None, "dual", review=False)])


def test_no_bands_at_all_is_refused():
    assert "at least one band" in messages_of([])


@pytest.mark.django_db
def test_a_band_row_with_a_zero_sla_or_two_approvers_says_what_to_fix(f):
    rule = f.ThresholdRuleFactory()
    approver, group = f.UserFactory(), f.GroupFactory()
    with pytest.raises(ValidationError, match="longer than zero"):
        ThresholdBand(rule=rule, min_amount=0, mode="single", sla=timedelta(0), approver=approver).full_clean()
    with pytest.raises(ValidationError, match="not both"):
        ThresholdBand(rule=rule, min_amount=0, mode="single", approver=approver, approver_group=group).full_clean()


@pytest.mark.django_db
def test_a_slug_with_bad_characters_is_refused_with_an_example(f):
    system = f.SystemFactory.build(slug="CRM Prod!", owner=f.UserFactory())
    with pytest.raises(ValidationError) as caught:
        system.full_clean()
    assert "for example crm-staging" in caught.value.message_dict["slug"][0]


@pytest.mark.django_db
def test_a_write_grant_for_an_action_of_another_system_is_refused(f):
    crm_action = f.ActionTypeFactory(name="update_credit_limit")
    billing = f.ResourceFactory(system=f.SystemFactory(slug="billing"), name="invoices")
    grant = f.ScopeGrantFactory.build(
        agent=f.AgentFactory(), resource=billing, system=billing.system, access="write", actions=[crm_action.name]
    )
    with pytest.raises(ValidationError) as caught:
        grant.full_clean()
    message = caught.value.message_dict["actions"][0]
    assert f"is an action of system '{crm_action.system.slug}', not billing" in message


@pytest.mark.django_db
def test_grant_terms_must_fit_their_access(f):
    resource = f.ResourceFactory()
    action = f.ActionTypeFactory(resource=resource)
    read = f.ScopeGrantFactory.build(agent=f.AgentFactory(), resource=resource, system=resource.system)
    read.fields, read.actions = ["name", "salary"], [action.name]
    with pytest.raises(ValidationError) as caught:
        read.full_clean()
    assert "no field(s): salary" in caught.value.message_dict["fields"][0]
    assert "read grant allows no actions" in caught.value.message_dict["actions"][0]
    write = f.ScopeGrantFactory.build(agent=f.AgentFactory(), resource=resource, system=resource.system)
    write.access = "write"
    with pytest.raises(ValidationError, match="at least one action"):
        write.full_clean()
    write.actions = [action.name]
    write.full_clean()


@pytest.mark.django_db
def test_a_payload_schema_must_reject_unknown_fields_and_name_the_impact_field(f):
    action = f.ActionTypeFactory.build(resource=f.ResourceFactory())
    action.system = action.resource.system
    action.payload_schema = {"type": "object", "properties": {"amount": {"type": "string"}}}
    action.impact_field = "credit_limit"
    with pytest.raises(ValidationError) as caught:
        action.full_clean()
    assert "additionalProperties" in caught.value.message_dict["payload_schema"][0]
    action.payload_schema = {"type": "object", "properties": {"amount": {"type": "nonsense"}}}
    with pytest.raises(ValidationError, match="Not a valid JSON Schema"):
        action.full_clean()
    action.payload_schema = {"type": "object", "properties": {"amount": {}}, "additionalProperties": False}
    with pytest.raises(ValidationError) as caught:
        action.full_clean()
    assert "no field 'credit_limit'" in caught.value.message_dict["impact_field"][0]


@pytest.mark.django_db
def test_an_irreversible_action_must_say_why(f):
    action = f.ActionTypeFactory(compensation="none", not_reversible_note="")
    with pytest.raises(ValidationError, match="cannot be reversed"):
        action.full_clean()


@pytest.mark.django_db
def test_sign_off_is_void_after_any_edit_of_the_rule_or_a_band(f):
    rule = f.ThresholdRuleFactory()
    owner = rule.system.owner
    bands = standard_bands(rule, f.UserFactory(), f.GroupFactory())
    threshold_rule_sign_off(rule=rule, user=owner, channel="admin")
    rule.refresh_from_db()
    assert rule.is_signed_off

    bands[0].max_amount, bands[1].min_amount = Decimal(800), Decimal(800)
    bands[0].save()
    bands[1].save()
    assert not rule.is_signed_off

    threshold_rule_sign_off(rule=rule, user=owner, channel="admin")
    rule.refresh_from_db()
    assert rule.is_signed_off
    rule.max_age = timedelta(days=1)
    rule.save()
    assert not rule.is_signed_off


@pytest.mark.django_db
def test_only_the_business_owner_signs_off_and_only_valid_bands(f):
    rule = f.ThresholdRuleFactory()
    standard_bands(rule, f.UserFactory(), f.GroupFactory())
    with pytest.raises(PermissionDenied, match="business owner"):
        threshold_rule_sign_off(rule=rule, user=f.UserFactory(), channel="admin")
    rule.bands.filter(min_amount=500).delete()
    with pytest.raises(ValidationError, match="gap"):
        threshold_rule_sign_off(rule=rule, user=rule.system.owner, channel="admin")
    rule.refresh_from_db()
    assert not rule.is_signed_off


def test_terms_a_band_never_uses_are_refused_by_the_bands_check_every_door_runs():
    # The sign-off runs validate_bands, not the band's own clean(): a band made by a command or the shell is held too.
    assert "(auto) executes without a person" in messages_of([band(0, None, "auto", approver=True)])
    auto_with_sla = BandSpec(
        Decimal(0), None, "auto", has_approver=False, has_review_group=False, sla=timedelta(hours=1)
    )
    assert "(auto) executes without a person" in messages_of([auto_with_sla])
    assert "only a dual band has a second review" in messages_of([band(0, None, "single", review=True)])
