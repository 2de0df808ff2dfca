"""Webhook subscriptions: the event catalogue covers every verb; the allow-list refuses a receiver at save; the secret
is shown once, vaulted and never readable again; every change is a configuration change in the trail; only operators
and superusers manage them; and with no subscription, recording an event costs no extra query."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit import followers
from audit.choices import Verb
from audit.models import AuditEvent
from audit.services import audit_record
from connectors.credentials import decrypt
from governance.choices import Role
from webhooks.events import EVENT_TYPES, NOT_SENT, TYPES
from webhooks.models import Delivery, Subscription
from webhooks.services import subscription_rotate_secret, subscription_save
from webhooks.signing import new_secret

pytestmark = pytest.mark.django_db
ADD = reverse("admin:webhooks_subscription_add")


@pytest.fixture
def operator(f):
    return f.UserFactory(username="oscar", roles=[Role.OPERATORS])


def subscribe(actor, url="https://hooks.example.com/gatehouse", events=("kill_switch.*",), **fields):
    subscription = Subscription(url=url, event_types=list(events), **fields)
    secret = subscription_save(subscription=subscription, actor=actor, channel="command")
    return subscription, secret


def test_every_verb_is_an_event_type_or_left_out_on_purpose():
    assert set(Verb) == set(EVENT_TYPES) | NOT_SENT
    assert not set(EVENT_TYPES) & NOT_SENT
    assert EVENT_TYPES[Verb.APPROVED] == "proposal.approved" and EVENT_TYPES[Verb.KILL_SWITCH_ON] == "kill_switch.on"
    assert EVENT_TYPES[Verb.CONFIGURED] == "configuration.changed" and EVENT_TYPES[Verb.FAILED] == "proposal.failed"
    assert all(re.fullmatch(r"[a-z_]+\.[a-z_]+", name) for name in TYPES)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.9.8.7/hook",  # private
        "http://169.254.169.254/latest/meta-data",  # link-local: a cloud's metadata service
        "http://127.0.0.1:9/hook",  # loopback, once the list does not name it
        "ftp://hooks.example.com/",
        "https://user:pw@hooks.example.com/",
    ],
)
def test_a_receiver_outside_the_allow_list_is_refused_at_save(settings, operator, url):
    settings.GATEHOUSE_CONNECTOR_HOSTS = ["example.com", "*.example.com"]
    with pytest.raises(ValidationError) as refused:
        subscribe(operator, url=url)
    assert "url" in refused.value.message_dict
    assert not Subscription.objects.exists() and not AuditEvent.objects.exists()


def test_the_admin_form_refuses_it_too(settings, client, operator):
    settings.GATEHOUSE_CONNECTOR_HOSTS = ["example.com", "*.example.com"]
    client.force_login(operator)
    response = client.post(ADD, {"url": "http://10.9.8.7/hook", "event_types": ["*"], "active": "on"})
    assert response.status_code == 200
    assert "GATEHOUSE_CONNECTOR_HOSTS" in response.content.decode()
    assert not Subscription.objects.exists()


def test_unknown_event_types_are_refused(operator):
    with pytest.raises(ValidationError) as refused:
        subscribe(operator, events=["proposal.approved", "proposal.teleported"])
    assert "event_types" in refused.value.message_dict
    with pytest.raises(ValidationError):
        subscribe(operator, events=[])


def test_the_secret_is_shown_once_vaulted_and_never_readable_again(client, operator):
    client.force_login(operator)
    response = client.post(
        ADD,
        {"url": "https://hooks.example.com/in", "event_types": ["proposal.*", "kill_switch.on"], "active": "on",
         "description": "SIEM", "reason": "The SOC wants approvals and switches."},
    )  # fmt: skip
    assert response.status_code == 200
    page = response.content.decode()
    (secret,) = re.findall(r'<code class="webhook-secret">(whsec_[A-Za-z0-9+/=]+)</code>', page)
    subscription = Subscription.objects.get()
    assert decrypt(subscription.ciphertext) == secret and secret not in subscription.ciphertext
    assert subscription.created_by == operator and subscription.event_types == ["proposal.*", "kill_switch.on"]
    # Never again: not on its page, not in the trail.
    change = client.get(reverse("admin:webhooks_subscription_change", args=[subscription.pk])).content.decode()
    assert secret not in change and subscription.ciphertext not in change
    event = AuditEvent.objects.get(verb=Verb.CONFIGURED)
    assert event.actor == "oscar" and event.input["action"] == "added"
    assert event.input["reason"] == "The SOC wants approvals and switches."
    assert event.state_after["url"] == "https://hooks.example.com/in"
    trail = str(event.input) + str(event.state_after) + event.summary
    assert secret not in trail and "ciphertext" not in trail


def test_an_entered_secret_is_vaulted_and_not_echoed(client, operator):
    client.force_login(operator)
    mine = new_secret()
    response = client.post(
        ADD, {"url": "https://hooks.example.com/in", "event_types": ["*"], "active": "on", "secret": mine}
    )
    assert response.status_code == 302  # no page of secrets: the operator knows theirs
    assert decrypt(Subscription.objects.get().ciphertext) == mine
    refused = client.post(ADD, {"url": "https://hooks.example.com/2", "event_types": ["*"], "secret": "hunter2"})
    assert refused.status_code == 200 and "whsec_" in refused.content.decode()
    assert Subscription.objects.count() == 1


def test_a_change_and_a_rotation_are_configuration_changes(operator):
    subscription, first = subscribe(operator)
    subscription.event_types = ["kill_switch.*", "proposal.failed"]
    subscription.active = False
    assert subscription_save(subscription=subscription, actor=operator, channel="admin", reason="quieter") is None
    changed = AuditEvent.objects.filter(verb=Verb.CONFIGURED).order_by("-id").first()
    assert changed.state_before == {"event_types": ["kill_switch.*"], "active": True}
    assert changed.state_after == {"event_types": ["kill_switch.*", "proposal.failed"], "active": False}
    rotation = subscription_rotate_secret(subscription_id=subscription.pk, actor=operator, channel="admin")
    subscription.refresh_from_db()
    assert rotation.secret and rotation.secret != first
    assert decrypt(subscription.ciphertext) == rotation.secret and decrypt(subscription.previous_ciphertext) == first
    rotated = AuditEvent.objects.filter(verb=Verb.CONFIGURED).order_by("-id").first()
    assert list(rotated.state_after) == ["secret_rotated_at"]
    assert first not in str(rotated.state_after) and rotation.secret not in str(rotated.state_after)


def test_only_operators_and_superusers_manage_subscriptions(client, f, operator):
    approver = f.UserFactory(username="ada", roles=[Role.APPROVERS])
    with pytest.raises(PermissionDenied):
        subscribe(approver)
    client.force_login(approver)
    assert client.get(ADD).status_code == 403
    auditor = f.UserFactory(username="casey", roles=[Role.AUDITORS])
    client.force_login(auditor)
    assert client.get(reverse("admin:webhooks_subscription_changelist")).status_code == 200  # reads
    assert client.get(ADD).status_code == 403
    subscribe(operator)
    subscribe(f.UserFactory(username="root", is_superuser=True))
    assert Subscription.objects.count() == 2


def _queries(**kwargs) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        audit_record(verb=Verb.KILL_SWITCH_ON, channel="command", summary="Everything stopped.", **kwargs)
    return [query["sql"] for query in captured.captured_queries]


def test_with_no_subscription_recording_an_event_costs_no_extra_query(
    monkeypatch, operator, django_capture_on_commit_callbacks
):
    _queries()  # the subscriptions are read once (none), then known for GATEHOUSE_WEBHOOK_REFRESH
    with_follower = _queries()
    monkeypatch.setattr(followers, "_followers", [])  # as if webhooks were not installed
    without = _queries()
    assert len(with_follower) == len(without) >= 1
    monkeypatch.undo()
    # A subscription that wants the event (this process forgets what it knew once the change commits): one statement
    # more, its delivery row.
    with django_capture_on_commit_callbacks(execute=True):
        subscribe(operator)
    _queries()
    wanted = _queries()
    inserts = [sql for sql in wanted if "webhooks_delivery" in sql]
    assert len(inserts) == 1 and len(wanted) == len(without) + 1
    assert Delivery.objects.count() == 2
    # An event no subscription wants costs nothing more either.
    with CaptureQueriesContext(connection) as captured:
        audit_record(verb=Verb.APPROVED, channel="command", summary="Approved.")
    assert len(captured.captured_queries) == len(without)


def test_a_vault_key_rotation_takes_the_webhook_secrets_along(settings, operator):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    subscription, secret = subscribe(operator)
    old = settings.GATEHOUSE_CREDENTIAL_KEYS[0]
    settings.GATEHOUSE_CREDENTIAL_KEYS = [Fernet.generate_key().decode(), old]
    call_command("reencrypt_webhook_secrets")
    settings.GATEHOUSE_CREDENTIAL_KEYS = settings.GATEHOUSE_CREDENTIAL_KEYS[:1]  # the old key dropped
    subscription.refresh_from_db()
    assert decrypt(subscription.ciphertext) == secret
    assert AuditEvent.objects.filter(verb=Verb.CREDENTIAL_REENCRYPTED, input__count=1).exists()
