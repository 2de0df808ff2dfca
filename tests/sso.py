"""The sample identity provider (sandbox/idp) and one web process signing people in through it only (local passwords
off, as production would run), beside the session's CRM and worker: shared by the single sign-on and e-mail link
browser tests, so a session starts one provider and one such web process whichever of them run."""

from __future__ import annotations

import json
import secrets

import pytest

ROLE_MAP = {"finance-approvers": "Approvers", "audit-readers": "Auditors"}
PEOPLE = {
    "dana": {
        "password": "dana-at-the-provider",
        "email": "dana@example.com",
        "name": "Dana Finance",
        "groups": ["finance-approvers", "audit-readers", "all-staff"],
    },
    "sam": {
        "password": "sam-at-the-provider",
        "email": "sam@example.com",
        "name": "Sam Marketing",
        "groups": ["all-staff"],
    },
}
PROVIDER = "Sample IdP"


@pytest.fixture(scope="session")
def sso_stack(stack_processes):
    """The provider and a web process configured for it; `people` is the provider's file (a test may change groups,
    and puts PEOPLE back with `reset_people`)."""
    stack = stack_processes
    people = stack.dir / "idp-people.json"
    people.write_text(json.dumps(PEOPLE))
    client_secret = secrets.token_urlsafe(32)
    issuer = stack.idp("idp", people, "gatehouse", client_secret)
    web_url = stack.web(
        "web-sso",
        GATEHOUSE_OIDC_ISSUER=issuer,
        GATEHOUSE_OIDC_CLIENT_ID="gatehouse",
        GATEHOUSE_OIDC_CLIENT_SECRET=client_secret,
        GATEHOUSE_OIDC_ROLE_MAP=json.dumps(ROLE_MAP),
        GATEHOUSE_OIDC_PROVIDER_NAME=PROVIDER,
        GATEHOUSE_LOCAL_PASSWORDS="false",
    )
    return {"issuer": issuer, "web_url": web_url, "people": people, "stack": stack}


def reset_people(sso_stack) -> None:
    sso_stack["people"].write_text(json.dumps(PEOPLE))


def sign_in_at_provider(journey, username: str) -> None:
    """From Gatehouse's sign-in page: the button, then the provider's own form."""
    page = journey.page
    journey.click("#sso-sign-in")
    assert "Sample identity provider" in page.content()
    page.fill("#id_username", username)
    page.fill("#id_password", PEOPLE[username]["password"])
    journey.click("#idp-submit")
