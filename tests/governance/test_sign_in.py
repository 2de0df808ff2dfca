"""Accounts and roles from the identity provider (governance/sign_in.py): bound to the provider's subject, never to an
e-mail; exactly the mapped roles, set again at each sign-in; staff only with a role; never superuser; each sign-in and
each refusal in the trail."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured

from audit.models import AuditEvent
from gatehouse.startup import check_at_start
from governance.choices import Role
from governance.models import PersonIdentity
from governance.sign_in import SignInRefused, person_sign_in_oidc, provider_groups, roles_for

pytestmark = pytest.mark.django_db

ISSUER = "https://login.example.com/acme"
ROLE_MAP = {"finance-approvers": ["Approvers"], "audit": ["Auditors"], "ops": ["Operators", "Reviewers"]}
User = get_user_model()


def claims(sub: str = "00u1dana", groups: list[str] | None = None, **extra) -> dict:
    base = {
        "sub": sub,
        "email": "dana@example.com",
        "email_verified": True,
        "given_name": "Dana",
        "family_name": "Finance",
        "groups": ["finance-approvers", "all-staff"] if groups is None else groups,
    }
    return {**base, **extra}


def sign_in(**kwargs):
    return person_sign_in_oidc(issuer=ISSUER, claims=claims(**kwargs), role_map=ROLE_MAP)


def roles(user) -> list[str]:
    return sorted(user.groups.filter(name__in=Role.values).values_list("name", flat=True))


def test_the_first_sign_in_makes_an_account_with_the_mapped_roles_and_nothing_more():
    dana = sign_in()
    assert dana.username == "dana@example.com" and dana.email == "dana@example.com"
    assert dana.get_full_name() == "Dana Finance"
    assert roles(dana) == ["Approvers"]
    assert dana.is_staff and not dana.is_superuser and not dana.has_usable_password()
    assert PersonIdentity.objects.get().user == dana
    event = AuditEvent.objects.get(verb="signed_in")
    assert event.person == dana and event.channel == "admin"
    assert event.input == {"sign_in": {"method": "oidc", "issuer": ISSUER}, "groups": ["finance-approvers"]}
    assert (event.state_before, event.state_after) == ({"roles": []}, {"roles": ["Approvers"]})


def test_the_account_is_found_by_subject_so_a_changed_email_keeps_the_account_and_its_name():
    dana = sign_in()
    again = sign_in(email="dana.finance@example.com")
    assert again.pk == dana.pk
    again.refresh_from_db()
    assert again.username == "dana@example.com"  # the trail names people by it: it never changes
    assert again.email == "dana.finance@example.com"


def test_an_email_that_is_another_accounts_never_reaches_that_account():
    ceo = User.objects.create_user("ceo", email="ceo@example.com", password="x", is_staff=True, is_superuser=True)
    # Someone at the provider whose e-mail claim is the CEO's (a reused or mistyped address): a new account of their
    # own, named apart; the CEO's account is not touched, and the address is not copied onto the new one either.
    intruder = sign_in(sub="00u1other", email="ceo@example.com")
    assert intruder.pk != ceo.pk and intruder.username == "ceo@example.com"
    assert intruder.email == ""
    ceo.refresh_from_db()
    assert ceo.is_superuser and roles(ceo) == [] and not PersonIdentity.objects.filter(user=ceo).exists()

    # The same with a username: a local account called "dana@example.com" stays the local account.
    local = User.objects.create_user("dana@example.com", password="x")
    dana = sign_in(sub="00u1dana2")
    assert dana.pk != local.pk and dana.username == "dana@example.com-2"


def test_an_unverified_email_is_not_used():
    person = sign_in(email_verified=False, preferred_username="dana")
    assert person.username == "dana" and person.email == ""


def test_roles_follow_the_provider_groups_at_each_sign_in_and_other_groups_are_left_alone():
    dana = sign_in(groups=["finance-approvers", "ops"])
    finance = Group.objects.create(name="Finance team")  # a group set by hand in Gatehouse, not a role
    dana.groups.add(finance)
    assert roles(dana) == ["Approvers", "Operators", "Reviewers"]

    dana = sign_in(groups=["audit"])
    assert roles(dana) == ["Auditors"] and dana.groups.filter(pk=finance.pk).exists()
    last = AuditEvent.objects.filter(verb="signed_in").order_by("-id").first()
    assert last.state_before == {"roles": ["Approvers", "Operators", "Reviewers"]}
    assert last.state_after == {"roles": ["Auditors"]}
    assert "(before: Approvers, Operators, Reviewers)" in last.summary


def test_no_mapped_group_left_refuses_the_sign_in_and_takes_the_roles_and_the_admin_away():
    dana = sign_in()
    with pytest.raises(SignInRefused, match="none of your groups"):
        sign_in(groups=["all-staff"])
    dana.refresh_from_db()
    assert roles(dana) == [] and not dana.is_staff
    refused = AuditEvent.objects.get(verb="denied")
    assert refused.outcome == "sign_in_refused" and refused.person == dana
    assert (refused.state_before, refused.state_after) == ({"roles": ["Approvers"]}, {"roles": []})


def test_someone_new_with_no_mapped_group_gets_no_account_and_the_refusal_is_audited():
    with pytest.raises(SignInRefused):
        sign_in(groups=["marketing"])
    assert not User.objects.exists() and not PersonIdentity.objects.exists()
    refused = AuditEvent.objects.get(verb="denied")
    assert refused.actor_type == "gatehouse" and refused.person is None
    assert refused.input["groups"] == ["marketing"] and refused.input["subject"] == "00u1dana"
    assert refused.summary.startswith(f"Sign-in refused for dana@example.com through {ISSUER}")


def test_single_sign_on_never_makes_a_superuser_and_takes_back_one_made_by_hand():
    dana = sign_in()
    User.objects.filter(pk=dana.pk).update(is_superuser=True)
    dana = sign_in()
    assert not dana.is_superuser


def test_an_account_switched_off_in_gatehouse_stays_off():
    dana = sign_in()
    User.objects.filter(pk=dana.pk).update(is_active=False)
    with pytest.raises(SignInRefused, match="switched off"):
        sign_in()
    assert AuditEvent.objects.filter(verb="denied", person=dana, outcome="sign_in_refused").exists()


def test_a_sign_in_without_a_subject_is_refused():
    with pytest.raises(SignInRefused, match="no subject"):
        sign_in(sub="")


def test_groups_come_as_a_list_or_one_name_and_unknown_roles_grant_nothing():
    assert provider_groups({"groups": "ops"}, "groups") == ["ops"]
    assert provider_groups({"roles": ["b", "a", "a"]}, "roles") == ["a", "b"]
    assert provider_groups({"groups": {"odd": 1}}, "groups") == []
    assert roles_for(["x"], {"x": ["Approvers", "Aprovers"]}) == ["Approvers"]


def test_a_role_map_naming_a_role_gatehouse_does_not_have_stops_the_process_at_start(settings):
    settings.GATEHOUSE_OIDC_ROLE_MAP = {"finance": ["Aprovers"]}
    with pytest.raises(ImproperlyConfigured, match="Aprovers"):
        check_at_start()
