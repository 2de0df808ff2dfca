"""The agent API's frame: /me, problem+json for every error, the OpenAPI schema and docs."""

import pytest

from governance.services import agent_token_issue

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent_client(client, demo):
    from governance.models import Agent

    _, raw = agent_token_issue(agent=Agent.objects.get(slug="collections-agent"), channel="command")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {raw}"
    return client


def test_me_lists_the_agents_current_grants(agent_client):
    body = agent_client.get("/api/v1/me").json()
    assert body["slug"] == "collections-agent" and body["status"] == "active"
    grants = {(g["system"], g["resource"], g["access"]): g for g in body["grants"]}
    assert "email" not in grants["crm", "accounts", "read"]["fields"]
    assert "update_credit_limit" in grants["crm", "accounts", "write"]["actions"]
    assert ("legacy-inventory", "events", "read") in grants


def test_an_expired_grant_is_not_listed(agent_client):
    from datetime import timedelta

    from django.utils import timezone

    from governance.models import ScopeGrant

    ScopeGrant.objects.filter(system__slug="legacy-inventory").update(expires_at=timezone.now() - timedelta(1))
    systems = {g["system"] for g in agent_client.get("/api/v1/me").json()["grants"]}
    assert systems == {"crm"}


def test_unknown_api_path_is_a_problem_not_an_html_page(agent_client):
    response = agent_client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


def test_wrong_method_is_a_problem(agent_client):
    response = agent_client.post("/api/v1/me", data="{}", content_type="application/json")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_every_response_carries_a_request_id(agent_client):
    response = agent_client.get("/api/v1/me", HTTP_X_REQUEST_ID="trace-123")
    assert response["X-Request-ID"] == "trace-123"
    assert len(agent_client.get("/api/v1/me", HTTP_X_REQUEST_ID="bad id <script>")["X-Request-ID"]) == 32


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/v1/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/me" in schema.content
    assert client.get("/api/v1/docs/").status_code == 200
