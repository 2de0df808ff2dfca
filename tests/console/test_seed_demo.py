"""seed_demo builds CONTRACT.md's demo inventory, and running it again leaves one copy of everything."""

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEvent
from core.history import who
from governance.models import ActionType, Agent, ScopeGrant, System, ThresholdRule
from governance.services import system_connection_set

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


def passwords(out: str) -> list[str]:
    return out.split("Demo users (username / password):\n", 1)[1].splitlines()


def test_seed_demo_keeps_passwords_unless_asked_to_reset(capsys):
    call_command("seed_demo")
    first = passwords(capsys.readouterr().out)
    call_command("seed_demo")
    assert passwords(capsys.readouterr().out) == first
    call_command("seed_demo", "--reset-passwords")
    assert passwords(capsys.readouterr().out) != first


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


# --- Where the sample systems point: the port settings, and what someone set stays -----------------------------------


def seed(settings, capsys, *args: str, crm: int | None, staging: int | None = None) -> list[str]:
    """seed_demo with these port settings (None: not set); the lines it said about the systems' connectors."""
    settings.GATEHOUSE_CRM_PORT, settings.GATEHOUSE_CRM_STAGING_PORT = crm, staging
    capsys.readouterr()
    call_command("seed_demo", "--quiet", *args)
    return [line.strip() for line in capsys.readouterr().out.splitlines()[1:]]


def url(slug: str) -> str:
    return System.objects.get(slug=slug).connector_config["base_url"]


def test_new_systems_point_at_the_port_settings_and_say_so(settings, capsys):
    said = seed(settings, capsys, crm=18100, staging=18101)

    assert (url("crm"), url("crm-staging")) == ("http://127.0.0.1:18100", "http://127.0.0.1:18101")
    assert "crm points at http://127.0.0.1:18100 (GATEHOUSE_CRM_PORT=18100)." in said
    assert "crm-staging points at http://127.0.0.1:18101 (GATEHOUSE_CRM_STAGING_PORT=18101)." in said
    assert who(System.objects.get(slug="crm").history.first()) == "seed_demo"


def test_without_port_settings_new_systems_get_the_default_ports(settings, capsys):
    said = seed(settings, capsys, crm=None)

    assert (url("crm"), url("crm-staging")) == ("http://127.0.0.1:8100", "http://127.0.0.1:8101")
    assert "crm points at http://127.0.0.1:8100 (GATEHOUSE_CRM_PORT is not set: the default port)." in said


def test_seeding_without_port_settings_leaves_the_moved_ports_and_says_so(settings, capsys):
    """The issue: `make run` on moved ports, then `manage.py seed_demo` in a shell without them."""
    seed(settings, capsys, crm=18100, staging=18101)

    said = seed(settings, capsys, crm=None)

    assert (url("crm"), url("crm-staging")) == ("http://127.0.0.1:18100", "http://127.0.0.1:18101")
    assert said == [
        "crm-staging left at http://127.0.0.1:18101 (GATEHOUSE_CRM_STAGING_PORT is not set; to move it, set it or "
        "use seed_demo --crm-staging-url URL).",
        "crm left at http://127.0.0.1:18100 (GATEHOUSE_CRM_PORT is not set; to move it, set it or use seed_demo "
        "--crm-url URL).",
    ]


def test_a_port_setting_moves_what_seeding_set_through_the_audited_service(settings, capsys):
    seed(settings, capsys, crm=18100, staging=18101)

    said = seed(settings, capsys, crm=28100, staging=18101)

    assert url("crm") == "http://127.0.0.1:28100"
    assert said == ["crm moved from http://127.0.0.1:18100 to http://127.0.0.1:28100 (GATEHOUSE_CRM_PORT=28100)."]
    event = AuditEvent.objects.get(verb="configured", system__slug="crm")
    assert event.state_after["connector_config"]["base_url"] == "http://127.0.0.1:28100"
    assert who(System.objects.get(slug="crm").history.first()) == "seed_demo"
    assert seed(settings, capsys, crm=28100, staging=18101) == []  # nothing to move, nothing said


@pytest.mark.parametrize("by", ["admin", None], ids=["a person in the admin", "another command"])
def test_connector_settings_someone_set_stay_and_the_report_says_so(settings, capsys, by):
    seed(settings, capsys, crm=18100, staging=18101)
    crm = System.objects.get(slug="crm")
    someone = get_user_model().objects.get(username=by) if by else None
    theirs = {**crm.connector_config, "base_url": "http://127.0.0.1:9999", "timeout": 10}
    system_connection_set(system=crm, kind="http", config=theirs, user=someone, channel="admin" if by else "command")

    said = seed(settings, capsys, crm=28100, staging=18101)

    assert System.objects.get(slug="crm").connector_config == theirs
    assert said == [
        "crm left at http://127.0.0.1:9999, as someone set it (GATEHOUSE_CRM_PORT=28100 would point it at "
        "http://127.0.0.1:28100; seed_demo --crm-url URL changes it)."
    ]


def test_a_url_asked_for_replaces_what_someone_set(settings, capsys):
    seed(settings, capsys, crm=18100, staging=18101)
    crm = System.objects.get(slug="crm")
    theirs = {**crm.connector_config, "base_url": "http://127.0.0.1:9999"}
    system_connection_set(system=crm, kind="http", config=theirs, user=None, channel="command")

    said = seed(settings, capsys, "--crm-url", "http://127.0.0.1:7777", crm=18100, staging=18101)

    assert url("crm") == "http://127.0.0.1:7777"
    assert said == ["crm moved from http://127.0.0.1:9999 to http://127.0.0.1:7777 (as asked)."]
