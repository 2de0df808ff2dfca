"""Approvals from Slack, end to end: the Slack stand-in (sandbox/slack_standin.py) is Slack, the web process and a real
Celery worker are Gatehouse, configured with the stand-in's URL, bot token and signing secret.

A pending $3,000 raise posts one message to its approver with the facts and the buttons; a signed Approve click from
the approver executes it and the message says who approved it; a bad signature, an old timestamp, an unmapped Slack
user and the agent's owner are refused and audited; a reject with a reason goes through the modal; an outage is
retried and posts once. The secrets appear in no log, audit event, table or page.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import timedelta

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from approvals.choices import ProposalStatus
from approvals.decisions import proposal_approve
from approvals.delegation import delegation_create
from approvals.models import Proposal, SlackMessage
from audit.models import AuditEvent
from governance.choices import Role
from tests.factories import forget_forgeries, propose_raise

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

SLACK_USERS = [
    {"id": "U0DANA", "name": "dana", "real_name": "Dana Approver", "is_email_confirmed": True,
     "profile": {"email": "approver@gatehouse.example", "real_name": "Dana Approver"}},
    {"id": "U0OLIVIA", "name": "olivia", "real_name": "Olivia Owner", "is_email_confirmed": True,
     "profile": {"email": "owner@gatehouse.example", "real_name": "Olivia Owner"}},
    {"id": "U0STRANGER", "name": "sam", "real_name": "Sam Elsewhere", "is_email_confirmed": True,
     "profile": {"email": "sam@elsewhere.example", "real_name": "Sam Elsewhere"}},
]  # fmt: skip


@pytest.fixture(scope="module")
def stack_processes(django_db_setup, django_db_blocker, tmp_path_factory):
    """This module's stack: the sample CRMs, the Slack stand-in, and the web process and worker configured for it
    (the session's stack has no Slack settings; `live` uses this one here)."""
    from gatehouse.celery import app as celery_app
    from tests.stack import Stack

    stack = Stack(tmp_path_factory.mktemp("slack-stack"))
    previous_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = stack.queue
    stack.crm_token = secrets.token_urlsafe(24)
    # Recognisable, so the canary test can look for them everywhere.
    stack.slack_token = "xoxb-canary-" + secrets.token_hex(12)
    stack.slack_secret = "signing-canary-" + secrets.token_hex(12)
    try:
        stack.slack_url = stack.slack("slack", stack.slack_token, stack.slack_secret)
        stack.slack_env = {
            "GATEHOUSE_SLACK_API_URL": f"{stack.slack_url}/api/",
            "GATEHOUSE_SLACK_BOT_TOKEN": stack.slack_token,
            "GATEHOUSE_SLACK_SIGNING_SECRET": stack.slack_secret,
            "GATEHOUSE_EXECUTION_BACKOFF": "0.3",  # the Slack tasks' retries use the execution backoff
        }
        stack.crm_url = stack.crm("crm", stack.crm_token)
        stack.crm_staging_url = stack.crm("crm-staging", stack.crm_token)
        stack.web_url = stack.web(**stack.slack_env)
        stack.worker(**stack.slack_env)
    except BaseException:
        stack.stop_all()
        celery_app.conf.task_default_queue = previous_queue
        raise
    yield stack
    stack.stop_all()
    celery_app.conf.task_default_queue = previous_queue


class Slack:
    """The stand-in's side door: what Gatehouse called, the messages as they are now, and a person's clicks."""

    def __init__(self, stack) -> None:
        self.url, self.interactions = stack.slack_url, f"{stack.web_url}/integrations/slack/interactions"

    def control(self, path: str, body: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}{path}", json=body or {}, timeout=30)
        response.raise_for_status()
        return response.json()

    def get(self, path: str):
        return httpx.get(f"{self.url}{path}", timeout=10).json()

    def calls(self, method: str) -> list[dict]:
        return [call for call in self.get("/_calls") if call["method"] == method]

    def messages(self) -> list[dict]:
        return self.get("/_messages")

    def message(self, timeout: float = 20) -> dict:
        """The one message posted, once it is."""
        deadline = time.monotonic() + timeout
        while not self.messages():
            assert time.monotonic() < deadline, f"no message posted; calls: {self.get('/_calls')}"
            time.sleep(0.1)
        (message,) = self.messages()
        return message

    def click(self, message: dict, user: str, action: str = "gatehouse_approve", **knobs) -> dict:
        body = {"url": self.interactions, "user": user, "action": action, "channel": message["channel"]}
        return self.control("/_control/click", {**body, "ts": message["ts"], **knobs})

    def wait_for_text(self, words: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            message = self.message()
            if words in json.dumps(message["blocks"], ensure_ascii=False):
                return message
            assert time.monotonic() < deadline, f"the message never said {words!r}: {message['blocks']}"
            time.sleep(0.1)


@pytest.fixture
def slack(live, settings):
    """The stand-in, reset, with the demo people as Slack users; this process knows the Slack settings too (a decision
    taken here, as at the admin door, updates the messages)."""
    stack = live.stack
    for name, value in stack.slack_env.items():
        if name.startswith("GATEHOUSE_SLACK_"):
            setattr(settings, name, value)
    settings.GATEHOUSE_SLACK_CHANNEL = ""
    forget_forgeries()  # the web process audits at most so many forged requests a minute
    standin = Slack(stack)
    standin.control("/_control/reset")
    standin.control("/_control/users", {"users": SLACK_USERS})
    return standin


def text_of(message: dict) -> str:
    return json.dumps(message["blocks"], ensure_ascii=False)


def buttons(message: dict) -> list[dict]:
    return [element for block in message["blocks"] if block["type"] == "actions" for element in block["elements"]]


def denials(proposal_id: str | None = None) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(verb="denied", channel="slack").order_by("id")
    return list(events.filter(proposal_id=proposal_id) if proposal_id else events)


def test_a_pending_raise_posts_one_message_to_its_approver_with_the_facts_and_the_buttons(live, slack):
    proposal_id = propose_raise(live, "5000.00", "pending_approval")

    message = slack.message()
    shown = text_of(message)
    assert "Raise the credit limit of account 4471 from 2,000.00 to 5,000.00" in shown
    for fact in ("Sample CRM · account 4471", "credit limit: 2,000.00 → 5,000.00", "3,000.00 USD",
                 "Credit limit changes on crm", "Paid on time for 12 months", "Decide by", "UTC",
                 f"/admin/approvals/proposal/{proposal_id}/change/"):  # fmt: skip
        assert fact in shown, fact
    assert [(b["action_id"], b["value"]) for b in buttons(message)] == [
        ("gatehouse_approve", proposal_id),
        ("gatehouse_reject", proposal_id),
    ]
    # A direct message to Dana, the named approver, found by her e-mail address; every call with the bot token.
    assert [call["args"]["email"] for call in slack.calls("users.lookupByEmail")] == ["approver@gatehouse.example"]
    assert message["channel"] == "D0DANA"
    assert len(slack.calls("chat.postMessage")) == 1
    assert all(call["authorized"] for call in slack.get("/_calls"))
    row = SlackMessage.objects.get(proposal_id=proposal_id)
    assert (row.channel, row.ts, row.target) == ("D0DANA", message["ts"], "email:approver@gatehouse.example")


def test_a_signed_approve_from_the_approver_executes_it_and_the_message_says_who_approved(live, slack):
    proposal_id = propose_raise(live, "5000.00", "pending_approval")
    message = slack.message()

    answer = slack.click(message, "U0DANA")

    assert answer["status"] == 200, answer
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"
    approved = AuditEvent.objects.get(proposal_id=proposal_id, verb="approved")
    assert (approved.channel, approved.person.username) == ("slack", "approver")
    decided_at = Proposal.objects.get(pk=proposal_id).decided_at
    shown = slack.wait_for_text("written to Sample CRM")
    assert f"Approved by Dana Approver at {decided_at:%H:%M} UTC" in text_of(shown)
    assert buttons(shown) == []  # decided: nothing left to click


def test_a_bad_signature_and_an_old_timestamp_are_refused_with_401_and_audited_without_the_body(live, slack):
    proposal_id = propose_raise(live, "5000.00", "pending_approval")
    message = slack.message()

    forged = slack.click(message, "U0DANA", signature="bad")
    replayed = slack.click(message, "U0DANA", age=6 * 60)

    assert (forged["status"], replayed["status"]) == (401, 401)
    assert Proposal.objects.get(pk=proposal_id).status == ProposalStatus.PENDING_APPROVAL
    bad, old = denials()
    assert (bad.outcome, old.outcome) == ("bad_signature", "stale_timestamp")
    for event in (bad, old):
        assert event.actor_type == "gatehouse" and event.person is None and event.proposal_id is None
        assert set(event.input) == {"remote_addr", "timestamp", "signed", "body_bytes", "body_sha256"}
        assert proposal_id not in json.dumps(event.input) + event.summary  # the unverified body is not kept
    assert "more than five minutes" in old.summary and "signature" in bad.summary


def test_an_unmapped_slack_user_is_refused_told_why_and_audited(live, slack):
    proposal_id = propose_raise(live, "5000.00", "pending_approval")
    message = slack.message()

    answer = slack.click(message, "U0STRANGER")

    assert answer["status"] == 200  # Slack wants its 200; the refusal goes to the person who clicked
    (refusal,) = denials(proposal_id)
    assert refusal.outcome == "unmapped_slack_user" and refusal.person is None
    assert refusal.input["slack_user"] == "U0STRANGER" and refusal.input["email"] == "sam@elsewhere.example"
    assert "nobody in Gatehouse has the e-mail address sam@elsewhere.example" in refusal.summary
    (told,) = slack.get("/_ephemeral")
    assert told["user"] == "U0STRANGER" and "nobody in Gatehouse" in told["text"]
    assert Proposal.objects.get(pk=proposal_id).status == ProposalStatus.PENDING_APPROVAL
    shown = slack.wait_for_text("Refused at")
    assert len(buttons(shown)) == 2  # still waiting for its approver


def test_the_agents_owner_standing_in_for_the_approver_is_refused_by_separation_of_duties(live, slack):
    User = get_user_model()
    approver, owner = User.objects.get(username="approver"), User.objects.get(username="owner")
    now = timezone.now()
    # Dana is away and named Olivia, an approver too, who owns the collections agent: the demo rule forbids its owner
    # to approve.
    owner.groups.add(Group.objects.get(name=Role.APPROVERS))
    delegation_create(
        who=approver,
        delegate=owner,
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(days=1),
        reason="out of office",
        user=approver,
        channel="admin",
    )
    proposal_id = propose_raise(live, "5000.00", "pending_approval")
    message = slack.message()

    answer = slack.click(message, "U0OLIVIA")

    assert answer["status"] == 200
    (refusal,) = denials(proposal_id)
    assert (refusal.outcome, refusal.person, refusal.channel) == ("not_your_decision", owner, "slack")
    assert "you own the agent collections-agent (separation of duties)" in refusal.summary
    (told,) = slack.get("/_ephemeral")
    assert told["user"] == "U0OLIVIA" and "separation of duties" in told["text"]
    assert Proposal.objects.get(pk=proposal_id).status == ProposalStatus.PENDING_APPROVAL
    assert live.crm_account("4471")["credit_limit"] == "2000.00"


def test_a_click_on_a_proposal_already_decided_is_refused_and_audited(live, slack):
    proposal_id = propose_raise(live, "5000.00", "pending_approval")
    message = slack.message()
    assert slack.click(message, "U0DANA")["status"] == 200

    # The old message, clicked again in a Slack client that had not shown the update yet.
    again = slack.click(message, "U0DANA", value=proposal_id)

    assert again["status"] == 200
    (refusal,) = denials(proposal_id)
    assert refusal.outcome == "not_awaiting" and refusal.person.username == "approver"
    assert "already" in refusal.summary
    assert "already" in slack.get("/_ephemeral")[-1]["text"]
    live.wait_for(proposal_id, "executed")
    assert AuditEvent.objects.filter(proposal_id=proposal_id, verb="approved").count() == 1


def test_reject_asks_for_a_reason_in_a_modal_and_rejects_with_it(live, slack):
    proposal_id = propose_raise(live, "5000.00", "pending_approval")
    message = slack.message()

    clicked = slack.click(message, "U0DANA", action="gatehouse_reject")

    assert clicked["status"] == 200
    (opened,) = slack.calls("views.open")
    assert opened["ok"] and opened["args"]["trigger_id"] == clicked["trigger_id"]
    (view,) = slack.get("/_views")
    assert view["private_metadata"] == proposal_id
    submitted = slack.control(
        "/_control/submit",
        {"url": slack.interactions, "user": "U0DANA", "view_id": view["id"],
         "values": {"reason": "Two late payments this quarter."}},
    )  # fmt: skip
    assert submitted["status"] == 200 and "errors" not in submitted["body"], submitted
    proposal = Proposal.objects.get(pk=proposal_id)
    assert (proposal.status, proposal.decision_comment) == ("rejected", "Two late payments this quarter.")
    rejected = AuditEvent.objects.get(proposal_id=proposal_id, verb="rejected")
    assert (rejected.channel, rejected.person.username) == ("slack", "approver")
    shown = slack.wait_for_text("Rejected by Dana Approver at")
    assert "Two late payments this quarter." in text_of(shown) and buttons(shown) == []
    assert live.crm_account("4471")["credit_limit"] == "2000.00"


def test_a_refused_reject_is_shown_in_the_modal_and_decides_nothing(live, slack):
    proposal_id = propose_raise(live, "5000.00", "pending_approval")
    message = slack.message()
    slack.click(message, "U0OLIVIA", action="gatehouse_reject")  # the owner is not the approver
    (view,) = slack.get("/_views")

    submitted = slack.control(
        "/_control/submit",
        {"url": slack.interactions, "user": "U0OLIVIA", "view_id": view["id"], "values": {"reason": "No."}},
    )

    answer = json.loads(submitted["body"])
    assert answer["response_action"] == "errors" and "assigned to approver" in answer["errors"]["reason"]
    assert Proposal.objects.get(pk=proposal_id).status == ProposalStatus.PENDING_APPROVAL
    (refusal,) = denials(proposal_id)
    assert refusal.outcome == "not_your_decision" and refusal.person.username == "owner"


def test_a_slack_outage_is_retried_and_the_message_posted_once(live, slack):
    slack.control("/_control/fault", {"method": "chat.postMessage", "status": 503, "count": 2})

    proposal_id = propose_raise(live, "5000.00", "pending_approval")

    message = slack.message(timeout=30)
    posts = slack.calls("chat.postMessage")
    assert [call["status"] for call in posts] == [503, 503, 200]
    assert len(slack.messages()) == 1
    row = SlackMessage.objects.get(proposal_id=proposal_id)
    assert (row.ts, row.attempts, row.last_error) == (message["ts"], 3, "")
    time.sleep(1.5)  # a late retry or a second delivery would post again now
    assert len(slack.calls("chat.postMessage")) == 3 and len(slack.messages()) == 1


def test_a_decision_at_another_door_updates_the_message_even_through_an_outage(live, slack):
    proposal_id = propose_raise(live, "5000.00", "pending_approval")
    message = slack.message()
    slack.control("/_control/fault", {"method": "chat.update", "status": 429, "retry_after": 1, "count": 1})

    proposal_approve(proposal_id=proposal_id, user=get_user_model().objects.get(username="approver"), channel="admin")

    shown = slack.wait_for_text("Approved by Dana Approver at", timeout=30)
    assert shown["ts"] == message["ts"] and buttons(shown) == []
    assert [call["status"] for call in slack.calls("chat.update")][:2] == [429, 200]
    live.wait_for(proposal_id, "executed")


def test_the_slack_secrets_appear_in_no_log_event_table_or_page(live, slack, sign_in):
    from tests.connectors.test_canary import audit_events_text, database_dump

    proposal_id = propose_raise(live, "5000.00", "pending_approval")
    message = slack.message()
    slack.click(message, "U0DANA", signature="bad")
    slack.click(message, "U0STRANGER")
    slack.click(message, "U0DANA")
    live.wait_for(proposal_id, "executed")
    slack.wait_for_text("written to Sample CRM")
    page = sign_in("approver")
    page.goto(f"{live.stack.web_url}/admin/approvals/proposal/{proposal_id}/change/")
    pages = page.content()
    page.goto(f"{live.stack.web_url}/admin/audit/auditevent/")
    pages += page.content()

    stack = live.stack
    logs = "\n".join(process.output() for name, process in stack.processes.items() if name != "slack")
    places = {"logs": logs, "audit": audit_events_text(), "tables": database_dump(), "pages": pages,
              "stand-in's record": json.dumps(slack.get("/_calls"))}  # fmt: skip
    for secret in (stack.slack_token, stack.slack_secret):
        for place, text in places.items():
            assert secret not in text, f"a Slack secret in the {place}"
    assert "slack" in places["audit"]  # the sweep looked at events this test made
