"""Gatehouse's own database failing at the worst moment, with real processes: nothing lost, nothing duplicated, a clear
error.

- The PostgreSQL connection is lost mid-approval, after the proposal's row was updated and while the approval's
  audit event waits for the chain's lock: the person (or agent) gets a clear 503, no partial rows remain, the chain
  still verifies, and trying again succeeds and executes once.
- A process dies between the commit and the publish of its outbox row: the sweeper publishes the row later, and the
  worker executes it once.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from approvals.choices import ProposalStatus
from approvals.execution import outbox_sweep
from approvals.models import IdempotencyRecord, OutboxMessage, Proposal
from approvals.tasks import sweep_outbox
from audit.integrity import verify_chain
from audit.models import AuditEvent
from audit.services import _CHAIN_LOCK_KEY
from core.database import RETRY_AFTER_SECONDS
from gatehouse.celery import app as celery_app
from tests.factories import propose_limit as propose
from tests.faults import wait_until
from tests.stack import ROOT

EXECUTED_ONCE = {"proposed": 1, "approved": 1, "executing": 1, "executed": 1}
AUTO_EXECUTED_ONCE = {"proposed": 1, "auto_approved": 1, "executing": 1, "executed": 1}


def verb_counts(proposal_id) -> Counter:
    """The proposal's audit verbs, without the approver's look at the record (a `read` event from the change page)."""
    verbs = AuditEvent.objects.filter(proposal_id=proposal_id).exclude(verb="read").values_list("verb", flat=True)
    return Counter(verbs)


# --- The connection is lost mid-approval ------------------------------------------------------------------------


@pytest.fixture
def approver(live):
    """An HTTP session signed in to the web process's admin as `approver`, through its login form as a browser is."""
    user = get_user_model().objects.get(username="approver")
    hasher = PBKDF2PasswordHasher()  # the web process verifies with the production hasher, not the suite's fast one
    user.password = hasher.encode("fault-test-password", hasher.salt(), iterations=1000)
    user.save()
    with httpx.Client(base_url=live.stack.web_url, timeout=30) as session:
        login = session.get("/admin/login/")
        response = session.post(
            "/admin/login/?next=/admin/",
            data={"username": "approver", "password": "fault-test-password", "csrfmiddlewaretoken": csrf_token(login)},
        )
        assert response.status_code == 302, response.text[-2000:]
        yield session


def csrf_token(page: httpx.Response) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert found, f"no CSRF token on {page.url}"
    return found.group(1)


Click = Callable[[], httpx.Response]


def approve_by_button(session: httpx.Client, proposal_id: str) -> Click:
    """The person opens the proposal's page (which reads and audits the record); the click posts the approve button."""
    page = session.get(reverse("admin:approvals_proposal_change", args=[proposal_id]))
    assert 'id="approve-button"' in page.text
    form = {"step": "approve", "reason": "", "csrfmiddlewaretoken": csrf_token(page)}
    return lambda: session.post(reverse("admin:approvals_decide", args=[proposal_id]), data=form)


def approve_in_bulk(session: httpx.Client, proposal_id: str) -> Click:
    """The person opens the queue; the click posts its bulk action with the proposal ticked."""
    queue = session.get(reverse("admin:approvals_proposal_changelist"))
    assert proposal_id in queue.text
    form = {
        "action": "approve_selected",
        "_selected_action": proposal_id,
        "index": "0",
        "select_across": "0",
        "csrfmiddlewaretoken": csrf_token(queue),
    }
    return lambda: session.post(reverse("admin:approvals_proposal_changelist"), data=form)


class ChainLockHolder:
    """A connection of the test's own that holds the audit chain's advisory lock, so a request that reaches its audit
    append waits there with its transaction open and its first rows written, until the test terminates its backend.
    """

    def __init__(self) -> None:
        settings = connection.settings_dict
        self.conn = psycopg.connect(
            host=settings["HOST"],
            port=settings["PORT"] or 5432,
            user=settings["USER"],
            password=settings["PASSWORD"],
            dbname=settings["NAME"],
            autocommit=True,
        )
        self.conn.execute("SELECT pg_advisory_lock(%s)", [_CHAIN_LOCK_KEY])

    def waiting_backend(self) -> int | None:
        """The backend waiting for the chain's lock inside the audit append, once it has written to the proposals
        table in the same transaction (its RowExclusiveLock on the table says so)."""
        row = self.conn.execute(
            """
            SELECT a.pid FROM pg_stat_activity AS a
            WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
              AND a.wait_event_type = 'Lock' AND a.wait_event = 'advisory' AND a.query LIKE %s
              AND EXISTS (SELECT 1 FROM pg_locks AS l WHERE l.pid = a.pid AND l.granted
                          AND l.relation = 'approvals_proposal'::regclass AND l.mode = 'RowExclusiveLock')
            """,
            ["%audit_chain_next%"],
        ).fetchone()
        return row[0] if row else None

    def terminate(self, pid: int) -> None:
        assert self.conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", [_CHAIN_LOCK_KEY])
            self.conn.close()


