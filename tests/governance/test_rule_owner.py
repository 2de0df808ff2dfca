"""The business owner's rule pages without a browser: one number per threshold, durations in words, only the fields a
band's mode uses, the sign-off page and its refusals, and a voided sign-off called void wherever the rule is shown."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from html import unescape

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.utils.timezone import now

from approvals.models import Drill
from audit.models import AuditEvent
from core.durations import duration_words, parse_duration_words
from governance.choices import BandMode, ReviewTiming
from governance.models import Agent, System, ThresholdBand, ThresholdRule, ladder_lower_bounds
from tests.governance.test_admin import login, rule_change_post, url

pytestmark = pytest.mark.django_db

User = get_user_model()
CREDIT = "Credit limit changes on crm"


def text(response) -> str:
    """A page as the words a person reads (tags dropped, whitespace folded)."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def as_browser(rule: ThresholdRule, bands: dict[int, dict] | None = None, **changes) -> dict[str, str]:
    """The rule's form as the page posts it: a band without a condition has no lower bound of its own to send."""
    data = rule_change_post(rule, bands, **changes)
    for index, band in enumerate(rule.bands.order_by("min_amount")):
        if not band.condition and "min_amount" not in (bands or {}).get(index, {}):
            data[f"bands-{index}-min_amount"] = ""
    return data


def bounds(rule: ThresholdRule) -> list[tuple]:
    return [(band.min_amount, band.max_amount, band.mode) for band in rule.bands.order_by("min_amount", "pk")]


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def credit(demo) -> ThresholdRule:
    return ThresholdRule.objects.get(name=CREDIT)


@pytest.fixture
def admin_user(demo):
    return User.objects.get(username="admin")


@pytest.fixture
def owner(demo):
    return User.objects.get(username="owner")


def edit_as_admin(client, admin_user, rule, bands=None, **changes):
    login(client, admin_user)
    return client.post(url("governance_thresholdrule_change", rule.pk), as_browser(rule, bands, **changes))


# --- one number per threshold -------------------------------------------------------------------------------------


def test_changing_the_up_to_of_the_first_band_moves_the_start_of_the_second(client, admin_user, credit):
    response = edit_as_admin(client, admin_user, credit, {0: {"max_amount": "800"}})

    assert response.status_code == 302, text(response)
    assert bounds(credit) == [
        (Decimal(0), Decimal(800), BandMode.AUTO),
        (Decimal(800), Decimal(5000), BandMode.SINGLE),
        (Decimal(5000), None, BandMode.DUAL),
    ]


def test_a_new_band_takes_its_place_by_its_up_to(client, admin_user, credit):
    data = as_browser(credit)
    data |= {
        "bands-TOTAL_FORMS": "4",
        "bands-3-max_amount": "2000",
        "bands-3-mode": BandMode.SINGLE,
        "bands-3-approver": str(User.objects.get(username="approver").pk),
        "bands-3-sla": "2 hours",
        "bands-3-review_timing": ReviewTiming.BEFORE_EXECUTION,
        "bands-3-review_within": "24 hours",
    }
    login(client, admin_user)

    response = client.post(url("governance_thresholdrule_change", credit.pk), data)

    assert response.status_code == 302, text(response)
    assert [(low, high) for low, high, _ in bounds(credit)] == [
        (Decimal(0), Decimal(500)),
        (Decimal(500), Decimal(2000)),
        (Decimal(2000), Decimal(5000)),
        (Decimal(5000), None),
    ]


