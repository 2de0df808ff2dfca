"""Execution against real processes: retries and backoff, the retry budget, permanent errors, a worker killed
mid-write, the broker down (outbox), a task delivered again past Redis's visibility timeout while it runs, Redis
restarted under a running worker, and the kill switch between approval and execution.

Each test gets a private stack (tests/faults.py: its own sample CRM, its own broker queue, workers configured by
environment) so it can shape the CRM's faults and the workers' settings without disturbing the session's stack.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from approvals.choices import ProposalStatus
from approvals.decisions import proposal_approve
from approvals.execution import execution_lease, outbox_sweep, retry_delay
from approvals.models import OutboxMessage, Proposal
from audit.models import AuditEvent
from governance.models import ActionType, Agent, GlobalSwitch, ScopeGrant, System
from tests.factories import propose_limit as propose
from tests.faults import FAST_RETRIES, redis_queue_length, verbs, wait_until

# --- Retries ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_throttled_write_is_retried_after_retry_after_and_applied_once(private_stack):
    proposal = propose("2300.00")  # +300: auto; the message waits in the queue until a worker starts
    assert proposal.status == ProposalStatus.APPROVED
    private_stack.mode(mode="throttle", retry_after=1, count=2)

    private_stack.worker("fast-worker", **FAST_RETRIES)
    done = private_stack.wait_for(proposal.pk, "executed", "failed")

    assert done.status == ProposalStatus.EXECUTED, done.failure_reason
    assert done.attempts == 3
    assert done.claimed_at is None
    assert private_stack.crm_writes(str(proposal.pk)) == 1
    assert private_stack.crm_account("4471")["credit_limit"] == "2300.00"
    assert done.state_before == {"credit_limit": "2000.00"} and done.state_after == {"credit_limit": "2300.00"}
    # The backoff alone would be 0.1-0.4 s; the CRM asked for 1 s and was given at least that, twice.
    delays = [float(delay) for delay in re.findall(r"Retry in ([0-9.]+)s", private_stack.log("fast-worker"))]
    assert len(delays) == 2 and all(delay >= 1.0 for delay in delays), delays
    assert verbs(proposal.pk) == ["proposed", "auto_approved", "executing", "executed"]


# How the CRM misbehaves for longer than the retry budget, and what the failure reason then names.
STAYS_DOWN = {
    "5xx": ({"mode": "error", "status": 503, "count": 100}, "503"),
    "429 for minutes": ({"mode": "throttle", "retry_after": 1, "count": 1000}, "429"),
    "slower than the timeout": ({"mode": "slow", "delay": 3}, "timed out"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(STAYS_DOWN))
def test_a_system_that_stays_down_fails_the_proposal_after_a_bounded_number_of_attempts(private_stack, fault):
    mode, named = STAYS_DOWN[fault]
    crm = System.objects.get(slug="crm")
    crm.connector_config = {**crm.connector_config, "timeout": 1}  # the slow CRM answers after 3 s
    crm.save()
    proposal = propose("2300.00")
    requests_before = private_stack.stats()["requests_total"]  # the proposal's own read of the record
    private_stack.mode(**mode)

    private_stack.worker("fast-worker", **FAST_RETRIES)
    done = private_stack.wait_for(proposal.pk, "executed", "failed")

    assert done.status == ProposalStatus.FAILED
    assert done.attempts == 3
    assert "gave up after retries" in done.failure_reason and named in done.failure_reason, done.failure_reason
    if fault == "429 for minutes":  # each retry waited at least as long as the CRM asked
        delays = [float(delay) for delay in re.findall(r"Retry in ([0-9.]+)s", private_stack.log("fast-worker"))]
        assert len(delays) == 2 and all(delay >= 1.0 for delay in delays), delays
    time.sleep(1.0)  # a retry storm would show in the CRM's counters by now
    stats = private_stack.stats()
    assert stats["requests_total"] - requests_before == 3  # one request per attempt, then nothing
    assert stats["writes_total"] == 0
    failed = AuditEvent.objects.get(proposal_id=proposal.pk, verb="failed")
    assert failed.outcome == "failed" and "after 3 attempt(s)" in failed.summary
    assert verbs(proposal.pk) == ["proposed", "auto_approved", "executing", "failed"]
    private_stack.mode(mode="normal")
    assert private_stack.crm_account("4471")["credit_limit"] == "2000.00"


@pytest.mark.slow
def test_a_permanent_error_fails_at_once_without_retrying(private_stack):
    action = ActionType.objects.get(system__slug="crm", name="update_credit_limit")
    action.operation = {"method": "POST", "path": "/nowhere/{record_id}"}  # a wrong mapping: the CRM answers 404
    action.save()
    proposal = propose("2300.00")

    private_stack.worker("fast-worker", **FAST_RETRIES)
    done = private_stack.wait_for(proposal.pk, "executed", "failed")

    assert done.status == ProposalStatus.FAILED
    assert done.attempts == 1
    assert "POST /nowhere/4471" in done.failure_reason and "not found" in done.failure_reason
    assert "Retry in" not in private_stack.log("fast-worker")
    assert AuditEvent.objects.filter(proposal_id=proposal.pk, verb="failed").count() == 1
    assert private_stack.stats()["writes_total"] == 0


# --- A worker dies mid-execution --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("killed_during", ["read", "write"])
def test_a_write_whose_worker_was_killed_is_taken_up_after_the_lease_and_applied_once(
    private_stack, settings, killed_during
):
    """Killed while reading the record (nothing written yet), or while the CRM is applying the write (written, not
    recorded): either way the next worker writes through the same idempotency key and the CRM applies it once."""
    limits = {"GATEHOUSE_TASK_SOFT_TIME_LIMIT": "4", "GATEHOUSE_TASK_TIME_LIMIT": "5"}
    proposal = propose("2300.00")
    # This process's sweeper judges the lease as the workers do. Set only now: the task is bound to the Celery app
    # (which copies the limits into the task and its messages) by the first publish, just made with the real settings.
    settings.CELERY_TASK_TIME_LIMIT = 5
    key = str(proposal.pk)
    requests_before = private_stack.stats()["requests_total"]
    private_stack.mode(mode="slow", delay=1.5)  # each request: 1.5 s, well inside the 4 s soft limit for both

    private_stack.worker("doomed-worker", concurrency=1, **limits)
    executing = private_stack.wait_for(proposal.pk, "executing", timeout=20)
    in_flight = {"read": 1, "write": 2}[killed_during]  # the CRM counts a request when it arrives, before the delay
    wait_until(lambda: private_stack.stats()["requests_total"] == requests_before + in_flight, "the CRM call")
    private_stack.stack.kill("doomed-worker")  # SIGKILL mid-call: no chance to release the claim
    private_stack.mode(mode="normal")
    if killed_during == "write":
        wait_until(lambda: private_stack.crm_writes(key) == 1, "the CRM to apply the dead worker's write")
    else:
        assert private_stack.crm_writes(key) == 0
    private_stack.worker("fresh-worker", concurrency=1, **limits)

    assert executing.claimed_at is not None and executing.attempts == 1
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.EXECUTING
    assert outbox_sweep() == 0, "a claim younger than the lease belongs to a worker that may still be running"
    lease_ends = executing.claimed_at + execution_lease()
    time.sleep(max(0.0, (lease_ends - timezone.now()).total_seconds()) + 0.3)
    assert outbox_sweep() == 1

    done = private_stack.wait_for(proposal.pk, "executed", "failed", timeout=20)
    assert done.status == ProposalStatus.EXECUTED, done.failure_reason
    assert done.attempts == 2
    assert private_stack.crm_writes(key) == 1
    assert private_stack.crm_account("4471")["credit_limit"] == "2300.00"
    # The state before is the CRM's own account of it, even when the write had already been applied.
    assert done.state_before == {"credit_limit": "2000.00"} and done.state_after == {"credit_limit": "2300.00"}
    assert AuditEvent.objects.filter(proposal_id=proposal.pk, verb="executed").count() == 1
    assert verbs(proposal.pk) == ["proposed", "auto_approved", "executing", "executed"]


# --- The broker is down -----------------------------------------------------------------------------------------


def second_collections_agent() -> Agent:
    """Another agent with the collections agent's grants: agents, not one agent, propose while the broker is down."""
    first = Agent.objects.get(slug="collections-agent")
    second = Agent.objects.create(slug="collections-agent-eu", name="Collections agent (EU)", owner=first.owner)
    for grant in ScopeGrant.objects.filter(agent=first):
        grant.pk, grant.agent = None, second
        grant.save()
    return second


