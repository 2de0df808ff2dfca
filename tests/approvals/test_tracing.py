"""OpenTelemetry traces of a governed write, exported by the real web and worker processes to a real OTLP/HTTP receiver
on loopback (sandbox/otlp_receiver.py): one trace from the agent's request to the CRM's answer."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from approvals.models import Proposal
from audit.models import AuditEvent
from governance.models import Agent
from governance.services import agent_token_issue
from tests.factories import post_proposal
from tests.faults import verbs

pytestmark = [pytest.mark.slow]

Span = dict[str, Any]


@pytest.fixture
def traced(private_stack):
    """The private stack's web and worker exporting their traces to a receiver of the test's own, every 100 ms; the
    web logging JSON lines."""
    receiver = private_stack.stack.otlp_receiver()
    tracing = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    private_stack.web(**tracing, GATEHOUSE_LOG_FORMAT="json")
    private_stack.worker(**tracing)
    private_stack.receiver = receiver
    return private_stack


def spans_until(receiver: str, trace_id: str, ready, what: str, timeout: float = 30) -> list[Span]:
    """The trace's spans as the receiver has them, once `ready(spans)` holds (the exporters send in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = httpx.get(f"{receiver}/spans", params={"trace_id": trace_id}).json()
        if ready(spans):
            return spans
        if time.monotonic() > deadline:
            listed = "\n".join(f"{s['service']} {s['kind']} {s['name']} {s['attributes']}" for s in spans)
            raise AssertionError(f"waited {timeout} s for {what}; the trace has:\n{listed}")
        time.sleep(0.1)


def named(spans: list[Span], name: str) -> Span:
    (found,) = [span for span in spans if span["name"] == name]
    return found


def ancestors(spans: list[Span], span: Span) -> list[str]:
    """The span ids from `span`'s parent up to the trace's root."""
    by_id = {each["span_id"]: each for each in spans}
    chain, parent = [], span["parent_span_id"]
    while parent:
        chain.append(parent)
        parent = by_id[parent]["parent_span_id"] if parent in by_id else ""
    return chain


def crm_write(spans: list[Span]) -> Span | None:
    """The worker's HTTP call that writes account 4471 in the CRM (httpx's client span): a change or a note."""
    for span in spans:
        attributes = span["attributes"]
        url = str(attributes.get("url.full") or attributes.get("http.url") or "")
        method = attributes.get("http.request.method") or attributes.get("http.method")
        if span["kind"] == "CLIENT" and re.search(r"/accounts/4471(/notes)?$", url) and method in ("PATCH", "POST"):
            return span
    return None


def written(spans: list[Span]) -> bool:
    """The trace is in, up to the CRM's write: that span, and every span on any span's way to the root (each process
    exports in its own batches, a span when it ends: the write's client span comes before the execution around it)."""
    ids = {span["span_id"] for span in spans}
    whole = all(span["parent_span_id"] in ids for span in spans if span["parent_span_id"])
    return whole and crm_write(spans) is not None and any(not span["parent_span_id"] for span in spans)


def test_one_auto_approved_write_is_one_trace_from_the_agents_request_to_the_crm(traced):
    response = post_proposal(traced.agent(), "update_credit_limit", {"credit_limit": "2100.00"})
    assert response.status_code == 201, response.text
    proposal = traced.wait_for(response.json()["id"], "executed", timeout=60)
    trace_id = proposal.trace_parent.split("-")[1]

    spans = spans_until(traced.receiver, trace_id, written, "the worker's write to the CRM")

    (request,) = [s for s in spans if s["kind"] == "SERVER" and s["service"] == "gatehouse-web"]
    assert request["name"] == "POST api/v1/proposals" and not request["parent_span_id"]
    decide = named(spans, "gatehouse.proposal.decide")
    assert request["span_id"] in ancestors(spans, decide)
    assert decide["attributes"] == {
        "gatehouse.agent": "collections-agent",
        "gatehouse.system": "crm",
        "gatehouse.action": "update_credit_limit",
        "gatehouse.decision": "auto",
        "gatehouse.band": decide["attributes"]["gatehouse.band"],
        "gatehouse.proposal_id": str(proposal.pk),
    }
    publish = named(spans, "gatehouse.outbox.publish")
    assert decide["span_id"] in ancestors(spans, publish) and not publish["links"]

    execute = named(spans, "gatehouse.proposal.execute")
    assert execute["service"] == "gatehouse-worker"
    assert publish["span_id"] in ancestors(spans, execute)  # through Celery's publish and run spans
    assert request["span_id"] in ancestors(spans, execute)
    assert execute["attributes"] == {
        "gatehouse.proposal_id": str(proposal.pk),
        "gatehouse.agent": "collections-agent",
        "gatehouse.system": "crm",
        "gatehouse.action": "update_credit_limit",
        "gatehouse.outcome": "executed",
    }
    assert execute["span_id"] in ancestors(spans, named(spans, "gatehouse.proposal.claim"))
    assert execute["span_id"] in ancestors(spans, crm_write(spans))

    assert verbs(proposal.pk) == ["proposed", "auto_approved", "executing", "executed"]
    assert set(AuditEvent.objects.filter(proposal_id=proposal.pk).values_list("trace_id", flat=True)) == {trace_id}
    lines = [json.loads(line) for line in traced.log("web").splitlines() if line.startswith("{")]
    (access,) = [line for line in lines if line.get("path") == "/api/v1/proposals"]
    assert access["trace_id"] == trace_id and access["span_id"]  # the log search meets the trace


