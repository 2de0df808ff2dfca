"""Delivering a webhook, one attempt at a time in this process, to a real receiver on loopback
(sandbox/webhook_receiver.py) that verifies the Standard Webhooks signature: a kill switch arrives signed and verified,
with what a SIEM needs and no record values; a wrong secret fails verification there; an address the allow-list no
longer holds is not sent to; the claim lets one attempt through; a rotation signs with both secrets; a failing
receiver past the bounded time parks the delivery and an operator's replay from the admin delivers it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from standardwebhooks import Webhook

from approvals.killswitch import SwitchTarget, kill_switch_on
from audit.choices import Verb
from audit.models import AuditEvent
from governance.choices import Role
from webhooks.choices import DeliveryStatus
from webhooks.delivery import delivery_attempt
from webhooks.models import Delivery, Subscription
from webhooks.services import subscription_rotate_secret, subscription_save
from webhooks.signing import new_secret

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(f):
    return f.UserFactory(username="oscar", roles=[Role.OPERATORS])


@pytest.fixture
def subscription(receiver, operator, django_capture_on_commit_callbacks):
    """A subscription to kill switches at the receiver, signed with the receiver's secret."""
    with django_capture_on_commit_callbacks(execute=True):  # this process forgets what it knew of subscriptions
        made = Subscription(url=f"{receiver.url}/hooks/gatehouse", event_types=["kill_switch.*"], description="on-call")
        subscription_save(subscription=made, actor=operator, channel="admin", secret=receiver.secret)
    return made


def stop_agent(f, reason="Runaway loop") -> AuditEvent:
    agent = f.AgentFactory(slug="collections-agent")
    kill_switch_on(target=SwitchTarget(agent=agent), reason=reason, channel="command")
    return AuditEvent.objects.get(verb=Verb.KILL_SWITCH_ON)


def test_a_kill_switch_arrives_signed_and_verified(receiver, subscription, f):
    event = stop_agent(f)
    delivery = Delivery.objects.get()
    assert (delivery.event_id, delivery.event_type, delivery.status) == (event.pk, "kill_switch.on", "pending")
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.DELIVERED
    (got,) = receiver.received()
    assert got["verified"] and got["answered"] == 204 and got["id"] == delivery.message_id
    assert got["path"] == "/hooks/gatehouse"
    body = got["payload"]
    assert body["type"] == "kill_switch.on" and body["timestamp"].endswith("Z")
    data = body["data"]
    assert data["event_id"] == event.pk and data["hash"] == event.hash and data["verb"] == "kill_switch_on"
    assert data["agent"] == "collections-agent" and data["actor"] == {"type": "gatehouse", "name": "gatehouse"}
    assert "Runaway loop" in data["summary"]
    assert data["links"]["event"].endswith(reverse("admin:audit_auditevent_change", args=[event.pk]))
    assert not {"input", "decision", "state_before", "state_after"} & set(data)  # no record values leave
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 1 and delivery.last_status_code == 204
    # A second copy of the task finds it delivered: nothing is sent twice.
    assert delivery_attempt(delivery_id=delivery.pk).status == "duplicate"
    assert len(receiver.received()) == 1


def test_a_wrong_secret_fails_verification_at_the_receiver(receiver, subscription, f):
    receiver.control("secret", {"secret": new_secret()})
    stop_agent(f)
    delivery = Delivery.objects.get()
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.RETRYING
    (got,) = receiver.received()
    assert not got["verified"] and got["answered"] == 401 and "signature" in got["error"]
    delivery.refresh_from_db()
    assert delivery.last_status_code == 401 and delivery.last_error == "The receiver answered 401."
    assert delivery.next_attempt_at > delivery.created_at


def test_an_address_the_allow_list_no_longer_holds_is_not_sent_to(receiver, subscription, f, settings):
    stop_agent(f)
    settings.GATEHOUSE_CONNECTOR_HOSTS = ["example.com"]  # loopback taken off the list since the subscription was saved
    delivery = Delivery.objects.get()
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.RETRYING
    assert receiver.received() == []
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("Not sent: 127.0.0.1 is a private, loopback or link-local address")