@pytest.mark.slow
@pytest.mark.redis
def test_proposals_made_while_the_broker_is_down_answer_at_once_and_execute_once_it_is_back(
    private_stack, private_redis
):
    private_stack.worker("worker", REDIS_URL=private_redis.url)
    private_stack.web(REDIS_URL=private_redis.url)
    agents = [private_stack.agent(), private_stack.agent(second_collections_agent().slug)]
    private_redis.stop()

    asked = [
        (agents[0], "update_credit_limit", "4471", {"credit_limit": "2300.00"}),
        (agents[1], "update_credit_limit", "4472", {"credit_limit": "1700.00"}),
        (agents[1], "add_note", "4473", {"text": "Promised payment on Friday."}),
    ]
    proposal_ids = []
    for agent, action, record, payload in asked:
        started = time.monotonic()
        response = agent.post(
            "/api/v1/proposals",
            json={"system": "crm", "action": action, "record_id": record, "payload": payload, "reason": "test"},
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 201, response.text
        assert elapsed < 2.0, f"the agent waited {elapsed:.2f} s for a broker that is down"
        proposal_ids.append(response.json()["id"])
    assert set(Proposal.objects.filter(pk__in=proposal_ids).values_list("status", flat=True)) == {"approved"}
    messages = OutboxMessage.objects.filter(proposal_id__in=proposal_ids)
    assert len(messages) == 3
    assert all(m.published_at is None and m.publish_attempts == 1 and m.last_error for m in messages)

    private_redis.start()  # same port: the worker and the sweeper find it where it was
    newest = max(message.created_at for message in messages)
    time.sleep(max(0.0, 2.1 - (timezone.now() - newest).total_seconds()))  # the sweeper's grace period
    assert private_stack.sweep(REDIS_URL=private_redis.url) == 3

    for proposal_id in proposal_ids:
        done = private_stack.wait_for(proposal_id, "executed", "failed")
        assert done.status == ProposalStatus.EXECUTED, done.failure_reason
        assert private_stack.crm_writes(proposal_id) == 1
        assert verbs(proposal_id) == ["proposed", "auto_approved", "executing", "executed"]
    assert private_stack.stats()["writes_total"] == 3
    assert not OutboxMessage.objects.filter(proposal_id__in=proposal_ids, published_at__isnull=True).exists()
    assert not OutboxMessage.objects.filter(proposal_id__in=proposal_ids).exclude(last_error="").exists()


# --- The broker delivers again: the visibility timeout -----------------------------------------------------------


def post_proposal(agent, action: str, record: str, payload: dict) -> str:
    response = agent.post(
        "/api/v1/proposals",
        json={"system": "crm", "action": action, "record_id": record, "payload": payload, "reason": "test"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def scrape(web_url: str) -> dict[str, float]:
    """The web process's /metrics (this test is a loopback caller), unlabelled samples by name."""
    body = httpx.get(f"{web_url}/metrics", timeout=10).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if not sample.labels
    }


@pytest.mark.slow
@pytest.mark.redis
def test_a_task_running_past_the_visibility_timeout_is_delivered_again_suppressed_counted_and_written_once(
    private_stack, private_redis
):
    """Redis hands out again a task not acknowledged within the visibility timeout of its delivery, though its first
    run is still going (kombu's restore_visible, run by the worker every `unacked_restore_interval`: 1 s here, for a
    2 s timeout). The second delivery finds the proposal executing under a live claim: it does nothing but count."""
    broker = {"REDIS_URL": private_redis.url}
    private_stack.web(**broker)
    proposal_id = post_proposal(private_stack.agent(), "update_credit_limit", "4471", {"credit_limit": "2300.00"})
    private_stack.mode(mode="slow", delay=3, count=2)  # the execution's read and write: 3 s each (the timeout is 5 s)
    # Two processes, so one is free to take the second delivery; time limits far above the call, so the claim's lease
    # (the hard limit + 5 s) outlives it and the second delivery sees a live claim, not an abandoned one.
    private_stack.worker(
        "worker",
        GATEHOUSE_BROKER_VISIBILITY_TIMEOUT="2",
        GATEHOUSE_TASK_SOFT_TIME_LIMIT="30",
        GATEHOUSE_TASK_TIME_LIMIT="40",
        **broker,
    )

    wait_until(
        lambda: Proposal.objects.get(pk=proposal_id).duplicate_deliveries >= 1,
        "the second delivery of the task",
        timeout=30,
    )
    done = private_stack.wait_for(proposal_id, "executed", "failed", timeout=30)

    assert done.status == ProposalStatus.EXECUTED, done.failure_reason
    assert done.attempts == 1
    assert private_stack.crm_writes(proposal_id) == 1
    assert private_stack.crm_account("4471")["credit_limit"] == "2300.00"
    assert verbs(proposal_id) == ["proposed", "auto_approved", "executing", "executed"]
    log = private_stack.log("worker")
    deliveries = len(re.findall(r"approvals\.execute_proposal\[[0-9a-f-]+\] received", log))
    duplicates = re.findall(rf"duplicate delivery of proposal {proposal_id} suppressed: (.*)", log)
    assert deliveries == 1 + done.duplicate_deliveries == 1 + len(duplicates), log[-3000:]
    # Judged under the row lock while the first run was still in the CRM (6 s in all), not after it finished.
    assert "already executing under a live claim" in duplicates[0], duplicates
    assert scrape(private_stack.stack.web_url)["gatehouse_duplicate_deliveries_total"] == done.duplicate_deliveries


# --- Redis restarted under running workers ----------------------------------------------------------------------


def redacted(url: str) -> str:
    """The broker URL as Celery logs it."""
    return url.replace("redis://", "redis://:**@")


@pytest.mark.slow
@pytest.mark.redis
def test_redis_restarted_under_a_running_worker_it_consumes_again_and_what_redis_lost_is_published_again(
    private_stack, private_redis
):
    """Redis keeps nothing on disk here: a restart loses every queued message. The worker that was running goes on
    consuming from the new one without a restart of its own; the outbox sweeper publishes again what was lost, and
    the queue-age metric (the alert) shows it waiting until then."""
    broker = {"REDIS_URL": private_redis.url}
    web_url = private_stack.web(**broker)
    # One process and prefetch 1: while it writes, the next message waits in Redis, not in the worker.
    worker = private_stack.worker("worker", concurrency=1, **broker)
    agent = private_stack.agent()
    before = post_proposal(agent, "add_note", "4471", {"text": "Before the restart."})
    private_stack.wait_for(before, "executed", "failed")

    private_stack.mode(mode="slow", delay=2.5, count=2)  # the next proposal's read, then its write
    running = post_proposal(agent, "add_note", "4472", {"text": "Written while Redis restarts."})
    private_stack.wait_for(running, "executing")
    queued = post_proposal(agent, "add_note", "4473", {"text": "Queued in Redis when it went away."})
    assert OutboxMessage.objects.get(proposal_id=queued).published_at is not None
    assert redis_queue_length(private_redis.url, private_stack.stack.queue) == 1  # waiting behind the write
    private_redis.stop()
    private_redis.start()  # the same port, empty

    # (a) The same worker process takes up new work. The web process publishes to the new Redis at once; the worker
    # reconnects on its own (Celery's consumer retries 2 s after the loss, then every 2 s more, up to 30 s apart).
    after = post_proposal(agent, "add_note", "4471", {"text": "After the restart."})
    published = OutboxMessage.objects.get(proposal_id=after)
    assert published.published_at is not None and published.publish_attempts == 1  # at the first try
    private_stack.wait_for(after, "executed", "failed", timeout=60)
    assert private_stack.stack.processes["worker"] is worker and worker.alive()
    log = private_stack.log("worker")
    assert "Connection to broker lost" in log and log.count(f"Connected to {redacted(private_redis.url)}") >= 2, log

    # (b) What Redis lost waits, and the queue-age metric says so, until the sweeper publishes it again.
    assert Proposal.objects.get(pk=queued).status == ProposalStatus.APPROVED
    waited = (timezone.now() - OutboxMessage.objects.get(proposal_id=queued).created_at).total_seconds()
    assert waited - 1 <= scrape(web_url)["gatehouse_execution_queue_oldest_age_seconds"] <= waited + 10
    assert private_stack.sweep(GATEHOUSE_OUTBOX_REPUBLISH_AFTER="1", **broker) == 1
    private_stack.wait_for(queued, "executed", "failed")
    assert scrape(web_url)["gatehouse_execution_queue_oldest_age_seconds"] == 0

    for proposal_id in (before, running, queued, after):
        done = Proposal.objects.get(pk=proposal_id)
        assert done.status == ProposalStatus.EXECUTED, done.failure_reason
        # Nothing came twice: on reconnecting, the worker restores its unacknowledged message from Redis's own copy,
        # which the restart lost too; the write in progress finished and its acknowledgement went nowhere.
        assert done.duplicate_deliveries == 0
        assert private_stack.crm_writes(proposal_id) == 1
        assert verbs(proposal_id) == ["proposed", "auto_approved", "executing", "executed"]
    assert private_stack.stats()["writes_total"] == 4


# --- Priority: a person's approval goes ahead of the auto-approved queue --------------------------------------


@pytest.mark.slow
@pytest.mark.redis
def test_a_write_a_person_approved_goes_ahead_of_auto_approved_ones_in_the_queue(private_stack):
    """Under load the queue holds auto-approved writes for seconds (bench/reliability.py); the approver, who is
    waiting to see the change made, should not wait behind them."""
    auto = [propose("2300.00", record="4471"), propose("1700.00", record="4472")]  # queued first, no worker yet
    assert all(p.status == ProposalStatus.APPROVED for p in auto)
    with transaction.atomic():
        approved = propose("13500.00", record="4473")  # +3,500: one approver
        assert approved.status == ProposalStatus.PENDING_APPROVAL
        proposal_approve(
            proposal_id=approved.pk, user=get_user_model().objects.get(username="approver"), channel="admin"
        )
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0  # all three are in the broker

    private_stack.worker("worker", concurrency=1)  # one at a time: the order is the broker's
    for proposal in [*auto, approved]:
        assert private_stack.wait_for(proposal.pk, "executed", "failed").status == ProposalStatus.EXECUTED
    order = sorted([*auto, approved], key=lambda p: Proposal.objects.get(pk=p.pk).executed_at)
    assert order[0].pk == approved.pk, [p.record_id for p in order]


# --- The kill switch --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_global_stop_engaged_after_approval_puts_the_queued_execution_on_hold(private_stack):
    proposal = propose("5000.00")  # +3,000: one approver
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    with transaction.atomic():
        proposal_approve(
            proposal_id=proposal.pk, user=get_user_model().objects.get(username="approver"), channel="admin"
        )
    assert OutboxMessage.objects.get(proposal=proposal).published_at is not None  # queued; no worker consumes yet
    GlobalSwitch.objects.create(pk=1, engaged=True, reason="drill")

    private_stack.worker("worker")
    held = private_stack.wait_for(proposal.pk, "on_hold", "executing", "executed", "failed")

    assert held.status == ProposalStatus.ON_HOLD
    assert held.attempts == 0
    event = AuditEvent.objects.get(proposal_id=proposal.pk, outcome="on_hold")
    assert "the global stop is engaged: drill" in event.summary
    assert verbs(proposal.pk) == ["proposed", "approved", "held"]
    assert held.held_from == ProposalStatus.APPROVED  # where the release sends it back
    assert private_stack.stats()["writes_total"] == 0
    assert private_stack.crm_account("4471")["credit_limit"] == "2000.00"


# --- Backoff ----------------------------------------------------------------------------------------------------


@pytest.fixture
def backoff(settings):
    settings.GATEHOUSE_EXECUTION_BACKOFF = timedelta(seconds=2)
    settings.GATEHOUSE_EXECUTION_BACKOFF_MAX = timedelta(seconds=60)
    return retry_delay


def test_the_retry_delay_is_never_sooner_than_the_systems_retry_after(backoff):
    for attempt in range(1, 12):
        assert all(backoff(attempt, 7.5) >= 7.5 for _ in range(50))
    assert backoff(1, 3600.0) == 3600.0  # even beyond the cap: the system asked for it
    assert 1.0 <= backoff(1, 0.0) <= 2.0
    assert 1.0 <= backoff(1, None) <= 2.0


def test_the_retry_delay_doubles_with_each_attempt_with_jitter(backoff):
    for attempt, (low, high) in {1: (1, 2), 2: (2, 4), 3: (4, 8), 4: (8, 16), 5: (16, 32)}.items():
        samples = [backoff(attempt, None) for _ in range(200)]
        assert all(low <= sample <= high for sample in samples), (attempt, min(samples), max(samples))
        assert max(samples) - min(samples) > (high - low) / 4  # jitter spreads the retries out


def test_the_retry_delay_is_capped(backoff):
    for attempt in (6, 7, 10, 30, 60):
        samples = [backoff(attempt, None) for _ in range(100)]
        assert all(30 <= sample <= 60 for sample in samples), (attempt, min(samples), max(samples))


def test_a_retry_is_never_scheduled_past_the_brokers_visibility_timeout(settings):
    """A worker holds a retry unacknowledged until it is due: due after the visibility timeout, Redis would hand it to
    a second worker too. A long Retry-After is cut short; the system's rate limit defers the early call again."""
    from approvals.tasks import within_visibility

    settings.GATEHOUSE_BROKER_VISIBILITY_TIMEOUT = 100
    assert within_visibility(3600.0) == 80.0
    assert within_visibility(5.0) == 5.0
    assert within_visibility(None) is None
