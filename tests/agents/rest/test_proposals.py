"""The agent API over HTTP (Django's test client) against the real sample CRM: every error code of CONTRACT.md,
the shapes of its answers, and what each call leaves behind in the database and the audit trail."""

from __future__ import annotations

import json
import re
import uuid

import pytest
import yaml
from django.db import connection

from approvals.models import IdempotencyRecord, Proposal
from audit.models import AuditEvent
from governance.models import Agent, GlobalSwitch, Resource, System
from sandbox.testing import crm_control
from tests.factories import post_proposal as propose

PROPOSALS = "/api/v1/proposals"
PROBLEM = "application/problem+json"
ACTIONS = {
    "update_credit_limit": {"credit_limit": "2100.00"},
    "add_note": {"text": "Called about the invoice."},
    "set_status": {"status": "on_hold"},
    "send_statement": {"period": "2024-05"},
}


@pytest.fixture
def collections(crm_demo, agent_client):
    return agent_client("collections-agent")


@pytest.fixture
def reporting(crm_demo, agent_client):
    return agent_client("reporting-agent")


@pytest.fixture
def mark(crm_demo) -> int:
    """The last audit event before the test acts: events after it are the test's own."""
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["code"] == code and body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


def events(since: int) -> list[tuple[str, str, str]]:
    """(verb, outcome, actor) of the audit events written after `since`."""
    rows = AuditEvent.objects.filter(id__gt=since).order_by("id")
    return list(rows.values_list("verb", "outcome", "actor"))


def nothing_proposed(since: int) -> None:
    assert Proposal.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0
    assert not AuditEvent.objects.filter(id__gt=since, verb__in=["proposed", "auto_approved"]).exists()


# --- 400 malformed_request ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{not json", "application/json"),
        ('{"system": "crm",}', "application/json"),
        ('{"credit_limit": NaN}', "application/json"),
        ('{"system": "crm"}', "text/plain"),
    ],
    ids=["broken-json", "trailing-comma", "nan-constant", "text-plain"],
)
def test_a_body_that_is_not_json_is_a_malformed_request(collections, mark, data, content_type):
    response = collections.post(PROPOSALS, data=data, content_type=content_type)
    problem(response, 400, "malformed_request")
    nothing_proposed(mark)
    assert events(mark) == [("denied", "malformed_request", "collections-agent")]


def test_form_data_is_a_malformed_request(collections, mark):
    response = collections.post(PROPOSALS, {"system": "crm", "action": "add_note"})  # multipart/form-data
    problem(response, 400, "malformed_request")
    nothing_proposed(mark)
    assert events(mark) == [("denied", "malformed_request", "collections-agent")]


@pytest.mark.parametrize("data", ["[]", '[{"system": "crm"}]', '"crm"', "42", "null"])
def test_json_that_is_not_an_object_is_a_malformed_request(collections, mark, data):
    response = collections.post(PROPOSALS, data=data, content_type="application/json")
    problem(response, 400, "malformed_request")
    nothing_proposed(mark)
    assert events(mark) == [("denied", "malformed_request", "collections-agent")]


# --- 401 unauthenticated -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer gh_nope_nope", "Basic dXNlcjpwYXNz"])
def test_a_call_without_a_valid_token_is_unauthenticated_and_stores_nothing(crm_demo, client, mark, header):
    headers = {"Authorization": header} if header else {}
    response = client.post(
        PROPOSALS,
        {"system": "crm", "action": "add_note", "record_id": "4471", "payload": {"text": "x"}},
        content_type="application/json",
        headers=headers,
    )
    problem(response, 401, "unauthenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")
    nothing_proposed(mark)
    assert events(mark) == []


# --- 403 scope_denied --------------------------------------------------------------------------------------------


