"""History pages as readable diffs: who changed which field from what to what, when, and what became of the sign-off."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from html import unescape

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.utils import dateformat, timezone
from simple_history.models import DeletedObject

from core.history import display_value, duration, record_lines, who
from governance.choices import WriteMode
from governance.history import NOT_SIGNED_OFF, VOIDED, threshold_rule_lines
from governance.models import System, ThresholdBand, ThresholdRule
from governance.services import threshold_rule_sign_off
from tests import factories
from tests.governance.test_admin import as_form_data, login, rule_change_post, url

pytestmark = pytest.mark.django_db

User = get_user_model()


def history_rows(response) -> list[str]:
    """The rows of a history page as plain text, newest first."""
    assert response.status_code == 200
    rows = re.findall(r'<tr class="history-line[^"]*">(.*?)</tr>', response.content.decode(), re.S)
    return [" ".join(unescape(re.sub(r"<[^>]+>", " ", row)).split()) for row in rows]


def shown(when) -> str:
    return dateformat.format(timezone.localtime(when), "D j M Y, H:i:s")


def summary(lines) -> list[tuple]:
    return [
        (line.who, line.change, line.subject, [str(change) for change in line.changes], line.sign_off) for line in lines
    ]


# --- the admin pages ------------------------------------------------------------------------------------------------


def test_business_owner_raising_a_band_bound_shows_on_the_rule_history_with_who_and_the_voided_sign_off(client, demo):
    owner = User.objects.get(username="owner")
    rule = ThresholdRule.objects.get(name="Credit limit changes on crm")
    assert rule.is_signed_off  # the seed signs its rules off
    history_url = url("governance_thresholdrule_history", rule.pk)
    login(client, owner)

    response = client.post(
        url("governance_thresholdrule_change", rule.pk),
        rule_change_post(rule, bands={0: {"max_amount": "800"}, 1: {"min_amount": "800"}}),
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    rows = history_rows(client.get(history_url))

    edit = ThresholdBand.history.filter(rule_id=rule.pk, max_amount=Decimal(800)).get()
    # Newest first, the bands interleaved with the rule's own versions; other rules' bands are not listed.
    assert rows[0].endswith(
        "Olivia Owner Changed band 500.00–5,000.00 Min amount: 500.00 → 800.00 "
        "sign-off void: edited since Olivia Owner signed off origin=admin"
    )
    assert rows[1] == (
        f"{shown(edit.history_date)} Olivia Owner Changed band 0.00–500.00 Max amount: 500.00 → 800.00 "
        "sign-off voided by this edit origin=admin"
    )
    assert rows[2].endswith("Olivia Owner Changed saved; no field changed under Olivia Owner's sign-off origin=admin")
    assert rows[3].endswith(
        "Olivia Owner Changed Signed off by: (empty) → Olivia Owner "
        f"Signed off at: (empty) → {rule.history.earliest().next_record.signed_off_at:%Y-%m-%d %H:%M:%S} UTC "
        "signed off by Olivia Owner signed off"
    )
    assert "system Created band 0.00–500.00 Min amount: 0.00 Max amount: 500.00 Mode: Auto-execute and log" in rows[6]
    assert rows[7].endswith(
        "system Created System: crm Action type: crm.update_credit_limit Name: Credit limit changes on crm "
        "Currency: USD Max age: 3 days Owner may not approve: yes Cumulative scope: Add the agent's earlier proposals "
        "on the same record Cumulative window: 1 day Auto executes irreversible: no not signed off"
    )
    assert len(rows) == 8

    with pytest.raises(PermissionDenied, match="someone else signs it off"):  # four eyes: the editor does not sign
        threshold_rule_sign_off(rule=rule, user=owner, channel="admin")
    threshold_rule_sign_off(rule=rule, user=User.objects.get(username="admin"), channel="admin")
    rows = history_rows(client.get(history_url))

    assert len(rows) == 9
    assert re.fullmatch(
        r".* Ada Admin Changed Signed off by: Olivia Owner → Ada Admin Signed off at: \S+ \S+ UTC → \S+ \S+ UTC "
        r"signed off by Ada Admin signed off",
        rows[0],
    ), rows[0]
    assert "sign-off voided by this edit" in rows[2]


def test_operator_changing_the_write_mode_of_a_system_shows_the_choice_labels_and_their_name(client, demo):
    system = System.objects.get(slug="crm")
    login(client, User.objects.get(username="operator"))

    response = client.post(url("governance_system_change", system.pk), as_form_data(system, write_mode="read_only"))
    assert response.status_code == 302
    rows = history_rows(client.get(url("governance_system_history", system.pk)))

    assert rows[0].endswith("Omar Operator Changed Write mode: Enabled → Read only origin=admin")
    assert rows[1].startswith(f"{shown(system.history.earliest().history_date)} seed_demo Created Name: Sample CRM")
    assert "Write mode: Enabled Staging twin: crm-staging Writes frozen: no" in rows[1]
    assert len(rows) == 2


def test_each_page_of_a_long_history_diffs_its_oldest_version_against_the_previous_page(client, demo, monkeypatch):
    system = System.objects.get(slug="crm")
    monkeypatch.setattr(admin.site._registry[System], "history_list_per_page", 1)
    system.write_mode = WriteMode.READ_ONLY
    system.save()
    login(client, User.objects.get(username="admin"))

    newest = history_rows(client.get(url("governance_system_history", system.pk)))
    oldest = history_rows(client.get(url("governance_system_history", system.pk) + "?p=2"))

    assert newest == [f"{shown(system.history.latest().history_date)} system Changed Write mode: Enabled → Read only"]
    assert len(oldest) == 1
    assert " seed_demo Created Name: Sample CRM " in oldest[0]


# --- the lines themselves -------------------------------------------------------------------------------------------


@pytest.fixture
def owner():
    return factories.UserFactory(username="olivia", first_name="Olivia", last_name="Owner")


@pytest.fixture
def editor():
    return factories.UserFactory(username="eve", first_name="Eve", last_name="Editor")


@pytest.fixture
def rule(owner):
    rule = factories.ThresholdRuleFactory(system=factories.SystemFactory(slug="owned-crm", owner=owner), name="Default")
    approver = factories.UserFactory(username="amy")  # no full name: shown by user name
    factories.standard_bands(rule, approver, factories.GroupFactory(name="Second reviewers"))
    return rule


def lines_of(rule: ThresholdRule):
    return threshold_rule_lines(rule.history.all(), ThresholdBand.history.filter(rule_id=rule.pk))


def test_a_band_edit_after_sign_off_voids_it_and_putting_the_signed_terms_back_restores_it(rule, owner, editor):
    threshold_rule_sign_off(rule=rule, user=owner, channel="admin")
    signed = rule.history.latest()
    band = rule.bands.get(min_amount=500)
    band.max_amount = Decimal(8000)
    band._history_user = editor
    band.save()
    band.max_amount = Decimal(5000)
    band._history_user = editor
    band.save()

    lines = lines_of(rule)

    assert summary(lines[:3]) == [
        (
            "Eve Editor",
            "changed",
            "band 500.00–8,000.00",
            ["Max amount: 8,000.00 → 5,000.00"],
            "Olivia Owner's sign-off in effect again: the terms are back to those signed",
        ),
        ("Eve Editor", "changed", "band 500.00–5,000.00", ["Max amount: 5,000.00 → 8,000.00"], VOIDED),
        (
            "Olivia Owner",  # signed off outside a request: the signer, not "system"
            "changed",
            "",
            [
                "Signed off by: (empty) → Olivia Owner",
                f"Signed off at: (empty) → {signed.signed_off_at:%Y-%m-%d %H:%M:%S} UTC",
            ],
            "signed off by Olivia Owner",
        ),
    ]
    assert [line.own for line in lines[:3]] == [False, False, True]
    assert {line.version_id for line in lines[:3]} == {signed.history_id}  # listed under the signed version
    rule.refresh_from_db()
    assert rule.is_signed_off  # the page agrees with the model


def test_changing_the_rules_terms_voids_the_sign_off_but_renaming_it_does_not(rule, owner, editor):
    threshold_rule_sign_off(rule=rule, user=owner, channel="admin")
    rule.refresh_from_db()
    rule.name = "Default, renamed"
    rule._history_user = editor
    rule.save()
    rule.max_age = timedelta(hours=4)
    rule._history_user = editor
    rule.save()

    renamed, shortened = lines_of(rule)[1], lines_of(rule)[0]

    assert summary([shortened, renamed]) == [
        ("Eve Editor", "changed", "", ["Max age: 3 days → 4 h"], VOIDED),
        ("Eve Editor", "changed", "", ["Name: Default → Default, renamed"], "under Olivia Owner's sign-off"),
    ]


def test_band_creation_and_deletion_are_listed_with_the_bands_terms(rule, editor):
    dual = rule.bands.get(min_amount=5000)
    dual._history_user = editor
    dual.delete()
    added = ThresholdBand(rule=rule, min_amount=Decimal(5000), mode="auto", review_within=timedelta(minutes=90))
    added._history_user = editor
    added.save()

    lines = lines_of(rule)

    assert summary(lines[:2]) == [
        (
            "Eve Editor",
            "created",
            "band 5,000.00–∞",
            [
                "Min amount: 5,000.00",
                "Mode: Auto-execute and log",
                "Review timing: Review before execution",  # a new band's default
                "Review within: 1 h 30 min",
            ],
            NOT_SIGNED_OFF,
        ),
        ("Eve Editor", "deleted", "band 5,000.00–∞", [], NOT_SIGNED_OFF),
    ]
    creation = lines[-3]
    assert str(creation.changes[3]) == "Approver: amy"  # the 500–5,000 band, created by the fixture
    assert str(creation) == (
        f"{creation.when:%Y-%m-%d %H:%M} · system · created band 500.00–5,000.00 · Min amount: 500.00; "
        "Max amount: 5,000.00; Mode: One approver within the SLA; Approver: amy; Sla: 4 h; "
        "Review timing: Review after execution; Review within: 1 day · not signed off"
    )


def test_record_lines_diff_each_version_against_the_one_before_it(owner, editor):
    system = factories.SystemFactory(slug="erp", owner=owner, write_mode=WriteMode.READ_ONLY)
    system.write_mode = WriteMode.PROPOSE_ONLY
    system.writes_frozen, system.frozen_reason = True, "Audit week"
    system._history_user = editor
    system._change_reason = "origin=admin"
    system.save()
    system.write_mode = WriteMode.ENABLED
    del system._history_user
    system._change_reason = "origin=command"
    system.save()
    records = list(system.history.all())

    newest_two = record_lines(records[:2], before=records[2])

    assert summary(newest_two) == [
        ("command", "changed", "", ["Write mode: Propose only (approved writes become manual tasks) → Enabled"], ""),
        (
            "Eve Editor",
            "changed",
            "",
            [
                "Write mode: Read only → Propose only (approved writes become manual tasks)",
                "Writes frozen: no → yes",
                "Frozen reason: (empty) → Audit week",
            ],
            "",
        ),
    ]
    assert [line.version_id for line in newest_two] == [records[0].history_id, records[1].history_id]
    assert record_lines(records[:1])[0].changes[0].old is None  # without its predecessor: listed as created values


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(hours=4), "4 h"),
        (timedelta(days=3), "3 days"),
        (timedelta(days=1, hours=4), "1 day 4 h"),
        (timedelta(minutes=90), "1 h 30 min"),
        (timedelta(seconds=45), "45 s"),
        (timedelta(0), "0 s"),
    ],
)
def test_durations_read_as_people_write_them(value, expected):
    assert duration(value) == expected


def test_values_show_labels_amounts_names_and_empty():
    band, system = ThresholdBand._meta, System._meta

    assert display_value(band.get_field("max_amount"), Decimal("8000")) == "8,000.00"
    assert display_value(band.get_field("max_amount"), None) == "(empty)"
    assert display_value(band.get_field("sla"), timedelta(hours=4)) == "4 h"
    assert display_value(band.get_field("mode"), "dual") == "Named approver plus a second reviewer"
    assert display_value(system.get_field("write_mode"), "read_only") == "Read only"
    assert display_value(system.get_field("writes_frozen"), False) == "no"
    assert display_value(system.get_field("description"), "") == "(empty)"
    assert display_value(system.get_field("owner"), User(username="dana", first_name="Dana", last_name="A")) == "Dana A"
    assert display_value(system.get_field("owner"), DeletedObject(User, None)) == "(empty)"
    assert display_value(system.get_field("owner"), DeletedObject(User, 7)) == "deleted user #7"
    assert display_value(system.get_field("connector_config"), {"timeout": 5, "base_url": "x"}) == (
        '{"base_url": "x", "timeout": 5}'
    )


def test_who_is_the_user_else_the_origin_else_system(owner):
    system = factories.SystemFactory(slug="erp", owner=owner)
    record = system.history.get()

    record.history_user, record.history_change_reason = owner, "origin=admin"
    assert who(record) == "Olivia Owner"
    record.history_user, record.history_change_reason = None, "origin=seed"
    assert who(record) == "seed"
    record.history_change_reason = "signed off"
    assert who(record) == "system"