def test_a_new_rule_is_one_up_to_per_threshold_and_waits_for_a_sign_off(client, admin_user, credit):
    crm = credit.system
    approver = User.objects.get(username="approver")
    login(client, admin_user)
    assert client.get(url("governance_thresholdrule_add")).status_code == 200
    data = {
        "system": crm.pk,
        "action_type": credit.system.action_types.get(name="add_note").pk,
        "name": "Notes on crm",
        "currency": "USD",
        "max_age": "3 days",
        "owner_may_not_approve": "on",
        "cumulative_window": "24 hours",
        "configuration_reason": "Notes need a look above 100.",
        "bands-TOTAL_FORMS": "2",
        "bands-INITIAL_FORMS": "0",
        "bands-0-max_amount": "100",
        "bands-0-mode": BandMode.AUTO,
        "bands-0-review_within": "24 hours",
        "bands-1-mode": BandMode.SINGLE,
        "bands-1-approver": str(approver.pk),
        "bands-1-sla": "1 hour",
        "bands-1-review_within": "24 hours",
    }

    response = client.post(url("governance_thresholdrule_add"), data)

    assert response.status_code == 302, text(response)
    rule = ThresholdRule.objects.get(name="Notes on crm")
    assert bounds(rule) == [(Decimal(0), Decimal(100), BandMode.AUTO), (Decimal(100), None, BandMode.SINGLE)]
    assert [m for m in messages_of(response) if "is not in force" in m]


def test_the_page_shows_each_bands_start_as_text_and_only_its_up_to_as_a_field(client, admin_user, credit):
    login(client, admin_user)

    page = client.get(url("governance_thresholdrule_change", credit.pk))

    html = page.content.decode()
    assert 'name="bands-1-max_amount"' in html
    starts = re.findall(r'field-lower_bound">\s*<label>From:</label>\s*<div class="readonly">([^<]*)</div>', html)
    assert starts == ["0.00", "500.00", "5,000.00", "where the band before it ends"]  # the last: a new band's row
    # "Starting at" is only for a band with a condition: empty for these.
    assert re.search(r'name="bands-1-min_amount"[^>]*value=', html) is None


def test_lower_bounds_follow_the_ladder_and_a_conditional_band_may_leave_a_gap():
    closed = {"status": "closed"}
    bands = [
        ({}, Decimal(500), None),
        ({}, None, Decimal(7)),  # a lower bound of its own is ignored without a condition
        ({}, Decimal(5000), None),
        (closed, None, Decimal(1000)),  # a gap below it falls to the bands without a condition
        (closed, Decimal(1000), None),
    ]

    assert ladder_lower_bounds(bands) == [Decimal(0), Decimal(5000), Decimal(500), Decimal(1000), Decimal(0)]
    # Two open-ended bands start at the same amount, which validate_bands refuses as an overlap.
    assert ladder_lower_bounds([({}, None, None), ({}, None, None)]) == [Decimal(0), Decimal(0)]


def test_a_conditional_band_keeps_its_own_start_and_shows_it_only_when_it_leaves_a_gap(client, owner, demo):
    rule = ThresholdRule.objects.get(name="Status changes on crm")
    closed = rule.bands.get(condition={"status": "closed"})
    login(client, owner)
    index = list(rule.bands.order_by("min_amount", "pk")).index(closed)

    page = client.get(url("governance_thresholdrule_change", rule.pk)).content.decode()
    assert re.search(rf'name="bands-{index}-min_amount"[^>]*value=', page) is None  # starts at 0: follows, not shown

    data = rule_change_post(rule, {index: {"min_amount": "1000"}})
    response = client.post(url("governance_thresholdrule_change", rule.pk), data)
    assert response.status_code == 302, text(response)
    closed.refresh_from_db()
    assert closed.min_amount == Decimal(1000)
    page = client.get(url("governance_thresholdrule_change", rule.pk)).content.decode()
    assert re.search(rf'name="bands-{index}-min_amount"[^>]*value="1000.00"', page)


# --- durations in words -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (timedelta(hours=4), "4 hours"),
        (timedelta(hours=24), "24 hours"),
        (timedelta(days=3), "3 days"),
        (timedelta(minutes=90), "1 hour 30 minutes"),
        (timedelta(days=14), "2 weeks"),
        (timedelta(days=2, hours=6), "2 days 6 hours"),
    ],
)
def test_a_duration_reads_in_words_and_its_words_read_back(value, words):
    assert duration_words(value) == words
    assert parse_duration_words(words) == value


@pytest.mark.parametrize(
    ("typed", "value"),
    [("4h", timedelta(hours=4)), ("1 day, 12 hours", timedelta(hours=36)), ("1.5 hours", timedelta(minutes=90))],
)
def test_durations_are_accepted_as_people_type_them_and_in_djangos_format(typed, value):
    assert parse_duration_words(typed) == value
    assert parse_duration_words("3 00:00:00") == timedelta(days=3)


