"""People signing in: accounts and roles from the company's identity provider, and an audit event for each sign-in.

Single sign-on (gatehouse/oidc.py is the door) gives a person exactly the role groups GATEHOUSE_OIDC_ROLE_MAP maps
their provider groups to, set again at every sign-in: a group removed at the provider is a role removed here the next
time they sign in. Nothing else comes from the provider: staff status only while they hold a role (the admin is
closed to anyone without one), never superuser, and other groups a person was put in by hand are left as they are.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction
from django.db.models import Count, Max
from django.utils import timezone

from audit.choices import Channel, Verb
from audit.services import audit_record
from governance.choices import Role
from governance.models import PersonIdentity
from governance.roles import ensure_roles

log = logging.getLogger(__name__)

PASSWORD = "password"
OIDC = "oidc"
# Django's own username rule (letters, digits and @ . + - _), with room left for a "-2" when a name is taken.
_USERNAME = re.compile(r"^[\w.@+-]{1,140}$")
_GROUPS_KEPT = 50  # of an unmapped person's provider groups, in the trail: enough to fix the map, not a directory


class SignInRefused(Exception):
    """A sign-in the provider accepted and Gatehouse does not. The message is for the person, in plain words."""


def role_map_problems(role_map: Mapping[str, list[str]]) -> list[str]:
    """The role names in the map that are not Gatehouse roles (a typo would silently grant nothing)."""
    return sorted({name for names in role_map.values() for name in names if name not in Role.values})


def provider_groups(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The person's groups at the provider: a list of names (or ids) in the claim, or one name."""
    value = claims.get(claim)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return sorted({str(item) for item in value if isinstance(item, str | int)})
    return []


def roles_for(groups: Iterable[str], role_map: Mapping[str, list[str]]) -> list[str]:
    """The Gatehouse roles these provider groups map to, sorted; an unknown role name grants nothing."""
    return sorted({name for group in groups for name in role_map.get(group, []) if name in Role.values})


def person_sign_in_oidc(
    *, issuer: str, claims: Mapping[str, Any], role_map: Mapping[str, list[str]], groups_claim: str = "groups"
) -> User:
    """The Gatehouse user the provider's verified claims sign in as, with its roles set from the provider's groups.

    The account is found by (issuer, sub) only and made on the first sign-in; a person whose groups map to no role is
    refused (audited `denied`; an account they had loses its roles and staff status, and none is made for someone
    new). Each sign-in is one `signed_in` event with the roles before and after. Two first sign-ins of one person at
    once: the identity's unique constraint lets one make the account, and the other signs in to it.
    """
    subject = str(claims.get("sub") or "")
    if not subject:
        raise SignInRefused("The identity provider did not say who you are (no subject).")
    groups = provider_groups(claims, groups_claim)
    roles = roles_for(groups, role_map)
    method = {"method": OIDC, "issuer": issuer}
    with transaction.atomic():
        identity = _identity(issuer, subject)
        if identity is None and not roles:
            refusal = _refuse(None, claims, method=method, groups=groups, why="no role")
        else:
            if identity is None:
                identity = _new_identity(issuer, subject, claims)
            user = User.objects.select_for_update().get(pk=identity.user_id)  # one sign-in of a person at a time
            if not user.is_active:
                refusal = _refuse(user, claims, method=method, groups=groups, why="inactive")
            else:
                before = _roles_held(user)
                _update_profile(user, claims)
                _set_roles(user, roles)
                identity.last_signed_in = timezone.now()
                identity.save(update_fields=["last_signed_in"])
                if roles:
                    refusal = ""
                    _audit_signed_in(user, method=method, before=before, after=roles, groups=groups, role_map=role_map)
                else:
                    refusal = _refuse(user, claims, method=method, groups=groups, why="no role", before=before)
    if refusal:  # raised after the block has committed: the refusal's event (and roles taken away) stay
        raise SignInRefused(refusal)
    return user


def roles_out_of_date(user: User, *, now: datetime | None = None) -> str:
    """Why `user`'s roles cannot be trusted for a decision made without signing in (a Slack button), or "".

    Single sign-on sets a person's roles at each sign-in only. A door that acts for a person without a sign-in of its
    own would otherwise keep honouring roles the identity provider took away weeks ago: such a door refuses a person
    whose account comes from single sign-on and who has not signed in within a session's length
    (GATEHOUSE_SESSION_AGE), until they sign in once (which sets their roles again). Local accounts are managed by
    hand in Gatehouse, so their roles are current by definition."""
    identities = PersonIdentity.objects.filter(user=user).aggregate(count=Count("pk"), last=Max("last_signed_in"))
    if not identities["count"]:
        return ""
    last = identities["last"]
    freshness = timedelta(seconds=settings.SESSION_COOKIE_AGE)
    if last is not None and last >= (now or timezone.now()) - freshness:
        return ""
    return (
        "your roles come from single sign-on and you have not signed in to Gatehouse for a while, so they may have "
        "changed: sign in once, then try again"
    )


def person_sign_in_password(*, user: User) -> None:
    """Record a sign-in with a local password (the admin's own form)."""
    audit_record(
        verb=Verb.SIGNED_IN,
        actor=user,
        channel=Channel.ADMIN,
        summary=f"{user.get_username()} signed in with a password",
        input={"sign_in": {"method": PASSWORD}},
    )


