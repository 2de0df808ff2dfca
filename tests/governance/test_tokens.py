"""Agent tokens: shown once, stored as prefix + hash, expiring, revocable, one refusal for every bad token."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import AgentToken
from governance.services import agent_authenticate, agent_token_issue, agent_tokens_revoke

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_token_is_stored_only_as_prefix_and_hash(f):
    agent = f.AgentFactory()
    token, raw = agent_token_issue(agent=agent, channel="command")
    stored = AgentToken.objects.values().get(pk=token.pk)
    secret_part = raw.split("_", 2)[2]
    assert all(secret_part not in str(value) for value in stored.values())
    assert stored["token_hash"] == AgentToken.hash_token(raw) != raw
    assert raw.startswith(f"gh_{stored['prefix']}_")


def test_issued_token_identifies_its_agent_and_is_audited(f):
    agent = f.AgentFactory()
    _, raw = agent_token_issue(agent=agent, channel="command", label="ci")
    found_agent, _ = agent_authenticate(raw)
    assert found_agent == agent
    event = AuditEvent.objects.get(verb="token_issued")
    assert agent.slug in event.summary
    assert raw not in str(event.input) and raw not in event.summary


def test_two_tokens_work_side_by_side_for_rotation(f):
    agent = f.AgentFactory()
    _, first = agent_token_issue(agent=agent, channel="command")
    _, second = agent_token_issue(agent=agent, channel="command")
    assert agent_authenticate(first)[0] == agent_authenticate(second)[0] == agent


def test_revoked_tokens_are_refused_and_revocation_is_audited(f):
    agent = f.AgentFactory()
    _, raw = agent_token_issue(agent=agent, channel="command")
    assert agent_tokens_revoke(agent=agent, channel="command", reason="leaked in a log") == 1
    assert agent_authenticate(raw) is None
    event = AuditEvent.objects.get(verb="token_revoked")
    assert "leaked in a log" in event.summary
    assert agent_tokens_revoke(agent=agent, channel="command") == 0


def test_expired_token_is_refused(f):
    agent = f.AgentFactory()
    token, raw = agent_token_issue(agent=agent, channel="command", expires_in=timedelta(days=1))
    AgentToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert agent_authenticate(raw) is None


def test_known_prefix_with_wrong_secret_is_refused(f):
    _, raw = agent_token_issue(agent=f.AgentFactory(), channel="command")
    assert agent_authenticate(raw[:-4] + "abcd") is None


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer gh_nope", "Bearer gh_000000000000_wrong", "Basic dXNlcjpwYXNz", "Bearer \u00e9\u00e9", "x"],
)
def test_every_bad_token_gets_the_same_401_problem(client, f, header):
    agent_token_issue(agent=f.AgentFactory(), channel="command")
    response = client.get("/api/v1/me", **({"HTTP_AUTHORIZATION": header} if header else {}))
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    body = response.json()
    assert body["code"] == "unauthenticated"
    assert body["detail"] == "A valid bearer token is required."


def test_expired_and_revoked_tokens_get_the_same_answer_as_unknown_ones(client, f):
    agent = f.AgentFactory()
    expired, expired_raw = agent_token_issue(agent=agent, channel="command", expires_in=timedelta(days=1))
    AgentToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    _, revoked_raw = agent_token_issue(agent=f.AgentFactory(), channel="command")
    agent_tokens_revoke(
        agent=AgentToken.objects.get(token_hash=AgentToken.hash_token(revoked_raw)).agent, channel="command"
    )
    bodies = {client.get("/api/v1/me", **bearer(raw)).content for raw in (expired_raw, revoked_raw, "gh_a_b")}
    assert len(bodies) == 1


def test_disabled_agent_is_refused_on_its_next_call_and_the_refusal_audited(client, f):
    agent = f.AgentFactory()
    _, raw = agent_token_issue(agent=agent, channel="command")
    assert client.get("/api/v1/me", **bearer(raw)).status_code == 200
    agent.status, agent.disabled_reason = "disabled", "misbehaved in staging"
    agent.save()
    response = client.get("/api/v1/me", **bearer(raw))
    assert response.status_code == 403
    assert response.json()["code"] == "agent_disabled"
    assert AuditEvent.objects.filter(verb="denied", agent=agent, outcome="agent_disabled").count() == 1


def test_issue_token_command_prints_a_working_token_and_revoke_tokens_stops_it(client, f, capsys):
    agent = f.AgentFactory(slug="billing-agent")
    call_command("issue_token", "billing-agent", "--expires-days", "3")
    raw = capsys.readouterr().out.strip()
    assert client.get("/api/v1/me", **bearer(raw)).json()["slug"] == "billing-agent"
    assert AgentToken.objects.get(agent=agent).expires_at > timezone.now() + timedelta(days=2)
    call_command("revoke_tokens", "billing-agent", "--reason", "rotation")
    assert "Revoked 1 token(s)" in capsys.readouterr().out
    assert client.get("/api/v1/me", **bearer(raw)).status_code == 401


def test_issue_token_for_an_unknown_agent_says_which_agents_exist(f):
    from django.core.management.base import CommandError

    f.AgentFactory(slug="known-agent")
    with pytest.raises(CommandError, match="known-agent"):
        call_command("issue_token", "nobody")
    with pytest.raises(CommandError, match="at least 1"):
        call_command("issue_token", "known-agent", "--expires-days", "0")