def test_a_read_only_agent_proposing_a_credit_limit_is_scope_denied_and_audited(reporting, mark):
    response = propose(reporting, "update_credit_limit", {"credit_limit": "2100.00"})
    problem(response, 403, "scope_denied")
    nothing_proposed(mark)
    assert events(mark) == [("denied", "scope_denied", "reporting-agent")]
    denied = AuditEvent.objects.get(id__gt=mark)
    assert denied.agent.slug == "reporting-agent"
    assert denied.system.slug == "crm" and denied.record_id == "4471"
    assert denied.input["action"] == "update_credit_limit"


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_a_read_only_grant_cannot_propose_through_any_write_path(reporting, mark, action):
    response = propose(reporting, action, ACTIONS[action])
    problem(response, 403, "scope_denied")
    nothing_proposed(mark)
    assert events(mark) == [("denied", "scope_denied", "reporting-agent")]


def test_reading_a_resource_without_a_read_grant_is_scope_denied(collections, mark):
    Resource.objects.create(system=System.objects.get(slug="crm"), name="invoices", label="invoice", fields=["total"])
    response = collections.get("/api/v1/systems/crm/invoices/1")
    problem(response, 403, "scope_denied")
    assert events(mark) == [("denied", "scope_denied", "collections-agent")]
    assert not AuditEvent.objects.filter(id__gt=mark, verb="read").exists()


def test_reading_a_system_the_agent_has_no_grant_on_is_scope_denied(reporting, mark):
    response = reporting.get("/api/v1/systems/legacy-inventory/events/1")
    problem(response, 403, "scope_denied")
    assert events(mark) == [("denied", "scope_denied", "reporting-agent")]
    assert AuditEvent.objects.get(id__gt=mark).system.slug == "legacy-inventory"


# --- 403 agent_disabled ------------------------------------------------------------------------------------------


def test_a_disabled_agent_is_refused_on_its_next_call(collections, mark):
    assert collections.get("/api/v1/me").status_code == 200
    Agent.objects.filter(slug="collections-agent").update(status="disabled", disabled_reason="runaway loop")
    disabled_at = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()

    body = problem(propose(collections, "add_note", {"text": "still here"}), 403, "agent_disabled")
    assert "runaway loop" in body["detail"]
    problem(collections.get("/api/v1/systems/crm/accounts/4471"), 403, "agent_disabled")
    nothing_proposed(mark)
    assert events(disabled_at) == [("denied", "agent_disabled", "collections-agent")] * 2


# --- 404 not_found -----------------------------------------------------------------------------------------------


def test_another_agents_proposal_looks_exactly_like_a_missing_one(collections, reporting, mark):
    created = propose(collections, "update_credit_limit", {"credit_limit": "5000.00"})
    assert created.status_code == 201, created.content
    proposal_id = created.json()["id"]

    theirs = reporting.get(f"{PROPOSALS}/{proposal_id}")
    missing = reporting.get(f"{PROPOSALS}/{uuid.uuid4()}")
    assert problem(theirs, 404, "not_found") == problem(missing, 404, "not_found")

    cancel_theirs = reporting.post(f"{PROPOSALS}/{proposal_id}/cancel")
    cancel_missing = reporting.post(f"{PROPOSALS}/{uuid.uuid4()}/cancel")
    assert problem(cancel_theirs, 404, "not_found") == problem(cancel_missing, 404, "not_found")

    assert Proposal.objects.get(pk=proposal_id).status == "pending_approval"
    assert not AuditEvent.objects.filter(id__gt=mark, verb="cancelled").exists()
    assert not AuditEvent.objects.filter(id__gt=mark, actor="reporting-agent").exclude(verb="denied").exists()


def test_an_unknown_system_is_not_found(collections, mark):
    problem(collections.get("/api/v1/systems/no-such-system/accounts/4471"), 404, "not_found")
    response = collections.post(
        PROPOSALS,
        {"system": "no-such-system", "action": "add_note", "record_id": "1", "payload": {"text": "x"}},
        content_type="application/json",
    )
    problem(response, 404, "not_found")
    nothing_proposed(mark)