def test_a_bare_number_is_refused_rather_than_guessed():
    with pytest.raises(ValidationError, match="Say the unit of “4”"):
        parse_duration_words("4")


def test_the_rule_page_shows_durations_in_words_and_saves_them_from_words(client, admin_user, credit):
    login(client, admin_user)
    page = client.get(url("governance_thresholdrule_change", credit.pk)).content.decode()
    assert 'name="bands-1-sla" value="4 hours"' in page
    assert 'name="max_age" value="3 days"' in page
    assert 'name="cumulative_window" value="24 hours"' in page
    assert "00:00" not in re.sub(r"\d\d:\d\d:\d\d", "", page.split('id="bands-group"')[1].split("</fieldset")[0])

    response = client.post(
        url("governance_thresholdrule_change", credit.pk),
        as_browser(credit, {1: {"sla": "8 hours"}}, max_age="2 days"),
    )

    assert response.status_code == 302, text(response)
    credit.refresh_from_db()
    assert credit.max_age == timedelta(days=2)
    assert credit.bands.get(min_amount=500).sla == timedelta(hours=8)


def test_a_duration_without_a_unit_is_refused_on_the_page(client, admin_user, credit):
    response = edit_as_admin(client, admin_user, credit, {1: {"sla": "4"}})

    assert response.status_code == 200
    assert "Say the unit of “4”" in text(response)
    assert credit.bands.get(min_amount=500).sla == timedelta(hours=4)


# --- only the fields a mode uses ----------------------------------------------------------------------------------


def test_an_approver_on_an_auto_band_and_a_review_group_on_a_single_band_are_cleared(client, admin_user, credit):
    approver = User.objects.get(username="approver")
    reviewers = credit.bands.get(mode=BandMode.DUAL).review_group

    response = edit_as_admin(
        client,
        admin_user,
        credit,
        {
            0: {"approver": approver.pk, "sla": "4 hours"},
            1: {"review_group": reviewers.pk, "review_timing": ReviewTiming.AFTER_EXECUTION},
        },
    )

    assert response.status_code == 302, text(response)
    auto, single, dual = credit.bands.order_by("min_amount")
    assert (auto.approver, auto.approver_group, auto.sla) == (None, None, None)
    assert single.review_group is None
    assert single.review_timing == ReviewTiming.BEFORE_EXECUTION  # kept as it was: hidden, not typed
    assert dual.review_group == reviewers  # a dual band keeps its review


def test_a_band_saved_by_another_door_with_terms_its_mode_never_uses_is_refused(credit):
    auto = credit.bands.get(mode=BandMode.AUTO)
    auto.approver = User.objects.get(username="approver")
    with pytest.raises(ValidationError) as refused:
        auto.full_clean()
    assert "has no approver and no SLA" in str(refused.value)

    single = credit.bands.get(mode=BandMode.SINGLE)
    single.review_group = credit.bands.get(mode=BandMode.DUAL).review_group
    with pytest.raises(ValidationError, match="Only a dual band has a second review"):
        single.full_clean()


def test_the_page_marks_each_bands_mode_fields_so_they_can_be_hidden(client, admin_user, credit):
    login(client, admin_user)
    html = client.get(url("governance_thresholdrule_change", credit.pk)).content.decode()
    assert html.count('class="module aligned band-decides"') == 3 + 1  # each band and the empty row
    assert html.count('class="module aligned band-review"') == 3 + 1
    assert 'USES = {auto: [], single: ["band-decides"], dual: ["band-decides", "band-review"]}' in html


# --- after an edit: the warning -----------------------------------------------------------------------------------


def test_an_edit_warns_that_every_proposal_waits_and_names_who_may_sign_off(client, admin_user, credit):
    response = edit_as_admin(client, admin_user, credit, {0: {"max_amount": "800"}})

    warnings = [m for m in messages_of(response) if "not in force" in m]
    assert warnings == [
        f"“{CREDIT}” is not in force: every proposal under it now waits for a person until someone other than you "
        "signs it off — Olivia Owner, the business owner of crm or another superuser. They sign it off with the Sign "
        "off button on this page."
    ]