def lose_the_connection_during(request: Click) -> httpx.Response:
    """Send `request` while the chain's lock is held; when its backend is waiting for it, mid-transaction and after
    its first write, terminate that backend (the same as a PostgreSQL restart or a network cut for that one
    connection), then let go of the lock. Returns the response the request got."""
    backend: int | None = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        holder = ChainLockHolder()
        try:  # released before the pool waits for the request, which may be waiting for the lock
            pending = pool.submit(request)

            def waiting() -> bool:
                nonlocal backend
                if pending.done():
                    answer = pending.result()
                    raise AssertionError(f"answered {answer.status_code} before it waited: {answer.text[-2000:]}")
                backend = holder.waiting_backend()
                return backend is not None

            wait_until(waiting, "the request's backend to wait for the audit chain")
            holder.terminate(backend)
        finally:
            holder.release()
        return pending.result(timeout=30)


def assert_lost_connection_page(response: httpx.Response, web_log: str) -> None:
    assert response.status_code == 503, response.text[-3000:]
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "The database connection was lost" in response.text and "nothing was changed" in response.text
    request_id = response.headers["X-Request-ID"]
    assert request_id in response.text
    assert f"(request {request_id}) answered 503: OperationalError: terminating connection" in web_log


def assert_chain_holds() -> None:
    report = verify_chain()
    assert report.ok, report.reason


def pending_raise(live) -> str:
    """+3,000 on account 4471 (2,000 → 5,000): the one-approver band, so the approver decides it."""
    response = live.agent().post(
        "/api/v1/proposals",
        json={
            "system": "crm",
            "action": "update_credit_limit",
            "record_id": "4471",
            "payload": {"credit_limit": "5000.00"},
            "reason": "paid on time",
        },
    )
    assert response.status_code == 201 and response.json()["status"] == "pending_approval", response.text
    return response.json()["id"]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("door", [approve_by_button, approve_in_bulk], ids=["button", "bulk action"])
def test_an_approval_whose_database_connection_is_lost_answers_503_leaves_nothing_and_can_be_retried(
    live, approver, door
):
    proposal_id = pending_raise(live)

    response = lose_the_connection_during(door(approver, proposal_id))

    assert_lost_connection_page(response, live.stack.processes["web"].output())
    proposal = Proposal.objects.get(pk=proposal_id)
    assert proposal.status == ProposalStatus.PENDING_APPROVAL  # the UPDATE was rolled back with the rest
    assert proposal.decided_by_id is None and proposal.decided_at is None
    assert not AuditEvent.objects.filter(proposal_id=proposal_id, verb="approved").exists()
    assert not OutboxMessage.objects.filter(proposal_id=proposal_id).exists()
    assert_chain_holds()
    assert live.crm_writes(proposal_id) == 0

    retried = door(approver, proposal_id)()  # the same session; the web process opens a fresh connection

    assert retried.status_code == 302, retried.text[-2000:]
    done = live.wait_for(proposal_id, "executed", "failed")
    assert done.status == ProposalStatus.EXECUTED, done.failure_reason
    assert done.decided_by.username == "approver"
    assert live.crm_writes(proposal_id) == 1
    assert live.crm_account("4471")["credit_limit"] == "5000.00"
    assert verb_counts(proposal_id) == EXECUTED_ONCE
    assert OutboxMessage.objects.filter(proposal_id=proposal_id).count() == 1
    assert_chain_holds()


@pytest.mark.slow
@pytest.mark.postgres
def test_a_proposal_whose_database_connection_is_lost_answers_503_and_the_same_key_makes_it_once(live):
    """The API's door: the auto-approved proposal's row is inserted, its `proposed` event waits for the chain."""
    agent = live.agent()
    key = f"lost-connection-{uuid.uuid4()}"
    body = {
        "system": "crm",
        "action": "update_credit_limit",
        "record_id": "4471",
        "payload": {"credit_limit": "2300.00"},  # +300: executed at once by the rule
        "reason": "paid on time",
    }

    def send() -> httpx.Response:
        return agent.post("/api/v1/proposals", json=body, headers={"Idempotency-Key": key})

    response = lose_the_connection_during(send)

    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.json()["code"] == "database_unavailable"
    request_id = response.headers["X-Request-ID"]
    assert f"(request {request_id}) answered 503" in live.stack.processes["web"].output()
    assert not Proposal.objects.exists()
    assert not IdempotencyRecord.objects.filter(key=key).exists()
    assert not OutboxMessage.objects.exists()
    assert not AuditEvent.objects.filter(request_id=request_id).exists()
    assert_chain_holds()

    retried = send()

    assert retried.status_code == 201, retried.text
    proposal_id = retried.json()["id"]
    assert send().json()["id"] == proposal_id  # and from now on the key answers with the same proposal
    done = live.wait_for(proposal_id, "executed", "failed")
    assert done.status == ProposalStatus.EXECUTED, done.failure_reason
    assert Proposal.objects.count() == 1
    assert live.crm_writes(proposal_id) == 1
    assert verb_counts(proposal_id) == AUTO_EXECUTED_ONCE
    assert_chain_holds()