def test_an_unknown_record_is_not_found_and_the_lookup_is_audited(collections, mark):
    body = problem(collections.get("/api/v1/systems/crm/accounts/9999"), 404, "not_found")
    assert "9999" in body["detail"]
    assert events(mark) == [("read", "not_found", "collections-agent")]


# --- 409 idempotency_conflict and replay -------------------------------------------------------------------------


def test_the_same_idempotency_key_with_another_body_is_a_conflict(collections, mark):
    first = propose(collections, "update_credit_limit", {"credit_limit": "2100.00"}, idempotency_key="key-1")
    assert first.status_code == 201, first.content
    other = propose(collections, "update_credit_limit", {"credit_limit": "9100.00"}, idempotency_key="key-1")
    problem(other, 409, "idempotency_conflict")
    assert Proposal.objects.count() == 1
    assert Proposal.objects.get().payload == {"credit_limit": "2100.00"}
    assert [verb for verb, _, _ in events(mark) if verb == "proposed"] == ["proposed"]


def test_replaying_an_idempotency_key_returns_the_first_response_and_stores_one_proposal(collections, mark):
    first = propose(collections, "update_credit_limit", {"credit_limit": "5000.00"}, idempotency_key="key-2")
    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first
    replay = propose(collections, "update_credit_limit", {"credit_limit": "5000.00"}, idempotency_key="key-2")
    assert replay.status_code == 200, replay.content
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert Proposal.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1
    assert [verb for verb, _, _ in events(mark) if verb == "proposed"] == ["proposed"]


def test_an_idempotency_key_is_per_agent(crm_demo, agent_client, mark):
    first = propose(agent_client("collections-agent"), "add_note", {"text": "a"}, idempotency_key="shared")
    assert first.status_code == 201, first.content
    other = propose(agent_client("reporting-agent"), "add_note", {"text": "a"}, idempotency_key="shared")
    problem(other, 403, "scope_denied")  # not a replay of collections-agent's answer
    assert Proposal.objects.count() == 1


# --- 409 invalid_state -------------------------------------------------------------------------------------------


def test_cancelling_an_auto_approved_proposal_is_an_invalid_state(collections, mark):
    created = propose(collections, "update_credit_limit", {"credit_limit": "2100.00"})
    assert created.status_code == 201 and created.json()["status"] == "approved"
    proposal_id = created.json()["id"]
    problem(collections.post(f"{PROPOSALS}/{proposal_id}/cancel"), 409, "invalid_state")
    assert Proposal.objects.get(pk=proposal_id).status == "approved"
    assert not AuditEvent.objects.filter(id__gt=mark, verb="cancelled").exists()


def test_cancelling_twice_is_an_invalid_state_the_second_time(collections, mark):
    proposal_id = propose(collections, "update_credit_limit", {"credit_limit": "5000.00"}).json()["id"]
    first = collections.post(f"{PROPOSALS}/{proposal_id}/cancel")
    assert first.status_code == 200, first.content
    assert first.json()["status"] == "cancelled" and first.json()["id"] == proposal_id
    problem(collections.post(f"{PROPOSALS}/{proposal_id}/cancel"), 409, "invalid_state")
    assert Proposal.objects.get(pk=proposal_id).status == "cancelled"
    assert AuditEvent.objects.filter(id__gt=mark, verb="cancelled", proposal_id=proposal_id).count() == 1


# --- 413 payload_too_large ---------------------------------------------------------------------------------------


def test_a_body_over_64_kib_is_too_large_and_stores_nothing(collections, mark):
    response = propose(collections, "add_note", {"text": "x"}, reason="r" * 70_000)
    problem(response, 413, "payload_too_large")
    nothing_proposed(mark)


def test_a_body_just_under_the_limit_is_read_and_judged_on_its_fields(collections, mark):
    response = propose(collections, "add_note", {"text": "x"}, reason="r" * 60_000)
    body = problem(response, 422, "invalid_payload")  # parsed, then refused: reason is at most 2,000 characters
    assert set(body["errors"]) == {"reason"}
    nothing_proposed(mark)