def test_a_rename_that_keeps_the_sign_off_does_not_warn(client, admin_user, credit):
    response = edit_as_admin(client, admin_user, credit, name="Credit limits on crm")

    assert response.status_code == 302
    assert not [m for m in messages_of(response) if "not in force" in m]
    assert ThresholdRule.objects.prefetch_related("bands").get(pk=credit.pk).is_signed_off


# --- the sign-off page --------------------------------------------------------------------------------------------


def test_the_sign_off_page_shows_the_bands_and_terms_in_words_and_what_changed(client, admin_user, owner, credit):
    edit_as_admin(client, admin_user, credit, {0: {"max_amount": "800"}}, configuration_reason="Olivia asked.")
    login(client, owner)

    page = client.get(url("governance_thresholdrule_sign_off", credit.pk))

    words = text(page)
    assert page.status_code == 200
    assert "Under 800.00 USD: runs at once without a person, and is logged." in words
    assert "800.00 to under 5,000.00 USD: Dana Approver approves it within 4 hours before it runs." in words
    assert (
        "5,000.00 USD and above: Dana Approver approves it within 4 hours; it runs on that approval, and someone in "
        "the Reviewers group reviews it within 24 hours after it runs" in words
    )
    assert "Amounts: the agent's standing proposals on the same record in the last 24 h count." in words
    assert "Irreversible writes: update_credit_limit can be reversed." in words
    assert "Last changed by Ada Admin on" in words and "Their reason: “Olivia asked.”" in words
    assert "Changed band 0.00–500.00: Max amount: 500.00 → 800.00" in words
    assert 'id="confirm-sign-off"' in page.content.decode()


def test_the_owner_signs_off_on_the_page_and_the_rule_applies_again(client, admin_user, owner, credit):
    edit_as_admin(client, admin_user, credit, {0: {"max_amount": "800"}})
    login(client, owner)
    digest = client.get(url("governance_thresholdrule_sign_off", credit.pk)).context["digest"]

    response = client.post(url("governance_thresholdrule_sign_off", credit.pk), {"digest": digest, "reason": "Agreed."})

    assert response.status_code == 302
    assert response["Location"] == url("governance_thresholdrule_change", credit.pk)
    assert ThresholdRule.objects.prefetch_related("bands").get(pk=credit.pk).is_signed_off
    event = AuditEvent.objects.filter(verb="rule_signed_off").latest("id")
    assert (event.person, event.channel, event.input["reason"]) == (owner, "admin", "Agreed.")


def test_the_editor_is_refused_with_the_four_eyes_message_not_a_server_error(client, admin_user, credit):
    edit_as_admin(client, admin_user, credit, {0: {"max_amount": "800"}})
    sign_off_url = url("governance_thresholdrule_sign_off", credit.pk)

    page = client.get(sign_off_url)
    response = client.post(sign_off_url, {"digest": page.context["digest"]})

    assert "someone else signs it off (four eyes)" in text(page)
    assert 'id="confirm-sign-off"' not in page.content.decode()  # no button to press in vain
    assert response.status_code == 302 and response["Location"] == sign_off_url
    assert messages_of(response) == [
        f"You made the last change to “{CREDIT}”: someone else signs it off (four eyes). Ask Olivia Owner, the "
        "business owner of crm or another superuser."
    ]
    assert not ThresholdRule.objects.prefetch_related("bands").get(pk=credit.pk).is_signed_off


def test_terms_changed_after_the_page_was_read_are_not_signed(client, admin_user, owner, credit):
    edit_as_admin(client, admin_user, credit, {0: {"max_amount": "800"}})
    login(client, owner)
    digest = client.get(url("governance_thresholdrule_sign_off", credit.pk)).context["digest"]
    band = credit.bands.get(min_amount=800)
    band.sla = timedelta(hours=1)
    band.save()  # someone else's edit while the owner reads

    response = client.post(url("governance_thresholdrule_sign_off", credit.pk), {"digest": digest})

    assert "was changed while you were reading it: nothing was signed off" in messages_of(response)[0]
    assert not ThresholdRule.objects.prefetch_related("bands").get(pk=credit.pk).is_signed_off