def _identity(issuer: str, subject: str) -> PersonIdentity | None:
    return PersonIdentity.objects.filter(issuer=issuer, subject=subject).first()


def _new_identity(issuer: str, subject: str, claims: Mapping[str, Any]) -> PersonIdentity:
    """A new account for a new person, bound to their subject; never an existing account, whatever its e-mail."""
    try:
        with transaction.atomic():
            user = User.objects.create_user(_free_username(claims, subject))  # no usable password
            return PersonIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    except IntegrityError:
        # The same person's other sign-in made it a moment ago (identity_one_user_per_subject).
        identity = _identity(issuer, subject)
        if identity is None:
            raise
        return identity


def _free_username(claims: Mapping[str, Any], subject: str) -> str:
    """A readable username for the trail: the verified e-mail, else the provider's username, else sso-<subject>;
    "-2", "-3"… when another account has it (a local account of the same name is never taken over)."""
    candidates = [_verified_email(claims), str(claims.get("preferred_username") or ""), f"sso-{subject}"]
    base = next(
        (name for name in candidates if _USERNAME.match(name)),
        "sso-" + hashlib.sha256(subject.encode()).hexdigest()[:24],
    )
    name, number = base, 2
    while User.objects.filter(username__iexact=name).exists():
        name, number = f"{base}-{number}", number + 1
    return name


def _verified_email(claims: Mapping[str, Any]) -> str:
    """The e-mail, unless the provider says it is unverified (some providers, e.g. Entra ID, never say)."""
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email or claims.get("email_verified") is False:
        return ""
    return email.strip()


def _update_profile(user: User, claims: Mapping[str, Any]) -> None:
    """Names and e-mail as the provider has them now. The username never changes (the trail names people by it), and
    an e-mail another account already uses is not copied: mail and chat look people up by it."""
    email = _verified_email(claims)
    if email and email.lower() != user.email.lower():
        if User.objects.filter(email__iexact=email).exclude(pk=user.pk).exists():
            log.warning("sign-in: %s's new e-mail is another account's; kept %r", user.get_username(), user.email)
        else:
            user.email = email
    given, family = claims.get("given_name"), claims.get("family_name")
    if not (given or family) and isinstance(claims.get("name"), str):
        given, _, family = claims["name"].partition(" ")
    user.first_name = str(given or user.first_name)[:150]
    user.last_name = str(family or user.last_name)[:150]
    user.last_login = timezone.now()


def _roles_held(user: User) -> list[str]:
    return sorted(user.groups.filter(name__in=Role.values).values_list("name", flat=True))


def _set_roles(user: User, roles: list[str]) -> None:
    """Exactly these role groups; staff only with a role; never superuser through single sign-on."""
    wanted = list(Group.objects.filter(name__in=roles))
    if len(wanted) < len(roles):  # a role group missing from this database (created at migrate): make them all
        ensure_roles()
        wanted = list(Group.objects.filter(name__in=roles))
    user.groups.remove(*Group.objects.filter(name__in=Role.values).exclude(name__in=roles))
    user.groups.add(*wanted)
    user.is_staff = bool(roles)
    user.is_superuser = False
    user.save()


def _audit_signed_in(
    user: User,
    *,
    method: dict[str, str],
    before: list[str],
    after: list[str],
    groups: list[str],
    role_map: Mapping[str, list[str]],
) -> None:
    changed = "" if before == after else f" (before: {', '.join(before) or 'no role'})"
    audit_record(
        verb=Verb.SIGNED_IN,
        actor=user,
        channel=Channel.ADMIN,
        summary=f"{user.get_username()} signed in through {method['issuer']} as {', '.join(after)}{changed}",
        input={"sign_in": method, "groups": [group for group in groups if group in role_map]},
        state_before={"roles": before},
        state_after={"roles": after},
    )


def _refuse(
    user: User | None,
    claims: Mapping[str, Any],
    *,
    method: dict[str, str],
    groups: list[str],
    why: str,
    before: list[str] | None = None,
) -> str:
    """Audit a refused sign-in and return what to tell the person."""
    who = user.get_username() if user else (_verified_email(claims) or f"subject {claims.get('sub')}")
    if why == "inactive":
        reason, told = "the account is inactive", "Your Gatehouse account is switched off. Ask an administrator."
    else:
        reason = "their groups at the identity provider give no Gatehouse role"
        told = (
            "You signed in at the identity provider, but none of your groups there gives you a role in Gatehouse, so "
            "there is nothing here for you yet. Ask an administrator to add you to an approvers', reviewers', "
            "auditors' or owners' group."
        )
    audit_record(
        verb=Verb.DENIED,
        actor=user,
        channel=Channel.ADMIN,
        outcome="sign_in_refused",
        summary=f"Sign-in refused for {who} through {method['issuer']}: {reason}",
        input={
            "sign_in": method,
            "subject": str(claims.get("sub")),
            "email": _verified_email(claims),
            "groups": groups[:_GROUPS_KEPT],
        },
        state_before={"roles": before} if before else None,
        state_after={"roles": []} if before else None,
    )
    return told