# --- 422 invalid_payload -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"credit_limit": "7500.00", "currency": "EUR"}, "payload.currency"),
        ({"credit_limit": 7500}, "payload.credit_limit"),
        ({}, "payload.credit_limit"),
        ({"credit_limit": "abc"}, "payload.credit_limit"),
        ({"credit_limit": "-100.00"}, "payload.credit_limit"),
        ({"credit_limit": "1" * 400}, "payload.credit_limit"),
        ({"credit_limit": "1" * 13}, "payload.credit_limit"),
        ({"credit_limit": 1e308}, "payload.credit_limit"),
    ],
    ids=["unknown-field", "number-not-string", "missing", "abc", "negative", "huge-string", "13-digits", "1e308"],
)
def test_a_payload_that_does_not_fit_the_action_schema_is_invalid(collections, mark, payload, field):
    body = problem(propose(collections, "update_credit_limit", payload), 422, "invalid_payload")
    assert set(body["errors"]) == {field}
    nothing_proposed(mark)
    assert events(mark) == [("denied", "invalid_payload", "collections-agent")]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"systme": "crm", "action": "add_note", "record_id": "4471", "payload": {"text": "x"}}, {"systme"}),
        ({"system": "crm", "action": "add_note", "record_id": "4471"}, {"payload"}),
        ({"system": "crm", "action": "add_note", "record_id": "4471", "payload": ["x"]}, {"payload"}),
        ({"system": "crm", "action": "add_note", "record_id": "../4471", "payload": {"text": "x"}}, {"record_id"}),
        ({"system": "crm", "action": "add_note", "record_id": True, "payload": {"text": "x"}}, {"record_id"}),
    ],
    ids=["typo-top-level", "no-payload", "payload-list", "path-in-record-id", "boolean-record-id"],
)
def test_a_request_with_bad_top_level_fields_is_invalid(collections, mark, body, fields):
    response = collections.post(PROPOSALS, body, content_type="application/json")
    assert set(problem(response, 422, "invalid_payload")["errors"]) == fields
    nothing_proposed(mark)
    assert events(mark) == [("denied", "invalid_payload", "collections-agent")]


def test_proposing_for_a_record_the_crm_does_not_have_is_invalid(collections, mark):
    response = propose(collections, "update_credit_limit", {"credit_limit": "100.00"}, record="9999")
    body = problem(response, 422, "invalid_payload")
    assert set(body["errors"]) == {"record_id"}
    nothing_proposed(mark)
    assert events(mark) == [("denied", "invalid_payload", "collections-agent")]


