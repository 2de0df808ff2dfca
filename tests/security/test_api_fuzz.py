"""Schemathesis against the agent API's own OpenAPI document, as the demo's collections agent.

The document is fetched from /api/v1/schema/ through Gatehouse's WSGI application, and every generated request goes
through that same application in this process: the real middleware, authentication, throttle, views, services and
audit trail, the test database (one rolled-back transaction per operation) and the session's running sample CRM
for reads and proposal checks. One pytest test per operation; each runs schemathesis' phases for it: the
document's examples (a real read of account 4471, a real proposal), the coverage phase (boundary and invalid values
for every parameter and body field) and the fuzzing phase, with valid and invalid data.

Checks (CHECKS): no 5xx; every status, content type, body and documented header is what the document says; invalid
data is refused and valid data is not (apart from what the document cannot say, see `data_acceptance`); a request
without the token, or with a wrong one, is refused (`ignored_auth` replays every 2xx without and with a bad token);
an undeclared method answers 405 with `Allow`. A failure is a defect in the API or in its document: fix the view,
the serializer or the extend_schema annotation, never the check.
"""

from __future__ import annotations

import base64
import json
import uuid
from urllib.parse import urlencode

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from governance.models import Agent
from governance.services import agent_token_issue

# Fuzzed requests per operation (valid and invalid ones; examples and coverage cases come on top). Eight operations:
# 20-30 s in all on two shared cores. Hypothesis picks new inputs each run (its `ci` profile derandomizes).
MAX_EXAMPLES = 300

schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", WSGIHandler())
# The token is the fixture's, sent with every request; `ignored_auth` sends each accepted request again without it
# and with a wrong one. Generated Authorization values would only ever meet the 401 before any view.
schema.config.generation.update(max_examples=MAX_EXAMPLES, with_security_parameters=False)


def data_acceptance(ctx, response, case):
    """schemathesis' positive_data_acceptance, except a proposal refused for what only the data can say.

    No static document can predict these: the actions and their payload schemas are data (per system, changed in the
    admin), and whether the record exists is the CRM's answer. So a 422 from POST /proposals passes when its code is
    unknown_action, or invalid_payload from the services (not the request serializer, whose detail is "The request has
    invalid fields.") with errors only on the payload or the record id. Any other refusal of schema-valid data, such
    as a field the serializer refuses and the document allows, still fails."""
    if case.operation.path == "/api/v1/proposals" and case.method == "POST" and response.status_code == 422:
        problem = json.loads(response.content)
        fields = problem.get("errors", {})
        if problem["code"] == "unknown_action" or (
            problem["code"] == "invalid_payload"
            and fields
            and all(name == "record_id" or name == "payload" or name.startswith("payload.") for name in fields)
            and problem["detail"] != "The request has invalid fields."
        ):
            return None
    return schemathesis.checks.positive_data_acceptance(ctx, response, case)


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.negative_data_rejection,
    data_acceptance,
    schemathesis.checks.missing_required_header,
    schemathesis.checks.ignored_auth,
    schemathesis.checks.unsupported_method,
    schemathesis.checks.allow_header_conformance,
]


@pytest.fixture
def collections_agent(crm_demo, client, settings):
    """The demo's collections agent: a token, and proposals of its own for the detail and cancel operations.

    Django closes the database connection at the end of each request it serves; its test client stops that, and the
    WSGI application schemathesis calls here must too, or the first request would end the test's transaction."""
    settings.GATEHOUSE_AGENT_RATE = "1000000/min"  # the fuzzer is one agent calling far faster than any real one
    _, token = agent_token_issue(agent=Agent.objects.get(slug="collections-agent"), channel="command")
    auth = {"Authorization": f"Bearer {token}"}
    proposals = []
    for record_id, limit in (("4471", "3000.00"), ("4472", "9000.00"), ("4473", "2500.00")):
        response = client.post(
            "/api/v1/proposals",
            {
                "system": "crm",
                "action": "update_credit_limit",
                "record_id": record_id,
                "payload": {"credit_limit": limit},
                "reason": "waiting for a person, to be read and cancelled",
            },
            content_type="application/json",
            headers=auth,
        )
        assert response.status_code == 201 and response.json()["status"] == "pending_approval", response.content
        proposals.append(response.json()["id"])
    # After the test client's requests: it connects the signal again when each of them ends.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield auth, proposals
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.mark.slow
@schema.parametrize()
# One fixture (one transaction, one token) holds every example of an operation: on purpose, proposals pile up.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_the_agent_api_keeps_to_its_openapi_document(case, collections_agent):
    auth, proposals = collections_agent
    proposal_id = (case.path_parameters or {}).get("proposal_id")
    if proposal_id is not None and case.meta is not None and case.meta.generation.mode.is_positive:
        # A random uuid never names a proposal, so detail and cancel would only ever answer 404. Some valid ids are
        # swapped for the agent's own, chosen from the generated one so a failing example replays the same way.
        choice = uuid.UUID(str(proposal_id)).int % (len(proposals) + 1)
        if choice < len(proposals):
            case.path_parameters["proposal_id"] = proposals[choice]
    case.call_and_validate(headers=auth, checks=CHECKS)


@pytest.mark.parametrize("position", ["\x00", "not a time", "9" * 50, "2026-13-45 25:61:00+00:00"], ids=repr)
def test_a_forged_proposals_cursor_is_not_found_never_a_crash(crm_demo, agent_client, position):
    """The cursor is opaque base64 the fuzzer cannot forge; its position reached the query unchecked (a 500)."""
    cursor = base64.b64encode(urlencode({"p": position}).encode()).decode()
    response = agent_client("collections-agent").get("/api/v1/proposals", {"cursor": cursor})
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found"


def test_a_real_cursor_pages_on(crm_demo, agent_client):
    collections = agent_client("collections-agent")
    for record_id in ("4471", "4472", "4473"):
        body = {"system": "crm", "action": "add_note", "record_id": record_id, "payload": {"text": "Called."}}
        assert collections.post("/api/v1/proposals", body, content_type="application/json").status_code == 201
    first = collections.get("/api/v1/proposals", {"limit": 2}).json()
    second = collections.get(first["next"]).json()
    assert [p["record_id"] for p in first["results"] + second["results"]] == ["4473", "4472", "4471"]
