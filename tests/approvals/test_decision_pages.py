"""The approver's pages without a browser: the queue (its title per view, its columns in order, the sentence that
opens a proposal), the proposal in one sentence (approvals/wording.py), the decision page's values labelled by where
and when they were read, and the admin home's queue linking the same sentence.

Against the session's sample CRM (`crm_demo`: a rolled-back transaction; an execution runs in this process)."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from approvals.models import Proposal
from approvals.wording import proposal_sentence
from audit.models import AuditEvent
from governance.models import ActionType
from sandbox.testing import crm_control
from tests.factories import execute
from tests.factories import propose_limit as propose

pytestmark = pytest.mark.django_db

User = get_user_model()
CHANGELIST = "/admin/approvals/proposal/"
RAISE = "Raise the credit limit of account 4471 from 2,000.00 to 5,000.00"


@pytest.fixture
def approver_client(crm_demo, client):
    client.force_login(User.objects.get(username="approver"))
    return client


@pytest.fixture
def set_crm(stack_processes):
    """Someone at the CRM changing account 4471 by hand, not through Gatehouse."""
    return lambda limit: crm_control(
        stack_processes.crm_url, "/_control/set", {"account": "4471", "fields": {"credit_limit": limit}}
    )


def page_of(client, url: str, query: dict | None = None) -> str:
    response = client.get(url, query or {})
    assert response.status_code == 200
    return unescape(response.content.decode())


def columns(page: str) -> list[str]:
    """The result list's columns, in order, by the names the admin gives their cells (`column-<name>`)."""
    start = page.index('<table id="result_list">')
    head = page[start : page.index("</thead>", start)]
    return re.findall(r'class="[^"]*column-(\w+)', head)


# --- The queue ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue", "title"),
    [
        (None, "Waiting for you"),
        ("mine", "Waiting for you"),
        ("review", "Waiting for your review"),
        ("review_overdue", "Reviews overdue"),
        ("all", "All proposals"),
    ],
)
def test_each_view_of_the_queue_has_its_own_title_and_the_default_one_is_waiting_for_you(approver_client, queue, title):
    page = page_of(approver_client, CHANGELIST, {"queue": queue} if queue else None)
    assert f"<h1>{title}</h1>" in page and f"<title>{title} |" in page
    assert "Select proposal to view" not in page


def test_the_queue_shows_who_what_how_much_and_the_time_left_first_then_band_and_status(approver_client):
    proposal = propose("5000.00")
    page = page_of(approver_client, CHANGELIST)
    assert columns(page) == ["agent", "what", "impact", "sla_left", "band", "status"]
    row = page[page.index(f'value="{proposal.pk}"') : page.index("</tr>", page.index(f'value="{proposal.pk}"'))]
    cells = [unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
    assert cells[:3] == ["collections-agent", RAISE, "3,000.00 USD"]
    assert re.fullmatch(r"(3 h 5\d|4 h 0) min", cells[3]), cells[3]
    assert cells[4:] == ["One approver", "Pending approval"]

    # The reviewers' views (empty here) put the second review's clock where the SLA's was.
    listing = approver_client.get(CHANGELIST, {"queue": "review"}).context["cl"]
    assert listing.list_display == ["action_checkbox", "agent", "what", "impact", "review", "band", "status"]


def test_the_sentence_is_the_link_to_the_proposal_page_and_the_only_one_in_its_row(approver_client):
    proposal = propose("5000.00")
    page = page_of(approver_client, CHANGELIST)
    change = reverse("admin:approvals_proposal_change", args=[proposal.pk])
    assert re.search(rf'<th class="field-what"><a href="{re.escape(change)}[^"]*">{re.escape(RAISE)}</a></th>', page)
    assert page.count(f'href="{change}') == 1


# --- The sentence -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "payload", "snapshot", "sentence"),
    [
        ("update_credit_limit", {"credit_limit": "5000"}, {"credit_limit": "2000.00"}, RAISE),
        (
            "update_credit_limit",
            {"credit_limit": "1500.00"},
            {"credit_limit": "2000.00"},
            "Lower the credit limit of account 4471 from 2,000.00 to 1,500.00",
        ),
        (
            "set_status",
            {"status": "on_hold"},
            {"status": "active"},
            "Change the status of account 4471 from active to on_hold",
        ),
        ("set_status", {"status": "on_hold"}, {}, "Set the status of account 4471 to on_hold"),
        ("add_note", {"text": "Called: pays Friday."}, {}, "Add note on account 4471 (text: Called: pays Friday.)"),
        ("add_note", {"text": "x" * 200}, {}, f"Add note on account 4471 (text: {'x' * 59}…)"),
        ("send_statement", {}, {}, "Send statement on account 4471"),
    ],
)
def test_a_proposal_reads_as_one_sentence_built_from_its_action_record_and_payload(
    demo, action, payload, snapshot, sentence
):
    proposal = Proposal(
        action_type=ActionType.objects.select_related("resource").get(system__slug="crm", name=action),
        record_id="4471",
        payload=payload,
        record_snapshot=snapshot,
    )
    assert proposal_sentence(proposal) == sentence