@pytest.mark.parametrize("depth", [21, 50, 5000])
def test_a_deeply_nested_payload_is_refused_not_a_crash(collections, mark, depth):
    payload = json.dumps({"system": "crm", "action": "add_note", "record_id": "4471", "payload": {"text": "x"}})
    nested = payload[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    response = collections.post(PROPOSALS, data=nested, content_type="application/json")
    assert response.status_code in (400, 422)
    problem(response, response.status_code, "malformed_request" if response.status_code == 400 else "invalid_payload")
    nothing_proposed(mark)


@pytest.mark.parametrize(
    ("number", "status", "code"),
    [
        ("9" * 5000, 400, "malformed_request"),
        ("Infinity", 400, "malformed_request"),
        ("1e999", 422, "invalid_payload"),
        ("-1e999", 422, "invalid_payload"),
    ],
    ids=["5000-digit-integer", "infinity-literal", "overflows-to-infinity", "overflows-to-minus-infinity"],
)
def test_huge_numbers_are_refused_not_a_crash(collections, mark, number, status, code):
    data = '{"system": "crm", "action": "update_credit_limit", "record_id": "4471", "payload": {"credit_limit": %s}}'
    response = collections.post(PROPOSALS, data=data % number, content_type="application/json")
    problem(response, status, code)
    nothing_proposed(mark)
    assert events(mark) == [("denied", code, "collections-agent")]


@pytest.mark.parametrize(
    ("action", "payload", "reason", "fields"),
    [
        ("add_note", {"text": "nul \x00 byte"}, "test", {"payload.text"}),
        ("add_note", {"text": "x"}, "nul \x00 byte", {"reason"}),
        ("add_note", {"text\x00": "x"}, "test", {"payload.text\x00", "payload.text"}),
        ("send_statement", {"period": "\x00"}, "test", {"payload.period"}),
    ],
    ids=["nul-in-text", "nul-in-reason", "nul-in-key", "nul-in-period"],
)
def test_nul_bytes_are_refused_as_invalid_not_a_crash(collections, mark, action, payload, reason, fields):
    body = problem(propose(collections, action, payload, reason=reason), 422, "invalid_payload")
    assert set(body["errors"]) == fields
    nothing_proposed(mark)
    assert events(mark) == [("denied", "invalid_payload", "collections-agent")]


@pytest.mark.parametrize(
    ("key", "status"),
    [("k" * 255, 201), ("k" * 256, 422), ("é-ключ", 201), ("a\x00b", 422), ("a\nb", 422)],
    ids=["255-chars", "256-chars", "non-ascii", "nul", "newline"],
)
def test_an_odd_idempotency_key_is_used_or_refused_never_a_crash(collections, mark, key, status):
    response = propose(collections, "add_note", {"text": "x"}, idempotency_key=key)
    assert response.status_code == status, response.content
    if status == 422:
        assert set(problem(response, 422, "invalid_payload")["errors"]) == {"Idempotency-Key"}
        nothing_proposed(mark)
    else:
        assert IdempotencyRecord.objects.get().key == key


def test_unicode_in_reason_and_text_is_stored_verbatim(collections, mark):
    text = "Zahlung pünktlich ✓ — 支払い済み 🚀 \u202e reversed"
    response = propose(collections, "add_note", {"text": text}, reason="Grüße 👋 " + "é" * 100)
    assert response.status_code == 201, response.content
    proposal = Proposal.objects.get(pk=response.json()["id"])
    assert proposal.payload == {"text": text}
    assert proposal.reason == "Grüße 👋 " + "é" * 100
    assert response.json()["payload"] == {"text": text}


@pytest.mark.parametrize(
    "text",
    ["'; DROP TABLE governance_agent; --", "<script>alert(1)</script>", "Robert'); DELETE FROM approvals_proposal;--"],
)
def test_injection_text_in_a_note_is_stored_as_data(collections, mark, text):
    response = propose(collections, "add_note", {"text": text}, reason=text)
    assert response.status_code == 201, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["payload"] == {"text": text}
    proposal = Proposal.objects.get(pk=response.json()["id"])
    assert proposal.payload == {"text": text} and proposal.reason == text
    assert Agent._meta.db_table in connection.introspection.table_names()
    assert Agent.objects.count() == 2 and Proposal.objects.count() == 1


# --- 422 unknown_action ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["delete_account", "UPDATE_CREDIT_LIMIT", "update-credit-limit"])
def test_an_action_the_system_does_not_have_is_unknown(collections, mark, action):
    problem(propose(collections, action, {"credit_limit": "2100.00"}), 422, "unknown_action")
    nothing_proposed(mark)
    assert events(mark) == [("denied", "unknown_action", "collections-agent")]


# --- 429 throttled -----------------------------------------------------------------------------------------------


def test_the_fourth_call_in_a_minute_is_throttled_with_retry_after(collections, mark, settings):
    from agents.throttle import forget

    agent = Agent.objects.get(slug="collections-agent")
    forget(agent)
    settings.GATEHOUSE_AGENT_RATE = "3/min"
    for _ in range(3):
        assert collections.get("/api/v1/me").status_code == 200
    response = propose(collections, "add_note", {"text": "x"})
    problem(response, 429, "throttled")
    assert 0 < int(response["Retry-After"]) <= 60
    nothing_proposed(mark)
    forget(agent)


# --- 503 system_frozen -------------------------------------------------------------------------------------------


def test_proposing_to_a_frozen_system_answers_503_with_retry_after(collections, mark):
    System.objects.filter(slug="crm").update(writes_frozen=True, frozen_reason="month-end close")
    response = propose(collections, "update_credit_limit", {"credit_limit": "2100.00"})
    body = problem(response, 503, "system_frozen")
    assert "month-end close" in body["detail"]
    assert int(response["Retry-After"]) > 0
    nothing_proposed(mark)
    assert events(mark) == [("denied", "system_frozen", "collections-agent")]
    # Reads are not writes: the record can still be read.
    assert collections.get("/api/v1/systems/crm/accounts/4471").status_code == 200


def test_the_global_stop_refuses_every_call(collections, mark):
    proposal_id = propose(collections, "update_credit_limit", {"credit_limit": "5000.00"}).json()["id"]
    before = Proposal.objects.count()
    GlobalSwitch.objects.create(pk=1, engaged=True, reason="drill")
    stopped = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    calls = [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/systems"),
        ("GET", "/api/v1/systems/crm/accounts/4471"),
        ("GET", PROPOSALS),
        ("GET", f"{PROPOSALS}/{proposal_id}"),
        ("POST", f"{PROPOSALS}/{proposal_id}/cancel"),
        ("GET", "/api/v1/events"),
    ]
    for method, path in calls:
        response = collections.get(path) if method == "GET" else collections.post(path)
        body = problem(response, 503, "system_frozen")
        assert "drill" in body["detail"], path
        assert "Retry-After" in response, path
    problem(propose(collections, "add_note", {"text": "x"}), 503, "system_frozen")
    assert Proposal.objects.count() == before
    assert Proposal.objects.get(pk=proposal_id).status == "pending_approval"
    assert events(stopped) == [("denied", "system_frozen", "collections-agent")] * (len(calls) + 1)


def test_the_global_stop_refuses_an_idempotent_replay_too(collections, mark):
    first = propose(collections, "add_note", {"text": "x"}, idempotency_key="key-3")
    assert first.status_code == 201, first.content
    GlobalSwitch.objects.create(pk=1, engaged=True, reason="drill")
    problem(propose(collections, "add_note", {"text": "x"}, idempotency_key="key-3"), 503, "system_frozen")
    assert Proposal.objects.count() == 1


# --- 503 system_unavailable --------------------------------------------------------------------------------------


def test_reading_from_a_system_that_does_not_answer_is_unavailable(collections, mark):
    crm = System.objects.get(slug="crm")
    crm.connector_config = {**crm.connector_config, "base_url": "http://127.0.0.1:9", "timeout": 2}
    crm.save()
    response = collections.get("/api/v1/systems/crm/accounts/4471")
    problem(response, 503, "system_unavailable")
    assert "Retry-After" in response
    assert events(mark) == [("read", "system_unavailable", "collections-agent")]


def test_proposing_when_the_system_does_not_answer_is_unavailable(collections, mark):
    crm = System.objects.get(slug="crm")
    crm.connector_config = {**crm.connector_config, "base_url": "http://127.0.0.1:9", "timeout": 2}
    crm.save()
    problem(propose(collections, "update_credit_limit", {"credit_limit": "2100.00"}), 503, "system_unavailable")
    nothing_proposed(mark)
    assert events(mark) == [("denied", "system_unavailable", "collections-agent")]


# --- The proposal and its decision -------------------------------------------------------------------------------


def test_a_3000_dollar_raise_answers_the_contract_shape_and_waits_for_one_approver(collections, mark):
    response = propose(collections, "update_credit_limit", {"credit_limit": "5000.00"})
    assert response.status_code == 201, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert response["Location"] == f"/api/v1/proposals/{body['id']}"
    assert {"id", "status", "system", "action", "record_id", "impact", "decision", "created_at", "links"} <= set(body)
    assert uuid.UUID(body["id"])
    assert body["status"] == "pending_approval"
    assert (body["system"], body["action"], body["record_id"]) == ("crm", "update_credit_limit", "4471")
    assert body["impact"] == {"amount": "3000.00", "currency": "USD"}
    decision = body["decision"]
    assert decision["mode"] == "single" and decision["approver"] == "approver"
    assert decision["rule"] and decision["sla_due_at"] and decision["expires_at"]
    assert body["created_at"] and body["links"] == {"self": f"/api/v1/proposals/{body['id']}"}
    assert collections.get(body["links"]["self"]).json() == body
    assert [verb for verb, _, _ in events(mark)] == ["proposed"]


def test_the_impact_is_computed_from_the_crm_not_taken_from_the_agent(collections, mark, stack_processes):
    crm_control(stack_processes.crm_url, "/_control/set", {"account": "4471", "fields": {"credit_limit": "4900.00"}})
    response = propose(collections, "update_credit_limit", {"credit_limit": "5200.00"}, reason="impact is 3200")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["impact"] == {"amount": "300.00", "currency": "USD"}
    assert body["decision"]["mode"] == "auto" and body["status"] == "approved"
    assert Proposal.objects.get().record_snapshot == {"credit_limit": "4900.00"}
    assert [verb for verb, _, _ in events(mark)] == ["proposed", "auto_approved"]


# --- Listing proposals -------------------------------------------------------------------------------------------


def test_the_proposal_list_shows_only_the_callers_own_and_filters_by_status(crm_demo, agent_client, collections):
    pending = propose(collections, "update_credit_limit", {"credit_limit": "5000.00"}).json()
    approved = propose(collections, "add_note", {"text": "x"}).json()
    assert approved["status"] == "approved"
    other = agent_client("collections-agent")  # the same agent with another token sees the same list
    reporting = agent_client("reporting-agent")

    listed = collections.get(PROPOSALS).json()
    assert [item["id"] for item in listed["results"]] == [approved["id"], pending["id"]]
    assert [item["id"] for item in other.get(PROPOSALS).json()["results"]] == [approved["id"], pending["id"]]
    assert reporting.get(PROPOSALS).json()["results"] == []

    only_pending = collections.get(PROPOSALS, {"status": "pending_approval"}).json()
    assert [item["id"] for item in only_pending["results"]] == [pending["id"]]


def test_an_unknown_status_filter_is_invalid(collections):
    body = problem(collections.get(PROPOSALS, {"status": "bogus"}), 422, "invalid_payload")
    assert set(body["errors"]) == {"status"}


def test_the_proposal_list_pages_with_a_cursor(collections):
    ids = [propose(collections, "add_note", {"text": f"note {n}"}).json()["id"] for n in range(3)]
    first = collections.get(PROPOSALS, {"limit": 1}).json()
    assert len(first["results"]) == 1 and first["next"]
    seen = [first["results"][0]["id"]]
    page = first
    while page["next"]:
        page = collections.get(page["next"]).json()
        seen.extend(item["id"] for item in page["results"])
    assert seen == list(reversed(ids))


# --- Systems and events ------------------------------------------------------------------------------------------


def test_systems_show_readable_fields_without_email_and_the_actions_with_schemas(collections):
    response = collections.get("/api/v1/systems")
    assert response.status_code == 200, response.content
    systems = {system["slug"]: system for system in response.json()}
    assert set(systems) == {"crm", "legacy-inventory"}
    crm = systems["crm"]
    assert crm["resources"] == [
        {"name": "accounts", "label": "account", "readable_fields": ["name", "status", "credit_limit", "notes"]}
    ]
    actions = {action["name"]: action for action in crm["actions"]}
    assert set(actions) == set(ACTIONS)
    for action in actions.values():
        assert action["payload_schema"]["type"] == "object" and action["resource"] == "accounts"
    assert actions["update_credit_limit"]["payload_schema"]["required"] == ["credit_limit"]
    assert actions["send_statement"]["reversible"] is False
    assert systems["legacy-inventory"]["actions"] == []


def test_a_read_only_agent_sees_its_systems_but_no_actions(reporting):
    systems = reporting.get("/api/v1/systems").json()
    assert [system["slug"] for system in systems] == ["crm"]
    assert systems[0]["actions"] == []
    assert "email" not in systems[0]["resources"][0]["readable_fields"]


def test_reading_4471_returns_only_the_granted_fields(collections, mark):
    response = collections.get("/api/v1/systems/crm/accounts/4471")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["system"], body["resource"], body["record_id"]) == ("crm", "accounts", "4471")
    assert set(body["data"]) == {"name", "status", "credit_limit", "notes"}
    assert events(mark) == [("read", "ok", "collections-agent")]