# --- A crash between commit and publish -------------------------------------------------------------------------

# Run by `manage.py shell` with the stack's environment. The first on_commit callback runs first: the process kills
# itself right after COMMIT, before the outbox callback that would publish the execution to the broker.
_DIE_AFTER_COMMIT = """
import os, signal
from django.db import transaction
with transaction.atomic():
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
{step}
"""

_APPROVE = """
    from django.contrib.auth import get_user_model
    from approvals.decisions import proposal_approve
    user = get_user_model().objects.get(username="approver")
    proposal_approve(proposal_id="{proposal_id}", user=user, channel="admin")
"""

_PROPOSE_AUTO = """
    from approvals.services import proposal_create, ProposalRequest
    from governance.models import Agent
    request = ProposalRequest(system="crm", action="update_credit_limit", record_id="4471",
                              payload={{"credit_limit": "2300.00"}}, reason="paid on time")
    agent = Agent.objects.get(slug="collections-agent")
    proposal_create(agent=agent, request=request, channel="api")
"""


def die_after_commit(private_stack, step: str) -> None:
    run = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", _DIE_AFTER_COMMIT.format(step=step)],
        cwd=ROOT,
        env=private_stack.stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == -signal.SIGKILL, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"


def messages_in_broker(queue: str) -> int:
    """Messages waiting in the stack's queue, asked of the broker itself (Redis or the filesystem transport)."""
    with celery_app.connection_for_write() as broker:
        return broker.default_channel.queue_declare(queue=queue).message_count


@pytest.mark.slow
@pytest.mark.parametrize("path", ["approval", "auto-approved proposal"])
def test_a_crash_between_commit_and_publish_is_published_by_the_sweeper_and_executed_once(private_stack, path):
    if path == "approval":
        proposal = propose("5000.00")  # +3,000: one approver
        assert proposal.status == ProposalStatus.PENDING_APPROVAL
        queued = messages_in_broker(private_stack.stack.queue)  # the request to decide, for a worker to mail
        die_after_commit(private_stack, _APPROVE.format(proposal_id=proposal.pk))
    else:
        queued = 0
        die_after_commit(private_stack, _PROPOSE_AUTO.format())
        proposal = Proposal.objects.get()
    proposal_id = str(proposal.pk)

    # Committed: approved, with its outbox row; never published, and nothing in the broker for a worker to take.
    assert Proposal.objects.get(pk=proposal_id).status == ProposalStatus.APPROVED
    message = OutboxMessage.objects.get(proposal_id=proposal_id)
    assert message.published_at is None and message.publish_attempts == 0
    assert messages_in_broker(private_stack.stack.queue) == queued

    worker = private_stack.worker("worker")
    assert Proposal.objects.get(pk=proposal_id).status == ProposalStatus.APPROVED
    # The sweeper leaves a row alone for its first 2 s (its own commit's publish may still be on the way).
    time.sleep(max(0.0, 2.1 - (timezone.now() - message.created_at).total_seconds()))
    sweep_outbox.apply_async()  # what beat sends every 10 s; the worker runs it

    done = private_stack.wait_for(proposal_id, "executed", "failed")
    assert done.status == ProposalStatus.EXECUTED, done.failure_reason
    wait_until(lambda: re.search(r"approvals\.outbox_sweep\[[^]]+\] succeeded in [0-9.]+s: 1", worker.output()), "log")
    message.refresh_from_db()
    assert message.published_at is not None and message.publish_attempts == 1
    assert private_stack.crm_writes(proposal_id) == 1
    assert private_stack.crm_account("4471")["credit_limit"] == ("5000.00" if path == "approval" else "2300.00")
    assert verb_counts(proposal_id) == (EXECUTED_ONCE if path == "approval" else AUTO_EXECUTED_ONCE)
    assert outbox_sweep() == 0  # executed: nothing left for a later sweep to send again
    assert_chain_holds()
