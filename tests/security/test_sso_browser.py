"""Single sign-on in a real browser against a real OpenID Connect provider on loopback (sandbox/idp, on
django-oauth-toolkit): an approver from the provider's finance-approvers group follows a proposal's link, signs in
at the provider, approves the $3,000 raise, and the trail names her and how she signed in; someone whose groups map
to no role is turned away with a clear page; a group taken away at the provider is a role gone at the next sign-in.

The session's stack (CRM, worker) is reused; one more web process runs with the provider configured and local
passwords off, as production would."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from approvals.models import Proposal
from audit.models import AuditEvent
from governance.choices import Role
from governance.models import PersonIdentity
from tests.browser import SCREEN, Journey
from tests.factories import propose_raise
from tests.sso import PROVIDER, reset_people, sign_in_at_provider

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MAX_CLICKS = 3  # the e-mail's link → Sign in with Sample IdP → the provider's Sign in → Approve


@pytest.fixture
def sso(sso_stack, live, browser):
    """The provider's people as at the start (a test may change their groups), and fresh browser contexts."""
    reset_people(sso_stack)
    contexts = []

    def new_page():
        context = browser.new_context(viewport=SCREEN)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20000)
        return page

    yield {**sso_stack, "live": live, "new_page": new_page}
    for context in contexts:
        context.close()


def set_groups(sso, username: str, groups: list[str]) -> None:
    """At the provider: change someone's groups (read at their next sign-in)."""
    people = json.loads(sso["people"].read_text())
    people[username]["groups"] = groups
    sso["people"].write_text(json.dumps(people))


def test_an_approver_signs_in_through_the_provider_approves_the_raise_and_the_trail_names_her_and_how(sso):
    live, web = sso["live"], sso["web_url"]
    proposal_id = propose_raise(live, "5000.00")
    # The demo's rule names its own approver; here the decision is the Approvers group's, where the provider puts Dana.
    Proposal.objects.filter(pk=proposal_id).update(approver=None, approver_group=Group.objects.get(name=Role.APPROVERS))

    page = sso["new_page"]()
    page.goto(f"{web}/admin/approvals/proposal/{proposal_id}/change/")  # the link a notice would carry
    assert "/admin/login/?next=" in page.url
    assert page.locator("#login-form").count() == 0, "local passwords are off: the provider's button only"
    assert page.locator("#sso-sign-in").inner_text() == f"Sign in with {PROVIDER}"
    journey = Journey(page)
    journey.screenshot("sso-sign-in")

    sign_in_at_provider(journey, "dana")
    assert page.url == f"{web}/admin/approvals/proposal/{proposal_id}/change/", "next= kept through the round trip"
    assert "Raise the credit limit of account 4471 from 2,000.00 to 5,000.00" in page.locator("h1").inner_text()
    journey.click("#approve-button")
    print(f"\nsso: from the link to approved in {journey.clicks} clicks: {' → '.join(journey.visited)}")
    assert journey.clicks <= MAX_CLICKS
    assert "Approved." in page.locator(".messagelist").inner_text()
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"

    dana = get_user_model().objects.get(identities__issuer=sso["issuer"])
    assert dana.username == "dana@example.com" and dana.get_full_name() == "Dana Finance"
    assert dana.is_staff and not dana.is_superuser and not dana.has_usable_password()
    assert sorted(dana.groups.values_list("name", flat=True)) == [Role.APPROVERS, Role.AUDITORS]

    approved = AuditEvent.objects.get(verb="approved", proposal_id=proposal_id)
    assert (approved.actor, approved.person) == ("dana@example.com", dana)
    assert approved.input["sign_in"] == {"method": "oidc", "issuer": sso["issuer"]}
    signed_in = AuditEvent.objects.get(verb="signed_in", person=dana)
    assert signed_in.input["sign_in"] == {"method": "oidc", "issuer": sso["issuer"]}
    assert signed_in.state_after == {"roles": [Role.APPROVERS, Role.AUDITORS]}
    assert signed_in.input["groups"] == ["audit-readers", "finance-approvers"]  # the mapped ones, not all-staff


def test_someone_whose_groups_map_to_no_role_is_turned_away_with_a_clear_page(sso):
    web = sso["web_url"]
    page = sso["new_page"]()
    page.goto(f"{web}/admin/")
    journey = Journey(page)

    sign_in_at_provider(journey, "sam")
    assert page.url == f"{web}/oidc/refused/"
    journey.screenshot("sso-refused")
    assert "none of your groups there gives you a role in Gatehouse" in page.locator("#sign-in-refused").inner_text()
    page.goto(f"{web}/admin/")
    assert "/admin/login/" in page.url  # not signed in
    assert not get_user_model().objects.filter(email="sam@example.com").exists()  # no account for no role
    assert not PersonIdentity.objects.exists()
    refused = AuditEvent.objects.get(verb="denied", outcome="sign_in_refused")
    assert refused.input["groups"] == ["all-staff"] and refused.input["email"] == "sam@example.com"
    assert "Sign-in refused for sam@example.com" in refused.summary


def test_a_group_taken_away_at_the_provider_is_a_role_gone_at_the_next_sign_in(sso):
    web = sso["web_url"]
    User = get_user_model()

    first = sso["new_page"]()
    first.goto(f"{web}/admin/")
    sign_in_at_provider(Journey(first), "dana")
    assert first.url == f"{web}/admin/"
    dana = User.objects.get(username="dana@example.com")
    assert set(dana.groups.values_list("name", flat=True)) == {Role.APPROVERS, Role.AUDITORS}

    set_groups(sso, "dana", ["audit-readers", "all-staff"])  # off the approvers' group at the provider
    second = sso["new_page"]()
    second.goto(f"{web}/admin/")
    sign_in_at_provider(Journey(second), "dana")
    assert second.url == f"{web}/admin/"
    assert list(dana.groups.values_list("name", flat=True)) == [Role.AUDITORS]
    again = AuditEvent.objects.filter(verb="signed_in", person=dana).order_by("-id").first()
    assert (again.state_before, again.state_after) == (
        {"roles": [Role.APPROVERS, Role.AUDITORS]},
        {"roles": [Role.AUDITORS]},
    )

    set_groups(sso, "dana", ["all-staff"])  # no mapped group left
    third = sso["new_page"]()
    third.goto(f"{web}/admin/")
    sign_in_at_provider(Journey(third), "dana")
    assert third.url == f"{web}/oidc/refused/"
    dana.refresh_from_db()
    assert not dana.is_staff and not dana.groups.exists()
    assert User.objects.filter(identities__isnull=False).count() == 1  # still one account, bound to her subject