def test_once_written_the_sentence_says_what_the_write_replaced(demo):
    proposal = Proposal(
        action_type=ActionType.objects.select_related("resource").get(system__slug="crm", name="update_credit_limit"),
        record_id="4471",
        payload={"credit_limit": "5000.00"},
        record_snapshot={"credit_limit": "2000.00"},
        state_before={"credit_limit": "2600.00"},
    )
    assert proposal_sentence(proposal) == RAISE  # not written yet: what the decision rests on
    proposal.executed_at = timezone.now()
    assert proposal_sentence(proposal) == "Raise the credit limit of account 4471 from 2,600.00 to 5,000.00"


# --- The decision page --------------------------------------------------------------------------------------------


def test_before_the_decision_the_page_labels_the_proposal_time_value_and_the_live_one_apart(approver_client, set_crm):
    proposal = propose("5000.00")
    url = reverse("admin:approvals_proposal_change", args=[proposal.pk])
    page = page_of(approver_client, url)
    assert f"<h1>{RAISE}</h1>" in page
    assert re.search(
        r'<th scope="col" class="then">When proposed, <span class="when">\d{4}-\d\d-\d\d \d\d:\d\d UTC', page
    )
    assert re.search(r'<th scope="col" class="live">In Sample CRM now, <span class="when">read at \d\d:\d\d UTC', page)
    assert "Impact, computed by Gatehouse when proposed" in page and "3,000.00 USD" in page
    assert 'id="record-moved"' not in page and 'id="live-already"' not in page

    set_crm("5000.00")  # someone already gave it the limit the agent asks for: no change for freshness.py
    page = page_of(approver_client, url)
    # Each value carries its column's heading, which a phone shows above it (data-label).
    assert re.search(
        r'<td class="then" data-label="When proposed, \d{4}-\d\d-\d\d \d\d:\d\d UTC">2,000\.00</td>'
        r'<td class="live" data-label="In Sample CRM now, read at \d\d:\d\d UTC">5,000\.00</td>',
        page,
    )
    assert 'id="record-moved"' not in page
    assert "Sample CRM already holds the proposed value (credit limit 5,000.00)" in page


def test_after_the_write_the_page_shows_before_and_written_and_the_live_value_and_says_when_they_differ(
    approver_client, set_crm
):
    proposal = execute(propose("5000.00"))
    url = reverse("admin:approvals_proposal_change", args=[proposal.pk])
    response = approver_client.get(url)
    page = unescape(response.content.decode())
    assert response.context["written"] is True
    [row] = response.context["rows"]
    assert row.cells == [("before", "2,000.00"), ("written", "5,000.00"), ("live", "5,000.00")]
    assert "<h3>What was written</h3>" in page
    assert re.search(r'class="written">Written, <span class="when">\d{4}-\d\d-\d\d \d\d:\d\d UTC', page)
    assert re.search(r'class="live">In Sample CRM now, <span class="when">read at \d\d:\d\d UTC', page)
    assert 'id="live-differs"' not in page
    assert AuditEvent.objects.filter(
        proposal_id=proposal.pk, verb="read", summary="approver looked at account 4471 to compare it with a write."
    ).exists()

    set_crm("5300.00")  # someone in the CRM, after the write
    page = page_of(approver_client, url)
    assert re.search(
        r'<td class="written" data-label="Written, [^"]+">5,000\.00</td><td class="live"[^>]*>5,300\.00</td>', page
    )
    assert (
        "What Sample CRM holds now is not what was written: the credit limit was written as 5,000.00; "
        "it is 5,300.00 now." in page
    )


# --- The admin home -----------------------------------------------------------------------------------------------


def test_the_admin_homes_queue_links_the_same_sentence_to_the_proposal_page(approver_client):
    proposal = propose("5000.00")
    page = page_of(approver_client, reverse("admin:index"))
    queue = page[page.index('id="dash-queue"') :]
    change = reverse("admin:approvals_proposal_change", args=[proposal.pk])
    assert f'collections-agent: <a href="{change}" class="dash-sentence">{RAISE}</a>' in queue
