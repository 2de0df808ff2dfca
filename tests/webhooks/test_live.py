"""Webhooks through the running parts: events recorded here and by a real Celery worker are delivered by that worker to
a real receiver on loopback (sandbox/webhook_receiver.py) that verifies each signature. A kill switch and an executed
proposal arrive signed; a receiver failing on purpose is retried with growing waits and, once it comes back, has each
event exactly once (by webhook-id); one failing past the bounded time is parked, and an operator's replay from the
admin delivers it."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.urls import reverse

from approvals.killswitch import SwitchTarget, kill_switch_on
from governance.choices import Role
from governance.models import Agent
from tests.factories import post_proposal
from tests.faults import wait_until
from webhooks.models import Delivery, Subscription
from webhooks.services import subscription_save

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

FAST = {"GATEHOUSE_WEBHOOK_BACKOFF": "0.3", "GATEHOUSE_WEBHOOK_BACKOFF_MAX": "5"}


@pytest.fixture
def subscribed(private_stack, receiver):
    def make(*events: str) -> Subscription:
        subscription = Subscription(url=f"{receiver.url}/in", event_types=list(events))
        subscription_save(subscription=subscription, actor=None, channel="command", secret=receiver.secret)
        return subscription

    return make


def stop(slug: str = "reporting-agent", reason: str = "Incident 42") -> None:
    kill_switch_on(target=SwitchTarget(agent=Agent.objects.get(slug=slug)), reason=reason, channel="command")


def test_a_kill_switch_and_an_executed_proposal_arrive_signed(private_stack, receiver, subscribed, agent_client):
    subscribed("kill_switch.on", "proposal.executed")
    private_stack.worker("webhook-worker", **FAST)
    stop()
    response = post_proposal(agent_client("collections-agent"), "add_note", {"text": "Called, promised to pay."})
    assert response.status_code == 201, response.content
    proposal_id = response.json()["id"]
    got = receiver.wait_for(lambda got: len(got) >= 2, "two deliveries")
    assert all(item["verified"] and item["answered"] == 204 for item in got)
    by_type = {item["payload"]["type"]: item["payload"]["data"] for item in got}
    assert set(by_type) == {"kill_switch.on", "proposal.executed"}
    assert (
        by_type["kill_switch.on"]["agent"] == "reporting-agent"
        and "Incident 42" in by_type["kill_switch.on"]["summary"]
    )
    executed = by_type["proposal.executed"]
    assert executed["proposal_id"] == proposal_id and executed["system"] == "crm" and executed["record_id"] == "4471"
    assert executed["links"]["proposal"].endswith(reverse("admin:approvals_proposal_change", args=[proposal_id]))
    assert set(Delivery.objects.values_list("status", "attempts")) == {("delivered", 1)}


def test_a_failing_receiver_is_retried_with_growing_waits_and_has_each_event_once(private_stack, receiver, subscribed):
    subscribed("kill_switch.*")
    receiver.control("fail", {"status": 500, "count": 3})
    private_stack.worker("webhook-worker", **FAST)
    stop()
    got = receiver.wait_for(lambda got: any(item["answered"] == 204 for item in got), "a delivery it accepted")
    assert [item["answered"] for item in got] == [500, 500, 500, 204]
    assert len({item["id"] for item in got}) == 1 and [item["first"] for item in got].count(True) == 1
    assert all(item["verified"] for item in got)
    delivery = Delivery.objects.get()
    wait_until(lambda: Delivery.objects.get().status == "delivered", "the delivery recorded as delivered")
    delivery.refresh_from_db()
    assert delivery.attempts == 4 and delivery.last_error == "" and delivery.last_status_code == 204
    arrived = [item["at"] for item in got]
    waits = [later - earlier for earlier, later in itertools.pairwise(arrived)]
    assert waits[2] > 2 * waits[0], waits  # backoff: doubling from 0.3 s (jittered down by at most a quarter)
    private_stack.sweep()  # the sweeper finds nothing left to publish
    assert len(receiver.received()) == 4


def test_failing_past_the_bounded_time_parks_it_and_a_replay_from_the_admin_delivers_it(
    private_stack, receiver, subscribed, settings, client, f
):
    settings.GATEHOUSE_WEBHOOK_RETRY_FOR = timedelta(seconds=2)  # the window starts when the event is recorded, here
    subscribed("kill_switch.*")
    receiver.control("fail", {"status": 503})  # until it recovers
    private_stack.worker("webhook-worker", **FAST)
    stop()
    wait_until(lambda: Delivery.objects.get().status == "parked", "the delivery parked", timeout=30)
    parked = Delivery.objects.get()
    assert parked.attempts >= 3 and parked.last_status_code == 503
    failed = len(receiver.received())
    assert failed == parked.attempts
    receiver.control("recover")
    client.force_login(f.UserFactory(username="oscar", roles=[Role.OPERATORS]))
    changelist = reverse("admin:webhooks_delivery_changelist")
    response = client.post(changelist, {"action": "replay", "_selected_action": [parked.pk]}, follow=True)
    assert "Replayed 1 parked delivery" in response.content.decode()
    wait_until(lambda: Delivery.objects.get().status == "delivered", "the replayed delivery delivered")
    got = receiver.received()
    assert [item["answered"] for item in got] == [503] * failed + [204]
    assert {item["id"] for item in got} == {parked.message_id}
