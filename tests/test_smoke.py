"""The project starts: settings load, the demo seeds, the printed token answers /api/v1/me."""

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_demo_token_answers_me(client, demo, capsys):
    call_command("issue_token", "collections-agent")
    token = capsys.readouterr().out.strip()
    response = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert response.json()["slug"] == "collections-agent"
