"""gatehouse_client against the running stack: reads, the three decision bands, refusals, idempotency, events, and
retries through a real flaky proxy on loopback."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model

from approvals.decisions import proposal_approve
from approvals.models import Proposal as ProposalRow
from connectors.legacy_batch.services import batch_poll
from gatehouse_client import (
    ConnectionFailed,
    Forbidden,
    GatehouseClient,
    InvalidRequest,
    NotFound,
    Proposal,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)
from governance.models import Agent, System
from governance.services import agent_token_issue
from tests.stack import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def gatehouse(live) -> Iterator:
    """`gatehouse("reporting-agent")` → a GatehouseClient with a fresh token for that agent, on the running stack."""
    clients: list[GatehouseClient] = []

    def make(slug: str = "collections-agent", base_url: str | None = None, **options) -> GatehouseClient:
        _, raw = agent_token_issue(agent=Agent.objects.get(slug=slug), channel="command", label="test")
        client = GatehouseClient(base_url or live.stack.web_url, raw, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_me_names_the_agent_and_its_grants(gatehouse):
    me = gatehouse().me()

    assert (me.slug, me.status) == ("collections-agent", "active")
    reads = {(g.system, g.resource) for g in me.grants if g.access == "read"}
    assert reads == {("crm", "accounts"), ("legacy-inventory", "events")}
    write = next(g for g in me.grants if g.access == "write")
    assert set(write.actions) == {"update_credit_limit", "add_note", "set_status", "send_statement"}


def test_read_returns_the_granted_fields_without_email(gatehouse):
    record = gatehouse().read("crm", "accounts", "4471")

    assert (record.system, record.resource, record.record_id) == ("crm", "accounts", "4471")
    assert record.data["credit_limit"] == "2000.00"
    assert record.data["name"] == "Northwind Traders"
    assert "email" not in record.data


def test_small_raise_executes_by_rule_after_waiting(gatehouse, live):
    client = gatehouse()

    proposal = client.propose("crm", "update_credit_limit", "4471", {"credit_limit": "2300.00"}, "on time")
    assert proposal.status in ("approved", "executing", "executed")
    assert proposal.decision.mode == "auto"
    assert str(proposal.impact.amount) == "300.00" and proposal.impact.currency == "USD"

    decided = client.wait_for_decision(proposal.id, timeout=30, poll=0.2)
    assert decided.status == "executed" and decided.executed_at is not None
    assert live.crm_account("4471")["credit_limit"] == "2300.00"
    assert client.read("crm", "accounts", "4471").data["credit_limit"] == "2300.00"


def test_medium_raise_waits_for_the_approver_then_executes(gatehouse, live):
    client = gatehouse()

    proposal = client.propose("crm", "update_credit_limit", "4471", {"credit_limit": "5000.00"})
    assert (proposal.status, proposal.decision.mode) == ("pending_approval", "single")
    assert proposal.decision.approver == "approver" and proposal.decision.sla_due_at is not None
    assert proposal.awaiting_decision and not proposal.settled
    with pytest.raises(WaitTimeout) as waited:
        client.wait_for_decision(proposal.id, timeout=0.5, poll=0.2)
    assert waited.value.proposal.status == "pending_approval"

    approver = get_user_model().objects.get(username="approver")
    proposal_approve(proposal_id=proposal.id, user=approver, channel="admin")

    decided = client.wait_for_decision(proposal.id, timeout=30, poll=0.2)
    assert decided.status == "executed"
    assert live.crm_account("4471")["credit_limit"] == "5000.00"


def test_large_raise_needs_dual_approval(gatehouse):
    proposal = gatehouse().propose("crm", "update_credit_limit", "4472", {"credit_limit": "7500.00"})

    assert (proposal.status, proposal.decision.mode) == ("pending_approval", "dual")
    assert proposal.decision.review_group


def test_write_outside_the_grants_raises_scope_denied(gatehouse, live):
    with pytest.raises(Forbidden) as refused:
        gatehouse("reporting-agent").propose("crm", "add_note", "4471", {"text": "hello"})

    assert (refused.value.code, refused.value.status) == ("scope_denied", 403)
    assert "reporting-agent" in refused.value.detail
    assert not ProposalRow.objects.exists()


def test_invalid_payload_carries_the_field_errors(gatehouse):
    with pytest.raises(InvalidRequest) as refused:
        gatehouse().propose("crm", "update_credit_limit", "4471", {"credit_limit": "a lot"})

    assert (refused.value.code, refused.value.status) == ("invalid_payload", 422)
    assert "credit_limit" in " ".join(refused.value.errors)


def test_another_agents_proposal_is_not_found(gatehouse):
    mine = gatehouse().propose("crm", "add_note", "4471", {"text": "called them"})

    with pytest.raises(NotFound) as missing:
        gatehouse("reporting-agent").proposal(mine.id)
    assert missing.value.code == "not_found"


def test_same_idempotency_key_twice_gives_the_same_proposal(gatehouse, live):
    client = gatehouse()
    payload = {"credit_limit": "2100.00"}

    first = client.propose("crm", "update_credit_limit", "4471", payload, idempotency_key="demo-key-1")
    again = client.propose("crm", "update_credit_limit", "4471", payload, idempotency_key="demo-key-1")

    assert again.id == first.id and again.replayed and not first.replayed
    assert ProposalRow.objects.count() == 1
    assert client.wait_for_decision(first.id, timeout=30, poll=0.2).status == "executed"
    other = client.propose("crm", "update_credit_limit", "4471", payload)  # a fresh uuid4 key: a new proposal
    assert other.id != first.id


def test_events_page_by_cursor_and_iterate(gatehouse, live):
    inventory = System.objects.get(slug="legacy-inventory")
    drop = Path(inventory.connector_config["drop_folder"]) / "stock.csv"
    drop.write_text(
        "ITEM_NO,WHSE,QTY_ON_HAND,AS_OF\n"
        "A-100,EAST,12,2026-11-20\nA-200,EAST,0,2026-11-20\nA-100,WEST,7,2026-11-20\n"
        "B-300,EAST,3,2026-11-20\nB-300,WEST,9,2026-11-20\n"
    )
    then = time.time() - 60
    os.utime(drop, (then, then))
    assert batch_poll(system=inventory, channel="command").files[0].events == 5
    client = gatehouse()

    first = client.events("legacy-inventory", limit=2)
    second = client.events("legacy-inventory", after=first.next_after, limit=2)
    last = client.events("legacy-inventory", after=second.next_after, limit=2)
    past_the_end = client.events("legacy-inventory", after=last.next_after, limit=2)

    assert [len(page.events) for page in (first, second, last, past_the_end)] == [2, 2, 1, 0]
    assert past_the_end.next_after == last.next_after  # an empty page keeps the cursor where it was
    assert first.events[0].record_id == "A-100:EAST"
    assert first.events[0].data == {"sku": "A-100", "warehouse": "EAST", "quantity": 12, "as_of": "2026-11-20"}
    ids = [event.id for event in client.iter_events("legacy-inventory", limit=2)]
    assert ids == [event.id for page in (first, second, last) for event in page.events]
    assert ids == sorted(ids)


# --- retries, through a real proxy on loopback that fails on purpose ------------------------------------------


class FlakyProxy:
    """Forwards to Gatehouse, except that the first `failures` POSTs get `status` with Retry-After: 1."""

    def __init__(self, target: str, *, status: int, code: str, failures: int) -> None:
        self.target, self.status, self.code, self.failures = target, status, code, failures
        self.keys: list[str | None] = []
        self.answered_at: list[float] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "POST":
                    proxy.keys.append(self.headers.get("Idempotency-Key"))
                    proxy.answered_at.append(time.monotonic())
                    if len(proxy.keys) <= proxy.failures:
                        problem = {"type": "", "title": "", "status": proxy.status, "detail": "try later"}
                        payload = json.dumps(problem | {"code": proxy.code}).encode()
                        self.send_response(proxy.status)
                        self.send_header("Content-Type", "application/problem+json")
                        self.send_header("Retry-After", "1")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(self.command, proxy.target + self.path, headers=headers, content=body)
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(("status", "code"), [(503, "system_unavailable"), (429, "throttled")])
def test_propose_retries_with_the_same_key_honouring_retry_after(gatehouse, live, status, code):
    proxy = FlakyProxy(live.stack.web_url, status=status, code=code, failures=2)
    try:
        proposal = gatehouse(base_url=proxy.url).propose("crm", "add_note", "4471", {"text": "retried"})
    finally:
        proxy.close()

    assert len(proxy.keys) == 3 and len(set(proxy.keys)) == 1 and proxy.keys[0]
    assert all(b - a >= 0.95 for a, b in zip(proxy.answered_at, proxy.answered_at[1:], strict=False))
    assert ProposalRow.objects.filter(pk=proposal.id).exists() and ProposalRow.objects.count() == 1


def test_retries_give_up_after_the_limit(gatehouse, live):
    proxy = FlakyProxy(live.stack.web_url, status=503, code="system_unavailable", failures=10)
    try:
        with pytest.raises(Unavailable) as refused:
            gatehouse(base_url=proxy.url, retries=1).propose("crm", "add_note", "4471", {"text": "x"})
    finally:
        proxy.close()

    assert refused.value.code == "system_unavailable" and refused.value.retry_after == 1
    assert len(proxy.keys) == 2
    assert not ProposalRow.objects.exists()


def test_a_frozen_system_is_not_retried(gatehouse, live):
    proxy = FlakyProxy(live.stack.web_url, status=503, code="system_frozen", failures=10)
    try:
        with pytest.raises(Unavailable):
            gatehouse(base_url=proxy.url).propose("crm", "add_note", "4471", {"text": "x"})
    finally:
        proxy.close()

    assert len(proxy.keys) == 1


def test_nothing_listening_raises_connection_failed_naming_the_url():
    base = f"http://127.0.0.1:{free_port()}"
    client = GatehouseClient(base, "gh_nothing", retries=2, backoff=0.01)
    with client, pytest.raises(ConnectionFailed) as failed:
        client.me()

    assert (failed.value.code, failed.value.status) == ("connection_failed", 0)
    assert str(failed.value).startswith(f"{base}/api/v1/me did not answer: ")


def test_a_refusal_names_the_url_that_answered(live):
    with GatehouseClient(live.stack.web_url, "gh_not_a_token") as client, pytest.raises(Unauthenticated) as refused:
        client.me()

    assert refused.value.url == f"{live.stack.web_url}/api/v1/me"
    assert str(refused.value).startswith(f"{live.stack.web_url}/api/v1/me answered 401: ")
    assert str(refused.value).endswith("(unauthenticated)")


def test_proposal_keeps_fields_added_to_the_contract_later():
    proposal = Proposal.from_json(
        {"id": "x", "status": "executed", "impact": {"amount": None, "currency": "USD"}, "new_field": 1}
    )

    assert proposal.settled and proposal.impact.amount is None and proposal.raw["new_field"] == 1
