"""The approver's own page (/admin/approvals/mine/, console/mine.py) without a browser: who sees what in "Waiting for
me", "Delegated to me" and "Decided by me this week" (never someone else's proposals), and "I'm away", which names
or ends a delegation through approvals/delegation.py and says the service's reason when it refuses one (never an
error page).

Proposals are credit notes on `billing_world()`'s system (the amount is in the payload, no record to read): 1,000.00
is one approver's, named `approver`."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals.decisions import proposal_approve, proposal_reject, proposal_review, proposals_escalate_and_expire
from approvals.delegation import delegation_create
from approvals.models import Delegation, Proposal
from approvals.wording import proposal_sentence
from audit.models import AuditEvent
from governance.choices import Role
from tests.factories import UserFactory, billing_world, record_execution
from tests.factories import propose_credit_note as propose

pytestmark = pytest.mark.django_db

User = get_user_model()
PAGE = "/admin/approvals/mine/"
LOCAL = "%Y-%m-%dT%H:%M"


@pytest.fixture
def billing(demo):
    return billing_world()


@pytest.fixture
def deputy(demo):
    return UserFactory(username="deputy", first_name="Dev", last_name="Deputy", roles=[Role.APPROVERS])


def user(username: str):
    return User.objects.get(username=username)


def page_for(client, who) -> str:
    client.force_login(who if not isinstance(who, str) else user(who))
    response = client.get(PAGE)
    assert response.status_code == 200
    return unescape(response.content.decode())


def section(page: str, name: str) -> str:
    """One section of the page (`mine-waiting`, `mine-delegated`, `mine-decided`, `mine-away`), as HTML."""
    start = page.index(f'id="mine-{name}"')
    end = page.find('<div class="module mine-section"', start + 1)
    return page[start : end if end > 0 else len(page)]


def sentences(html: str) -> list[str]:
    return re.findall(r'<a href="[^"]+" class="mine-sentence">([^<]+)</a>', html)


def away(who: str, delegate: str, *, days: int = 3):
    now = timezone.now()
    return delegation_create(
        who=user(who),
        delegate=user(delegate),
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(days=days),
        reason="Out of office",
        user=user(who),
        channel="admin",
    )


def away_form(delegate, *, days: int = 3, **changes) -> dict:
    now = timezone.localtime()
    return {
        "step": "away",
        "delegate": delegate.pk,
        "starts_at": now.strftime(LOCAL),
        "ends_at": (now + timedelta(days=days)).strftime(LOCAL),
        "reason": "Holiday",
        **changes,
    }


# --- Who sees what ------------------------------------------------------------------------------------------------


def test_each_list_names_only_what_reaches_the_signed_in_person_and_links_its_decision_page(billing, deputy, client):
    mine = propose("1000.00", record="INV-1")
    rejected = propose("1200.00", record="INV-2")
    proposal_reject(proposal_id=rejected.pk, user=user("approver"), channel="admin", reason="Twice the usual.")

    page = page_for(client, "approver")
    assert sentences(section(page, "waiting")) == [proposal_sentence(mine)]
    assert f'href="/admin/approvals/proposal/{mine.pk}/change/"' in section(page, "waiting")
    assert sentences(section(page, "delegated")) == []
    decided = section(page, "decided")
    assert sentences(decided) == [proposal_sentence(rejected)]
    assert "You rejected it: Twice the usual." in decided

    for someone_else in ("deputy", "reviewer", "owner", "operator"):
        other = page_for(client, someone_else)
        assert sentences(other) == [], someone_else  # approver's proposals are never listed for them
        assert "INV-1" not in other and "INV-2" not in other


def test_a_delegate_sees_the_approvers_proposals_under_delegated_to_me_and_the_approver_keeps_them(
    billing, deputy, client
):
    proposal = propose("1000.00")
    away("approver", "deputy")

    page = page_for(client, "deputy")
    assert sentences(section(page, "waiting")) == []
    delegated = section(page, "delegated")
    assert sentences(delegated) == [proposal_sentence(proposal)]
    assert "You stand in for approver (delegation)" in delegated
    assert "Dana Approver (approver), from" in section(page, "away")  # "You decide for"

    page = page_for(client, "approver")  # the named approver can still decide it
    assert sentences(section(page, "waiting")) == [proposal_sentence(proposal)]
    assert sentences(section(page, "delegated")) == []
    assert "Dev Deputy" in section(page, "away") and "I'm back: end it now" in section(page, "away")


def test_an_escalated_proposal_reassigned_to_on_call_is_delegated_to_each_operator(billing, client):
    proposal = propose("1000.00")
    Proposal.objects.filter(pk=proposal.pk).update(sla_due_at=timezone.now() - timedelta(minutes=1))
    proposals_escalate_and_expire()  # approver has no delegate: on-call (the operators) as well

    delegated = section(page_for(client, "operator"), "delegated")
    assert sentences(delegated) == [proposal_sentence(proposal)]
    assert "Reassigned to the Operators group when it escalated" in delegated
    assert "overdue by" in delegated


def test_decided_by_me_this_week_keeps_seven_days_with_the_outcome_and_where_it_went(billing, deputy, client):
    approved = propose("1000.00", record="INV-1")
    proposal_approve(proposal_id=approved.pk, user=user("approver"), channel="admin")
    old = propose("1100.00", record="INV-2")
    proposal_reject(proposal_id=old.pk, user=user("approver"), channel="admin", reason="No.")
    Proposal.objects.filter(pk=old.pk).update(decided_at=timezone.now() - timedelta(days=8))

    decided = section(page_for(client, "approver"), "decided")
    assert sentences(decided) == [proposal_sentence(approved)]
    assert "You approved it" in decided
    assert sentences(section(page_for(client, "deputy"), "decided")) == []


def test_a_second_review_is_decided_by_the_reviewer_not_the_approver(billing, client):
    proposal = propose("8000.00")  # dual: approver, then a second reviewer (after execution in these bands)
    proposal_approve(proposal_id=proposal.pk, user=user("approver"), channel="admin")
    record_execution(proposal)
    proposal_review(proposal_id=proposal.pk, user=user("reviewer"), channel="admin", flag=False)

    reviewer = section(page_for(client, "reviewer"), "decided")
    assert sentences(reviewer) == [proposal_sentence(proposal)]
    assert "Second review: you found it fine" in reviewer
    assert "You approved it; now executed" in section(page_for(client, "approver"), "decided")


def test_an_approver_with_past_delegations_sees_each_proposal_once(billing, deputy, client):
    proposal = propose("1000.00")
    now = timezone.now()
    for days in (10, 20):  # two holidays long over: the queue once joined each of them to the proposal
        Delegation.objects.create(
            who=user("approver"),
            delegate=deputy,
            starts_at=now - timedelta(days=days + 1),
            ends_at=now - timedelta(days=days),
            reason="holiday",
            created_by=user("approver"),
        )
    assert list(Proposal.objects.awaiting_decision_by(user("approver"))) == [proposal]
    assert sentences(section(page_for(client, "approver"), "waiting")) == [proposal_sentence(proposal)]
    assert not Proposal.objects.awaiting_decision_by(deputy).exists()


# --- I'm away -----------------------------------------------------------------------------------------------------


def test_im_away_names_a_delegate_through_the_service_audited_and_i_am_back_ends_it(billing, deputy, client):
    client.force_login(user("approver"))
    response = client.post(PAGE, away_form(deputy))
    assert response.status_code == 302 and response["Location"] == PAGE
    delegation = Delegation.objects.get()
    assert (delegation.who, delegation.delegate, delegation.created_by) == (user("approver"), deputy, user("approver"))
    assert delegation.active and delegation.reason == "Holiday"
    event = AuditEvent.objects.get(verb="configured", resource="delegation")
    assert event.person == user("approver") and event.channel == "admin" and event.state_after["delegate"] == "deputy"
    assert "deputy decides what is named to you" in unescape(client.get(PAGE).content.decode())

    response = client.post(PAGE, {"step": "end", "delegation": delegation.pk})
    assert response.status_code == 302
    assert not Delegation.objects.get().active
    assert AuditEvent.objects.filter(verb="configured", resource="delegation").count() == 2


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("myself", "Name someone else: you cannot delegate to yourself."),
        ("no sign-in", "nosignin cannot sign in to Gatehouse, so could not decide anything."),
        ("inactive", "gone's account is inactive."),
        ("not an approver", "operator is not in the Approvers group: only someone whose role is to decide can decide"),
        ("past", "The end is in the past."),
        ("backwards", "The end must come after the start."),
        ("overlap", "approver already has a delegate for part of this period: end that first."),
        ("chain", "reviewer is away for part of this period too (they named a delegate)."),
        ("no reason", "Say why (for example: out of office)."),
    ],
)
def test_a_delegation_the_service_refuses_says_the_services_reason_on_the_form(billing, deputy, client, case, reason):
    UserFactory(username="nosignin", is_staff=False)
    UserFactory(username="gone", is_active=False)
    if case == "overlap":
        away("approver", "deputy")
    if case == "chain":
        approvers = Group.objects.get(name=Role.APPROVERS)
        approvers.user_set.add(user("reviewer"), user("operator"))
        away("reviewer", "operator")
    delegate = {
        "myself": "approver",
        "no sign-in": "nosignin",
        "inactive": "gone",
        "not an approver": "operator",
        "chain": "reviewer",
    }.get(case, "deputy")
    now = timezone.localtime()
    changes = {
        "past": {
            "starts_at": (now - timedelta(days=3)).strftime(LOCAL),
            "ends_at": (now - timedelta(days=1)).strftime(LOCAL),
        },
        "backwards": {"ends_at": (now - timedelta(hours=1)).strftime(LOCAL)},
        "no reason": {"reason": "   "},
    }.get(case, {})
    before = Delegation.objects.count()
    client.force_login(user("approver"))

    response = client.post(PAGE, away_form(user(delegate), **changes))

    assert response.status_code == 200
    away_section = section(unescape(response.content.decode()), "away")
    assert reason in away_section
    assert Delegation.objects.count() == before


def test_someone_elses_delegation_cannot_be_ended_from_my_page(billing, deputy, client):
    delegation = away("reviewer", "deputy")
    client.force_login(user("approver"))
    response = client.post(PAGE, {"step": "end", "delegation": delegation.pk}, follow=True)
    assert response.status_code == 200
    assert "Only the person who delegated (or a superuser) ends a delegation." in unescape(response.content.decode())
    assert Delegation.objects.get().active
    response = client.post(PAGE, {"step": "end", "delegation": "nope"}, follow=True)
    assert "No such delegation." in unescape(response.content.decode())


def test_the_page_is_for_signed_in_staff_only(billing, client):
    assert client.get(PAGE).status_code == 302  # to the sign-in page
    client.force_login(UserFactory(username="customer", is_staff=False))
    assert client.get(PAGE).status_code == 302


def test_the_home_page_links_an_approver_to_their_own_page(billing, client):
    client.force_login(user("approver"))
    page = unescape(client.get("/admin/").content.decode())
    assert f'href="{PAGE}" id="dash-mine"' in page
    client.force_login(user("auditor"))
    assert 'id="dash-mine"' not in client.get("/admin/").content.decode()
