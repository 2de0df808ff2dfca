"""Brute force on the admin sign-in: five wrong passwords lock that username from that address for the cool-off."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client

LOGIN = "/admin/login/"
PASSWORD = "correct horse battery staple"  # tests/factories.py


def sign_in(client: Client, username: str, password: str):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


@pytest.mark.django_db
def test_five_wrong_passwords_lock_the_account_from_that_address_until_the_cool_off_has_passed(f):
    user = f.UserFactory()
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    limit, cool_off = settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME
    assert limit == 5 and cool_off == timedelta(minutes=15)

    for _ in range(4):
        assert sign_in(attacker, user.username, "guess").status_code == 200  # the form again, with its error
    assert sign_in(attacker, user.username, "guess").status_code == 429  # the fifth locks
    locked = sign_in(attacker, user.username, PASSWORD)
    assert locked.status_code == 429  # the right password no longer helps
    assert "_auth_user_id" not in attacker.session

    # Locked by username and address together: the person at their own desk still signs in.
    colleague = Client(REMOTE_ADDR="198.51.100.20")
    assert sign_in(colleague, user.username, PASSWORD).status_code == 302
    colleague.post("/admin/logout/")

    # Sixteen minutes later (the attempts' clock moved back rather than the test's), the pair is let in again.
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    allowed = sign_in(attacker, user.username, PASSWORD)
    assert allowed.status_code == 302 and allowed["Location"] == "/admin/"
    assert int(attacker.session["_auth_user_id"]) == user.pk
