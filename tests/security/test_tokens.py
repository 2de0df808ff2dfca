"""Expired, revoked and wrong-secret tokens are indistinguishable from one another and from garbage: same status,
same body, same headers. (tests/governance/test_tokens.py covers the bodies and the malformed-header cases; this
adds the headers and the wrong-secret case side by side.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from governance.models import AgentToken
from governance.services import agent_token_issue, agent_tokens_revoke

HEADERS = ("Content-Type", "WWW-Authenticate", "Cache-Control", "Vary")


@pytest.mark.django_db
def test_expired_revoked_wrong_secret_and_unknown_tokens_get_the_same_401(client, f):
    expired, expired_raw = agent_token_issue(agent=f.AgentFactory(), channel="command", expires_in=timedelta(days=1))
    AgentToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoked_agent = f.AgentFactory()
    _, revoked_raw = agent_token_issue(agent=revoked_agent, channel="command")
    agent_tokens_revoke(agent=revoked_agent, channel="command")
    _, good_raw = agent_token_issue(agent=f.AgentFactory(), channel="command")
    wrong_secret = good_raw[:-4] + ("abcd" if not good_raw.endswith("abcd") else "wxyz")

    answers = set()
    for raw in (expired_raw, revoked_raw, wrong_secret, "gh_unknown_token"):
        response = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert response.status_code == 401
        answers.add((response.content, tuple(response.get(name) for name in HEADERS)))
    assert len(answers) == 1
    assert client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {good_raw}").status_code == 200