def test_events_answer_an_empty_page_for_an_agent_with_an_events_grant(collections):
    response = collections.get("/api/v1/events")
    assert response.status_code == 200, response.content
    assert response.json() == {"events": [], "next_after": 0}
    assert collections.get("/api/v1/events", {"system": "legacy-inventory"}).status_code == 200


def test_events_of_a_system_without_a_grant_are_scope_denied(reporting, mark):
    problem(reporting.get("/api/v1/events", {"system": "legacy-inventory"}), 403, "scope_denied")
    assert events(mark) == [("denied", "scope_denied", "reporting-agent")]


@pytest.mark.parametrize(
    ("params", "field"), [({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"after": "x"}, "after")]
)
def test_events_with_a_bad_cursor_or_limit_are_invalid(collections, mark, params, field):
    body = problem(collections.get("/api/v1/events", params), 422, "invalid_payload")
    assert set(body["errors"]) == {field}
    assert not AuditEvent.objects.filter(id__gt=mark, verb="read").exists()


# --- OpenAPI -----------------------------------------------------------------------------------------------------


def test_the_openapi_schema_documents_every_path_of_the_contract(client):
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    paths = {re.sub(r"\{[^}]+\}", "{}", path): operations for path, operations in schema["paths"].items()}
    contract = [
        ("get", "/api/v1/me"),
        ("get", "/api/v1/systems"),
        ("get", "/api/v1/systems/{}/{}/{}"),
        ("post", "/api/v1/proposals"),
        ("get", "/api/v1/proposals"),
        ("get", "/api/v1/proposals/{}"),
        ("post", "/api/v1/proposals/{}/cancel"),
        ("get", "/api/v1/events"),
    ]
    for method, path in contract:
        assert method in paths.get(path, {}), f"{method.upper()} {path} is not documented"
        responses = paths[path][method]["responses"]
        for status, code in (("401", "unauthenticated"), ("429", "throttled"), ("503", "system_frozen")):
            assert code in responses.get(status, {}).get("description", ""), f"{method.upper()} {path}: {code}"
    create = paths["/api/v1/proposals"]["post"]["responses"]
    for status in ("201", "200", "400", "401", "403", "409", "413", "422", "429", "503"):
        assert status in create, f"POST /api/v1/proposals does not document {status}"
    assert "idempotency_conflict" in create["409"]["description"]
    assert {"invalid_payload", "unknown_action"} <= set(re.findall(r"[a-z_]+", create["422"]["description"]))
    headers = {p["name"] for p in paths["/api/v1/proposals"]["post"].get("parameters", []) if p["in"] == "header"}
    assert "Idempotency-Key" in headers
    cancel = paths["/api/v1/proposals/{}/cancel"]["post"]["responses"]
    assert "invalid_state" in cancel["409"]["description"]
