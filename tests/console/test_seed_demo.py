"""seed_demo builds CONTRACT.md's demo inventory, and running it again leaves one copy of everything."""

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError

from governance.models import ActionType, Agent, ScopeGrant, System, ThresholdRule

pytestmark = pytest.mark.django_db


def row_counts() -> dict[str, int]:
    return {
        model._meta.label: model.objects.count()
        for app in ("governance", "connectors", "auth")
        for model in apps.get_app_config(app).get_models()
        if not model._meta.label.endswith(("HistoricalAgent", "Permission"))
        and not model._meta.label.startswith("governance.Historical")
        and not model._meta.label.startswith("connectors.Historical")
    }


def test_seed_demo_twice_leaves_one_copy_of_everything(capsys):
    call_command("seed_demo")
    first = row_counts()
    out = capsys.readouterr().out
    call_command("seed_demo")
    assert row_counts() == first
    assert "nothing new" in capsys.readouterr().out
    assert "owner" in out and "approver" in out
    assert first["governance.System"] == 3
    assert first["governance.Agent"] == 2


def test_seed_demo_keeps_passwords_unless_asked_to_reset(capsys):
    call_command("seed_demo")
    first = capsys.readouterr().out
    call_command("seed_demo")
    assert capsys.readouterr().out.splitlines()[1:] == first.splitlines()[1:]
    call_command("seed_demo", "--reset-passwords")
    assert capsys.readouterr().out.splitlines()[1:] != first.splitlines()[1:]


def test_demo_inventory_matches_the_contract(demo):
    crm = System.objects.get(slug="crm")
    assert crm.write_mode == "enabled" and crm.owner.username == "owner"
    assert crm.staging_twin.slug == "crm-staging"
    assert System.objects.get(slug="legacy-inventory").write_mode == "read_only"
    assert set(ActionType.objects.filter(system=crm).values_list("name", flat=True)) == {
        "update_credit_limit",
        "add_note",
        "set_status",
        "send_statement",
    }
    assert not ActionType.objects.get(system=crm, name="send_statement").reversible

    rule = ThresholdRule.objects.get(system=crm, action_type__name="update_credit_limit")
    assert rule.is_signed_off and rule.signed_off_by.username == "owner"
    bands = [(str(b.min_amount), b.max_amount and str(b.max_amount), b.mode) for b in rule.bands.all()]
    assert bands == [("0.00", "500.00", "auto"), ("500.00", "5000.00", "single"), ("5000.00", None, "dual")]
    dual = rule.bands.get(mode="dual")
    assert dual.approver.username == "approver" and dual.review_group.name == "Reviewers"

    collections = Agent.objects.get(slug="collections-agent")
    read = ScopeGrant.objects.get(agent=collections, system=crm, access="read")
    assert "email" not in read.fields and "credit_limit" in read.fields
    write = ScopeGrant.objects.get(agent=collections, system=crm, access="write")
    assert set(write.actions) == {"update_credit_limit", "add_note", "set_status", "send_statement"}
    reporting = Agent.objects.get(slug="reporting-agent")
    assert not ScopeGrant.objects.filter(agent=reporting, access="write").exists()
    assert crm.credential.reveal()  # the sandbox token is vaulted


def test_seed_demo_refuses_to_run_in_production(settings):
    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="production"):
        call_command("seed_demo")