def signed_in(web_url: str, username: str) -> httpx.Client:
    """A person's browser session on the web process: the admin's login form, as they would fill it in."""
    user = get_user_model().objects.get(username=username)
    hasher = PBKDF2PasswordHasher()  # the web process verifies with the production hasher, not the suite's fast one
    user.password = hasher.encode("tracing-test-password", hasher.salt(), iterations=1000)
    user.save()
    browser = httpx.Client(base_url=web_url, timeout=30, follow_redirects=True)
    form = browser.get("/admin/login/").text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    signed = browser.post(
        "/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": token, "username": username, "password": "tracing-test-password"},
    )
    assert "/login/" not in str(signed.url), signed.text[:2000]
    return browser


def test_a_write_a_person_approves_later_continues_the_agents_trace_and_links_to_the_approval(traced):
    response = post_proposal(traced.agent(), "update_credit_limit", {"credit_limit": "5000.00"})
    assert response.status_code == 201 and response.json()["status"] == "pending_approval", response.text
    pk = response.json()["id"]

    approver = signed_in(traced.stack.web_url, "approver")
    page = approver.get(f"/admin/approvals/proposal/{pk}/change/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    decided = approver.post(
        f"/admin/approvals/proposal/{pk}/decide/", data={"csrfmiddlewaretoken": token, "step": "approve"}
    )
    assert decided.status_code == 200 and "Approved." in decided.text
    proposal = traced.wait_for(pk, "executed", timeout=60)

    agents_trace = proposal.trace_parent.split("-")[1]
    events = dict(AuditEvent.objects.filter(proposal_id=pk).values_list("verb", "trace_id"))
    approval_trace = events["approved"]
    assert approval_trace and approval_trace != agents_trace  # the approval is the approver's request, its own trace
    assert events["proposed"] == events["executing"] == events["executed"] == agents_trace

    spans = spans_until(traced.receiver, agents_trace, written, "the worker's write to the CRM")
    publish = named(spans, "gatehouse.outbox.publish")
    assert publish["service"] == "gatehouse-web"
    assert [link["trace_id"] for link in publish["links"]] == [approval_trace]
    execute = named(spans, "gatehouse.proposal.execute")
    assert publish["span_id"] in ancestors(spans, execute)
    assert named(spans, "gatehouse.proposal.decide")["span_id"] in ancestors(spans, execute)
    assert execute["span_id"] in ancestors(spans, crm_write(spans))

    approval = spans_until(
        traced.receiver, approval_trace, lambda found: any(s["kind"] == "SERVER" for s in found), "the approval"
    )
    (request,) = [s for s in approval if s["kind"] == "SERVER"]
    assert request["name"].startswith("POST ") and publish["links"][0]["span_id"] in {s["span_id"] for s in approval}


def test_a_write_proposed_over_mcp_is_traced_from_the_mcp_request(traced):
    """/mcp is not Django's: its requests are server spans of the ASGI middleware, with the decision under them."""
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "crm_propose_add_note", "arguments": {"record_id": "4471", "text": "Called, will pay."}},
    }
    _, token = agent_token_issue(agent=Agent.objects.get(slug="collections-agent"), channel="command")
    response = httpx.post(
        f"{traced.stack.web_url}/mcp",
        json=call,
        headers={"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200 and not response.json()["result"].get("isError"), response.text
    proposal = Proposal.objects.get(agent__slug="collections-agent", action_type__name="add_note")
    traced.wait_for(proposal.pk, "executed", timeout=60)

    spans = spans_until(traced.receiver, proposal.trace_parent.split("-")[1], written, "the worker's write")
    (request,) = [s for s in spans if s["kind"] == "SERVER" and not s["parent_span_id"]]
    assert request["name"] == "POST /mcp" and request["service"] == "gatehouse-web"
    decide = named(spans, "gatehouse.proposal.decide")
    assert decide["attributes"]["gatehouse.action"] == "add_note"
    assert request["span_id"] in ancestors(spans, decide)
    assert request["span_id"] in ancestors(spans, named(spans, "gatehouse.proposal.execute"))