def test_a_switched_off_subscription_gets_nothing(receiver, subscription, f, operator):
    stop_agent(f)
    subscription.active = False
    subscription_save(subscription=subscription, actor=operator, channel="admin")
    delivery = Delivery.objects.get()
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.CANCELLED
    assert receiver.received() == []


def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends(receiver, subscription, f, operator, settings):
    rotation = subscription_rotate_secret(subscription_id=subscription.pk, actor=operator, channel="admin")
    stop_agent(f)
    delivery = Delivery.objects.get()
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.DELIVERED  # the old secret verifies
    receiver.control("secret", {"secret": rotation.secret})
    Delivery.objects.filter(pk=delivery.pk).update(status="pending")
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.DELIVERED  # and so does the new one
    assert [got["verified"] for got in receiver.received()] == [True, True]
    assert len(receiver.received()[0]["payload"]) == 3
    Subscription.objects.filter(pk=subscription.pk).update(previous_until=subscription.secret_rotated_at)
    receiver.control("secret", {"secret": receiver.secret})  # the old one, past its overlap
    Delivery.objects.filter(pk=delivery.pk).update(status="pending")
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.RETRYING
    assert receiver.received()[-1]["answered"] == 401


def test_a_signature_is_the_standard_one():
    """The library's own verify accepts what Gatehouse signs, and refuses it once the body changes."""
    from django.utils import timezone

    from webhooks.signing import headers

    secret = new_secret()
    sent = headers(message_id="msg_1_2", body='{"type":"x"}', secrets_in_use=[secret], at=timezone.now())
    assert Webhook(secret).verify('{"type":"x"}', sent) == {"type": "x"}
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify('{"type":"y"}', sent)


def test_failing_past_the_bounded_time_parks_it_and_a_replay_from_the_admin_delivers_it(
    receiver, subscription, f, settings, client, operator
):
    settings.GATEHOUSE_WEBHOOK_RETRY_FOR = timedelta(seconds=30)
    settings.GATEHOUSE_WEBHOOK_BACKOFF = timedelta(seconds=0.4)
    receiver.control("fail", {"status": 500})  # until told to recover
    stop_agent(f)
    delivery = Delivery.objects.get()
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.RETRYING
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=delivery.created_at)  # as if the backoff passed
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.RETRYING
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=delivery.created_at, retry_until=delivery.created_at + timedelta(seconds=0.5)
    )
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.PARKED
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("parked", 3, 500)
    assert delivery_attempt(delivery_id=delivery.pk).status == "duplicate"  # parked stays parked
    receiver.control("recover")
    client.force_login(operator)
    changelist = reverse("admin:webhooks_delivery_changelist")
    assert "parked" in client.get(changelist, {"status__exact": "parked"}).content.decode()
    response = client.post(changelist, {"action": "replay", "_selected_action": [delivery.pk]}, follow=True)
    assert "Replayed 1 parked delivery" in response.content.decode()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.replays) == ("pending", 1)
    replayed = AuditEvent.objects.get(verb=Verb.WEBHOOK_REPLAYED)
    assert replayed.actor == "oscar" and replayed.input["deliveries"] == [delivery.pk]
    assert not Delivery.objects.filter(event=replayed).exists()  # a replay sends no webhook of its own
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.DELIVERED
    got = receiver.received()
    assert [item["answered"] for item in got] == [500, 500, 500, 204]
    assert {item["id"] for item in got} == {delivery.message_id}  # one webhook-id on every attempt and the replay
    assert [item["first"] for item in got].count(True) == 1


def test_only_parked_deliveries_are_replayed_and_only_by_operators(receiver, subscription, f, client):
    stop_agent(f)
    delivery = Delivery.objects.get()
    approver = f.UserFactory(username="ada", roles=[Role.APPROVERS])
    client.force_login(approver)
    changelist = reverse("admin:webhooks_delivery_changelist")
    assert client.post(changelist, {"action": "replay", "_selected_action": [delivery.pk]}).status_code == 403
    client.force_login(f.UserFactory(username="oscar2", roles=[Role.OPERATORS]))
    response = client.post(changelist, {"action": "replay", "_selected_action": [delivery.pk]}, follow=True)
    assert "1 left alone: only parked deliveries are replayed" in response.content.decode()
    assert not AuditEvent.objects.filter(verb=Verb.WEBHOOK_REPLAYED).exists()
