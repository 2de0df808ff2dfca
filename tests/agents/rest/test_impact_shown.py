"""The impact a proposal's answer shows, over HTTP against the real sample CRM: only when the agent's read grant covers
the fields it is computed from (CONTRACT.md). update_credit_limit's impact is the new limit minus the current one, so
an agent that may not read credit_limit would otherwise learn the current limit from it (item 7)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from approvals.models import Proposal
from tests.agents.impact import RAISE, assert_hidden, assert_shown, narrow, widen
from tests.factories import post_proposal as propose

PROPOSALS = "/api/v1/proposals"


@pytest.fixture
def collections(crm_demo, agent_client):
    return agent_client("collections-agent")


@pytest.mark.parametrize("how", ["without-the-field", "without-a-read-grant"])
def test_an_agent_that_may_not_read_credit_limit_sees_no_amount_in_any_answer(collections, how):
    narrow(how)
    created = propose(collections, "update_credit_limit", RAISE)
    assert created.status_code == 201, created.content
    body = created.json()
    assert_hidden(body)
    # Hidden, not lost: the decision was made on the real amount, and a person sees it.
    proposal = Proposal.objects.get(pk=body["id"])
    assert proposal.impact_amount == 3000 and "3000" in proposal.decision["reason"]

    assert_hidden(collections.get(f"{PROPOSALS}/{body['id']}").json())
    listed = collections.get(PROPOSALS).json()["results"]
    assert [item["id"] for item in listed] == [body["id"]]
    assert_hidden(listed[0])
    cancelled = collections.post(f"{PROPOSALS}/{body['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["impact"]["amount"] is None and cancelled.json()["decision"]["band"] is None


def test_an_impact_that_reads_no_record_field_is_shown_without_the_field(collections):
    """add_note's impact is 0 by definition: nothing of the record is in it, so hiding it would hide nothing."""
    narrow()
    body = propose(collections, "add_note", {"text": "Called about the invoice."}).json()
    assert body["impact"] == {"amount": "0.00", "currency": "USD"}
    assert body["decision"]["mode"] == "auto" and "not shown" not in body["decision"]["reason"]


def test_with_credit_limit_granted_the_amount_band_and_reason_are_shown(collections):
    created = propose(collections, "update_credit_limit", RAISE)
    assert created.status_code == 201, created.content
    assert_shown(created.json())
    assert_shown(collections.get(f"{PROPOSALS}/{created.json()['id']}").json())
    assert_shown(collections.get(PROPOSALS).json()["results"][0])


def test_the_replay_of_an_answer_keeps_what_was_shown_then(collections):
    """The replay answers with the first response, stored; the proposal itself follows the grants of now."""
    narrow()
    first = propose(collections, "update_credit_limit", RAISE, idempotency_key="hidden-then")
    assert first.status_code == 201, first.content
    assert_hidden(first.json())
    widen()

    replay = propose(collections, "update_credit_limit", RAISE, idempotency_key="hidden-then")
    assert replay.status_code == 200 and replay["Idempotent-Replayed"] == "true", replay.content
    assert replay.json() == first.json()
    assert_shown(collections.get(f"{PROPOSALS}/{first.json()['id']}").json())


def test_the_answer_stored_for_a_replay_is_the_answer_given(collections):
    created = propose(collections, "update_credit_limit", RAISE, idempotency_key="same-body")
    replay = propose(collections, "update_credit_limit", RAISE, idempotency_key="same-body")
    assert replay.json() == created.json()
    assert_shown(replay.json())


def read_grant_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if "governance_scopegrant" in q["sql"] and "'read'" in q["sql"]]


def test_the_read_grants_are_read_once_per_answer_never_once_per_proposal(collections):
    narrow()
    for limit in ("5000.00", "2100.00", "9000.00", "1000.00"):
        assert propose(collections, "update_credit_limit", {"credit_limit": limit}).status_code == 201
    proposal_id = Proposal.objects.latest("created_at").pk

    with CaptureQueriesContext(connection) as listing:
        page = collections.get(PROPOSALS).json()["results"]
    with CaptureQueriesContext(connection) as detail:
        collections.get(f"{PROPOSALS}/{proposal_id}")
    with CaptureQueriesContext(connection) as creating:
        created = propose(collections, "update_credit_limit", {"credit_limit": "2600.00"}, idempotency_key="k")

    # Once per answer at most: the policy cache (governance/policy_cache.py) answers later calls without a query.
    assert len(page) == 4 and all(item["impact"]["amount"] is None for item in page)
    assert len(read_grant_queries(listing.captured_queries)) <= 1
    assert len(read_grant_queries(detail.captured_queries)) <= 1
    # The answer proposal_create stores for a replay is the 201's body: built once, grants read once.
    assert created.status_code == 201 and created.json()["impact"]["amount"] is None
    assert len(read_grant_queries(creating.captured_queries)) <= 1
