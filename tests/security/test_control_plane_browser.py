"""The control plane from a real browser, as each role would try it: what the pages offer, and what a crafted POST
with the session's own CSRF token gets (the services' own refusals are in tests/security/test_control_plane.py)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from governance.choices import Role
from governance.models import Agent, AgentToken, System
from tests.factories import UserFactory
from tests.security.test_separation_browser import SUBMIT

pytestmark = [pytest.mark.slow, pytest.mark.browser]

METADATA = "http://169.254.169.254/latest/meta-data"


def crafted_post(live, page, start: str, target: str, fields: dict[str, str]) -> str:
    """Open `start` (for the CSRF token), POST `fields` to `target` as a hand-made form would, return the page."""
    page.goto(f"{live.stack.web_url}{start}")
    with page.expect_navigation():
        page.evaluate(SUBMIT, [target, fields])
    return page.content()


def test_an_operator_is_offered_no_connector_settings_and_a_crafted_post_of_them_is_forbidden(live, sign_in):
    crm = System.objects.get(slug="crm")
    before = (crm.connector_kind, dict(crm.connector_config))
    page = sign_in("operator")
    system_page = reverse("admin:governance_system_change", args=[crm.pk])
    page.goto(f"{live.stack.web_url}{system_page}")
    assert page.locator("[name=connector_config]").count() == 0
    assert page.locator("#connector-settings-link").count() == 0
    assert crm.connector_config["base_url"] not in page.content()

    settings_page = reverse("admin:governance_systemconnection_change", args=[crm.pk])
    answer = crafted_post(
        live,
        page,
        system_page,
        settings_page,
        {"connector_kind": "http", "connector_config": json.dumps({"base_url": METADATA})},
    )
    assert "403 Forbidden" in answer
    crm.refresh_from_db()
    assert (crm.connector_kind, crm.connector_config) == before
    assert not AuditEvent.objects.filter(verb="configured", system=crm).exists()


def test_an_operator_is_offered_no_token_and_a_crafted_issue_token_action_mints_none(live, sign_in):
    agent = Agent.objects.get(slug="collections-agent")
    tokens = AgentToken.objects.count()
    page = sign_in("operator")
    changelist = reverse("admin:governance_agent_changelist")
    page.goto(f"{live.stack.web_url}{changelist}")
    assert page.locator("select[name=action] option[value=issue_token]").count() == 0

    crafted_post(live, page, changelist, changelist, {"action": "issue_token", "_selected_action": str(agent.pk)})
    assert AgentToken.objects.count() == tokens
    assert "gh_" not in page.content()


def test_an_integrator_is_refused_a_metadata_address_on_the_settings_page_and_the_refusal_saves_nothing(live, sign_in):
    UserFactory(username="ines", roles=[Role.INTEGRATORS])
    crm = System.objects.get(slug="crm")
    page = sign_in("ines")
    page.goto(f"{live.stack.web_url}{reverse('admin:governance_systemconnection_change', args=[crm.pk])}")
    page.fill("[name=connector_config]", json.dumps({**crm.connector_config, "base_url": METADATA}))
    page.click("input[name=_save]")
    page.wait_for_selector(".errornote, .errorlist")
    assert "169.254.169.254 is a private, loopback or link-local address" in page.content()
    crm.refresh_from_db()
    assert crm.connector_config["base_url"] == live.stack.crm_url

    page.fill("[name=connector_config]", json.dumps({**crm.connector_config, "timeout": 7}))
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    crm.refresh_from_db()
    assert crm.connector_config["timeout"] == 7
    assert AuditEvent.objects.get(verb="configured", system=crm).actor == "ines"