def test_a_sign_off_posted_without_the_terms_it_was_shown_signs_nothing(client, admin_user, owner, credit):
    edit_as_admin(client, admin_user, credit, {0: {"max_amount": "800"}})
    login(client, owner)

    response = client.post(url("governance_thresholdrule_sign_off", credit.pk), {"reason": "crafted"})

    assert any("nothing was signed off" in message for message in messages_of(response))
    assert not ThresholdRule.objects.prefetch_related("bands").get(pk=credit.pk).is_signed_off


def test_someone_who_is_not_the_owner_is_told_so_on_the_page(client, admin_user, credit):
    edit_as_admin(client, admin_user, credit, {0: {"max_amount": "800"}})
    login(client, User.objects.get(username="approver"))

    page = client.get(url("governance_thresholdrule_sign_off", credit.pk))
    response = client.post(url("governance_thresholdrule_sign_off", credit.pk), {"digest": page.context["digest"]})

    assert "Only the business owner of crm (owner) can sign off its rules." in text(page)
    assert response.status_code == 302
    assert messages_of(response) == ["Only the business owner of crm (owner) can sign off its rules."]


# --- a voided sign-off is called void, everywhere -----------------------------------------------------------------


def test_a_voided_rule_is_shown_as_void_wherever_it_is_shown(client, admin_user, owner, credit):
    edit_as_admin(client, admin_user, credit, {0: {"max_amount": "800"}})
    login(client, owner)
    change_url = url("governance_thresholdrule_change", credit.pk)
    void = "VOID: edited after Olivia Owner"

    rule_list = text(client.get(url("governance_thresholdrule_changelist")))
    assert f"{void}'s sign-off" in rule_list

    rule_page = client.get(change_url)
    assert void in text(rule_page) and "Signed off by:" not in text(rule_page)
    assert 'id="sign-off-button"' in rule_page.content.decode()  # the owner did not make the edit: she may

    # The drill passed, so the rule is the collections agent's first failing item: its "Fix it" on the home page.
    Drill.objects.create(system=System.objects.get(slug="crm-staging"), passed=True, finished_at=now(), channel="test")
    home = client.get(url("index"))
    assert re.search(rf"{CREDIT} crm edited since it was signed off: void", text(home))
    assert "press Sign off" in text(home)
    row = re.search(
        r'<tr class="dash-agent[^"]*">(?:(?!</tr>).)*collections-agent(?:(?!</tr>).)*</tr>', home.content.decode(), re.S
    )
    assert row is not None
    assert "(edited after its sign-off, which that voided)" in unescape(row.group())
    assert f'<a href="{change_url}#sign-off" class="dash-fix">Fix it</a>' in row.group()

    agent_page = text(client.get(url("governance_agent_change", Agent.objects.get(slug="collections-agent").pk)))
    assert "(edited after its sign-off, which that voided)" in agent_page

    history = text(client.get(url("governance_thresholdrule_history", credit.pk)))
    newest = history.split("Changed band")[1]
    assert "sign-off voided by this edit" in newest or "sign-off void: edited since Olivia Owner signed off" in newest


def test_the_editor_sees_who_else_may_sign_off_instead_of_the_button(client, admin_user, credit):
    edit_as_admin(client, admin_user, credit, {0: {"max_amount": "800"}})

    page = client.get(url("governance_thresholdrule_change", credit.pk))

    assert 'id="sign-off-button"' not in page.content.decode()
    assert "someone else signs it off (four eyes). Ask Olivia Owner, the business owner of crm" in text(page)


def test_a_sign_off_page_for_an_unknown_rule_is_not_found_and_staff_without_rights_are_refused(
    client, admin_user, credit
):
    login(client, admin_user)
    assert client.get(url("governance_thresholdrule_sign_off", 999999)).status_code == 404
    login(client, User.objects.create_user("intern", is_staff=True))
    assert client.get(url("governance_thresholdrule_sign_off", credit.pk)).status_code == 403
    assert client.post(url("governance_thresholdrule_sign_off", credit.pk)).status_code == 403
    assert ThresholdBand.objects.filter(rule=credit).count() == 3
