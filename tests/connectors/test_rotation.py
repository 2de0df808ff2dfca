"""Rotating a system's credential: checked against the system with the new secret, stored or refused by one rule,
audited without the secret, the owner told; the daily rotation notice; the blast-radius page."""

from __future__ import annotations

import io
import secrets
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from connectors.models import AgentCredential, Credential
from connectors.services import credential_rotate, credential_set, credentials_tell_rotation_due
from sandbox.testing import crm_control, run_crm
from tests.factories import SystemFactory, UserFactory
from tests.stack import ROOT, Stack

FIRST = "first-secret-" + "a" * 20


@pytest.fixture(scope="module")
def crm_url(tmp_path_factory):
    """A sample CRM of this module's own, started with the token FIRST."""
    with run_crm(token=FIRST, store=tmp_path_factory.mktemp("crm") / "crm.sqlite3") as url:
        yield url


@pytest.fixture
def crm(crm_url, db):
    """A system on the module's CRM (reset: it accepts FIRST only), its credential FIRST, its owner with an e-mail."""
    crm_control(crm_url, "/_control/reset", {})
    system = SystemFactory(
        slug="crm-rot",
        connector_config={"base_url": crm_url, "timeout": 5},
        oncall_contact="oncall@example.com",
    )
    credential_set(system=system, secret=FIRST, actor=None, channel="command")
    return system


def accept(crm_url: str, *tokens: str) -> None:
    """The CRM's own admin issues and revokes tokens: from now on it accepts exactly these."""
    crm_control(crm_url, "/_control/token", {"tokens": list(tokens)})


def credential_of(system) -> Credential:
    return Credential.objects.get(system=system)


def rotation_events(system) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(verb="credential_set", system=system).order_by("id"))


# --- The sample CRM's side door ---------------------------------------------------------------------------------


def test_the_sample_crm_accepts_the_tokens_its_side_door_sets_and_reset_restores_the_first(crm_url):
    import httpx

    def status(token: str, path: str = "/accounts/4471") -> int:
        return httpx.get(crm_url + path, headers={"Authorization": f"Bearer {token}"}).status_code

    crm_control(crm_url, "/_control/reset", {})
    assert status(FIRST) == 200
    assert status("other") == 401
    assert status("other", "/_health") == 401  # a health check with a credential proves it
    assert httpx.get(crm_url + "/_health").status_code == 200  # without one it is the plain side door

    accept(crm_url, FIRST, "second")
    assert (status(FIRST), status("second")) == (200, 200)
    accept(crm_url, "second")
    assert (status(FIRST), status("second"), status("second", "/_health")) == (401, 200, 200)

    crm_control(crm_url, "/_control/reset", {})
    assert (status(FIRST), status("second")) == (200, 401)


@pytest.mark.parametrize("tokens", [[], [""], [" padded "], "one", [1], ["t"] * 11])
def test_the_sample_crm_refuses_malformed_token_lists(crm_url, tokens):
    from sandbox.testing import CRMControlError

    with pytest.raises(CRMControlError) as error:
        crm_control(crm_url, "/_control/token", {"tokens": tokens})
    assert error.value.status == 422


# --- The service --------------------------------------------------------------------------------------------------


def test_a_secret_the_system_accepts_is_stored_and_the_audit_event_records_the_check(
    crm, crm_url, mailoutbox, django_capture_on_commit_callbacks
):
    accept(crm_url, FIRST, "second-secret")
    before = credential_of(crm).last_rotated_at
    owner = crm.owner

    with django_capture_on_commit_callbacks(execute=True):
        rotation = credential_rotate(system=crm, new_secret="second-secret", actor=owner, channel="admin")

    assert rotation.stored and rotation.health.ok and rotation.previous_health is None
    credential = credential_of(crm)
    assert credential.reveal() == "second-secret"
    assert credential.last_rotated_at > before
    event = rotation_events(crm)[-1]
    assert event.outcome == "ok"
    assert event.input["rotated"] is True and event.input["health"] == {"ok": True, "reason": ""}
    assert event.person == owner and event.channel == "admin"
    assert "second-secret" not in str(event.input) + event.summary
    assert mailoutbox == []
    assert credential.history.first().history_change_reason == "secret rotated"


def test_a_secret_the_system_refuses_is_not_stored_while_the_current_one_still_works(
    crm, mailoutbox, django_capture_on_commit_callbacks
):
    before = credential_of(crm)

    with django_capture_on_commit_callbacks(execute=True):
        rotation = credential_rotate(system=crm, new_secret="a-typo", actor=None, channel="command")

    assert not rotation.stored and not rotation.health.ok and rotation.previous_health.ok
    assert "401" in rotation.health.reason
    after = credential_of(crm)
    assert after.reveal() == FIRST
    assert (after.ciphertext, after.last_rotated_at) == (before.ciphertext, before.last_rotated_at)
    event = rotation_events(crm)[-1]
    assert event.outcome == "refused" and event.input["rotated"] is False
    assert "a-typo" not in str(event.input) + event.summary
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == [crm.owner.email]
    assert "not rotated" in mail.subject and "401" in mail.body
    assert "a-typo" not in mail.subject + mail.body


def test_a_refused_secret_is_stored_when_the_current_one_fails_too_and_owner_and_oncall_are_told(
    crm, crm_url, mailoutbox, django_capture_on_commit_callbacks
):
    accept(crm_url, "issued-upstream")  # the CRM's admin revoked FIRST and issued a secret Gatehouse was not given

    with django_capture_on_commit_callbacks(execute=True):
        rotation = credential_rotate(system=crm, new_secret="mistyped", actor=None, channel="command")

    assert rotation.stored and not rotation.health.ok and not rotation.previous_health.ok
    assert credential_of(crm).reveal() == "mistyped"
    event = rotation_events(crm)[-1]
    assert event.outcome == "health_failed" and event.input["rotated"] is True
    assert event.input["health"]["ok"] is False and "401" in event.input["health"]["reason"]
    assert "mistyped" not in str(event.input) + event.summary
    assert len(mailoutbox) == 1
    assert sorted(mailoutbox[0].to) == sorted([crm.owner.email, "oncall@example.com"])
    assert "refuses it" in mailoutbox[0].subject and "mistyped" not in mailoutbox[0].body


def test_a_system_that_is_down_keeps_the_new_secret(db, mailoutbox, django_capture_on_commit_callbacks):
    system = SystemFactory()  # points at 127.0.0.1:9: nothing listens
    credential_set(system=system, secret=FIRST, actor=None, channel="command")

    with django_capture_on_commit_callbacks(execute=True):
        rotation = credential_rotate(system=system, new_secret="the-new-one", actor=None, channel="command")

    assert rotation.stored and not rotation.health.ok
    assert "failed" in rotation.health.reason
    assert credential_of(system).reveal() == "the-new-one"
    assert len(mailoutbox) == 1


@pytest.mark.parametrize("secret", ["", " padded", "two\nlines", "tab\tinside"])
def test_a_rotation_needs_one_line_of_text(crm, secret):
    with pytest.raises(ValidationError):
        credential_rotate(system=crm, new_secret=secret, actor=None, channel="command")
    assert credential_of(crm).reveal() == FIRST


def test_a_system_without_a_credential_has_nothing_to_rotate(db):
    with pytest.raises(ValidationError, match="no vaulted credential"):
        credential_rotate(system=SystemFactory(), new_secret="x", actor=None, channel="command")


# --- The command --------------------------------------------------------------------------------------------------


def test_the_command_reads_the_secret_from_stdin_and_prints_the_health_result(crm, crm_url, capsys):
    accept(crm_url, FIRST, "piped-secret")

    call_command("rotate_credential", "crm-rot", stdin=io.StringIO("piped-secret\n"))

    out = capsys.readouterr().out
    assert "Rotated the credential of crm-rot" in out and "Health check with the new secret: ok." in out
    assert "piped-secret" not in out
    assert credential_of(crm).reveal() == "piped-secret"  # the trailing newline is not part of it
    assert rotation_events(crm)[-1].channel == "command"


def test_the_command_fails_when_the_check_fails_and_names_what_it_did(crm):
    with pytest.raises(CommandError, match=r"Not rotated.*401") as error:
        call_command("rotate_credential", "crm-rot", stdin=io.StringIO("wrong-secret\n"))
    assert "wrong-secret" not in str(error.value)
    assert credential_of(crm).reveal() == FIRST


@pytest.mark.parametrize(
    ("stdin", "message"),
    [("", "No secret on stdin"), ("\n", "No secret on stdin"), ("one\ntwo\n", "single line")],
)
def test_the_command_refuses_an_empty_or_multi_line_secret(crm, stdin, message):
    with pytest.raises(CommandError, match=message):
        call_command("rotate_credential", "crm-rot", stdin=io.StringIO(stdin))
    assert credential_of(crm).reveal() == FIRST


def test_the_command_refuses_an_unknown_system(db):
    with pytest.raises(CommandError, match="No system 'nope'"):
        call_command("rotate_credential", "nope", stdin=io.StringIO("x\n"))


@pytest.mark.django_db(transaction=True)
def test_the_command_as_a_process_takes_a_piped_secret_and_exits_1_when_unhealthy(crm_url, tmp_path):
    crm_control(crm_url, "/_control/reset", {})
    system = SystemFactory(slug="crm-proc", connector_config={"base_url": crm_url})
    credential_set(system=system, secret=FIRST, actor=None, channel="command")
    env = Stack(tmp_path).env()

    def run(secret: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "rotate_credential", "crm-proc"],
            input=secret + "\n",
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    accept(crm_url, FIRST, "process-secret")
    good = run("process-secret")
    bad = run("not-accepted")

    assert good.returncode == 0, good.stderr
    assert "Health check with the new secret: ok." in good.stdout
    assert bad.returncode == 1
    assert "Not rotated" in bad.stderr and "401" in bad.stderr
    for output in (good.stdout, good.stderr, bad.stdout, bad.stderr):
        assert "process-secret" not in output and "not-accepted" not in output
    assert credential_of(system).reveal() == "process-secret"
    crm_control(crm_url, "/_control/reset", {})


# --- The admin ----------------------------------------------------------------------------------------------------


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(is_superuser=True))
    return client


def test_the_rotate_page_takes_a_password_and_reports_the_check_without_showing_the_secret(
    crm, crm_url, superuser_client
):
    credential = credential_of(crm)
    url = reverse("admin:connectors_credential_rotate", args=[credential.pk])
    page = superuser_client.get(url).content.decode()
    assert 'type="password"' in page and 'name="secret"' in page

    response = superuser_client.post(url, {"secret": "typo-secret"}, follow=True)
    content = response.content.decode()
    assert "Not rotated" in content and "401" in content
    assert "typo-secret" not in content
    assert credential_of(crm).reveal() == FIRST

    accept(crm_url, FIRST, "admin-secret")
    response = superuser_client.post(url, {"secret": "admin-secret"}, follow=True)
    content = response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("admin:connectors_credential_change", args=[credential.pk])
    assert "the health check with it passed" in content
    assert "admin-secret" not in content
    assert credential_of(crm).reveal() == "admin-secret"
    assert rotation_events(crm)[-1].channel == "admin"


def test_the_change_page_links_to_rotation_and_blast_radius(crm, superuser_client):
    credential = credential_of(crm)
    content = superuser_client.get(reverse("admin:connectors_credential_change", args=[credential.pk])).content
    content = content.decode()
    assert reverse("admin:connectors_credential_rotate", args=[credential.pk]) in content
    assert reverse("admin:connectors_credential_blast_radius", args=[crm.slug]) in content
    system_page = superuser_client.get(reverse("admin:governance_system_change", args=[crm.pk])).content.decode()
    assert 'id="blast-radius-link"' in system_page
    assert reverse("admin:connectors_credential_blast_radius", args=[crm.slug]) in system_page


def test_only_someone_who_may_change_the_credential_may_rotate_it(crm, client):
    client.force_login(UserFactory())  # staff, but owns nothing
    credential = credential_of(crm)
    url = reverse("admin:connectors_credential_rotate", args=[credential.pk])
    assert client.post(url, {"secret": "sneaky"}).status_code == 403
    assert credential_of(crm).reveal() == FIRST

    client.force_login(crm.owner)
    crm.owner.user_permissions.add(*_credential_permissions())
    assert client.get(url).status_code == 200


def _credential_permissions():
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(content_type__app_label="connectors", codename__endswith="_credential")


def test_a_secret_entered_on_the_change_form_goes_through_the_same_check(crm, superuser_client):
    credential = credential_of(crm)
    response = superuser_client.post(
        reverse("admin:connectors_credential_change", args=[credential.pk]),
        {
            "kind": credential.kind,
            "header_name": "",
            "username": "",
            "rotation_interval": "90 00:00:00",
            "secret": "change-form-typo",
            "_save": "Save",
        },
        follow=True,
    )
    assert "Not rotated" in response.content.decode()
    assert credential_of(crm).reveal() == FIRST
    assert rotation_events(crm)[-1].outcome == "refused"


# --- The blast radius ---------------------------------------------------------------------------------------------


def test_the_blast_radius_page_lists_agents_their_grants_and_the_open_proposals(demo, superuser_client):
    from approvals.choices import DecisionMode, ProposalStatus
    from approvals.models import Proposal
    from governance.models import ActionType, Agent, System

    crm = System.objects.get(slug="crm")
    action = ActionType.objects.get(system=crm, name="update_credit_limit")
    common = {
        "agent": Agent.objects.get(slug="collections-agent"),
        "system": crm,
        "action_type": action,
        "payload": {"credit_limit": "5000.00"},
        "channel": "api",
        "mode": DecisionMode.SINGLE,
    }
    waiting = Proposal.objects.create(record_id="4471", status=ProposalStatus.PENDING_APPROVAL, **common)
    Proposal.objects.create(record_id="4472", status=ProposalStatus.EXECUTED, **common)

    response = superuser_client.get(reverse("admin:connectors_credential_blast_radius", args=["crm"]))

    assert response.status_code == 200
    content = response.content.decode()
    assert "collections-agent" in content and "reporting-agent" in content
    assert "name, status, credit_limit, notes" in content  # the read grant's fields (not email)
    assert "update_credit_limit" in content and "send_statement" in content  # the write grant's actions
    assert reverse("admin:approvals_proposal_change", args=[waiting.pk]) in content
    assert "4472" not in content  # executed: it will not call the system again
    assert "Open proposals that would use it (1)" in content
    assert credential_of(crm).ciphertext not in content


def test_the_blast_radius_of_a_system_without_a_credential_says_so(db, superuser_client):
    system = SystemFactory()
    content = superuser_client.get(reverse("admin:connectors_credential_blast_radius", args=[system.slug])).content
    assert b'id="blast-no-credential"' in content and b'id="blast-no-agents"' in content


def test_the_blast_radius_page_needs_view_permission(demo, client):
    client.force_login(UserFactory())
    assert client.get(reverse("admin:connectors_credential_blast_radius", args=["crm"])).status_code == 403


# --- Rotation due -------------------------------------------------------------------------------------------------


def _age(system, days: float, interval: int = 90) -> None:
    Credential.objects.filter(system=system).update(
        last_rotated_at=timezone.now() - timedelta(days=days), rotation_interval=timedelta(days=interval)
    )


def test_owners_are_told_once_a_day_when_rotation_is_due_within_a_week_or_overdue(
    db, mailoutbox, django_capture_on_commit_callbacks
):
    fresh, soon, overdue = SystemFactory(slug="fresh"), SystemFactory(slug="soon"), SystemFactory(slug="overdue")
    for system in (fresh, soon, overdue):
        credential_set(system=system, secret=FIRST, actor=None, channel="command")
    _age(fresh, 10)
    _age(soon, 85)  # due in 5 days
    _age(overdue, 100)

    with django_capture_on_commit_callbacks(execute=True):
        assert credentials_tell_rotation_due() == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert credentials_tell_rotation_due() == 0  # the same day: once is enough

    subjects = sorted(mail.subject for mail in mailoutbox)
    assert subjects == [
        "[Gatehouse] Credential of overdue is overdue for rotation",
        "[Gatehouse] Credential of soon is due for rotation",
    ]
    assert all(
        mail.to == [mail_system.owner.email]
        for mail, mail_system in zip(sorted(mailoutbox, key=lambda m: m.subject), [overdue, soon], strict=True)
    )
    assert "rotate_credential overdue" in sorted(mailoutbox, key=lambda m: m.subject)[0].body
    notices = AuditEvent.objects.filter(verb="escalated", resource="credential").order_by("system__slug")
    assert [(e.system.slug, e.outcome) for e in notices] == [("overdue", "rotation_overdue"), ("soon", "rotation_due")]
    assert FIRST not in "".join(mail.body for mail in mailoutbox)

    tomorrow = timezone.now() + timedelta(days=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert credentials_tell_rotation_due(now=tomorrow) == 2  # a new day: told again


def test_a_rotation_stops_the_notices(db, mailoutbox, django_capture_on_commit_callbacks):
    system = SystemFactory()
    credential_set(system=system, secret=FIRST, actor=None, channel="command")
    _age(system, 100)
    credential_set(system=system, secret="rotated", actor=None, channel="command")

    with django_capture_on_commit_callbacks(execute=True):
        assert credentials_tell_rotation_due() == 0
    assert mailoutbox == []


def test_the_rotation_notice_is_a_daily_beat_task():
    from django.conf import settings

    from gatehouse.celery import app

    entries = [
        entry for entry in settings.CELERY_BEAT_SCHEDULE.values() if entry["task"] == "connectors.tell_rotation_due"
    ]
    assert entries and entries[0]["schedule"] == 86400.0
    app.loader.import_default_modules()
    assert "connectors.tell_rotation_due" in app.tasks


def test_the_task_tells_owners(db):
    from connectors.tasks import tell_rotation_due

    system = SystemFactory()
    credential_set(system=system, secret=FIRST, actor=None, channel="command")
    _age(system, 100)
    assert tell_rotation_due.apply().get() == 1


def test_readiness_notes_a_rotation_due_within_a_week_and_fails_once_it_is_overdue(demo):
    from approvals.readiness import readiness
    from governance.models import Agent, System

    crm = System.objects.get(slug="crm")
    agent = Agent.objects.get(slug="collections-agent")
    _age(crm, 91)  # the shared one: not what this agent writes with
    own = AgentCredential.objects.filter(system=crm, agent=agent)
    own.update(last_rotated_at=timezone.now() - timedelta(days=85))
    item = next(item for item in readiness(agent).items if item.key == "credentials")
    assert item.ok and "its credential at crm is due for rotation on" in item.reason

    own.update(last_rotated_at=timezone.now() - timedelta(days=91))
    item = next(item for item in readiness(agent).items if item.key == "credentials")
    assert not item.ok and "its credential at crm was due for rotation on" in item.reason


# --- On the running stack ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_rotation_on_the_running_stack_is_checked_and_the_agent_reads_on_with_the_new_secret(live, mailoutbox):
    crm_url, old = live.stack.crm_url, live.stack.crm_token
    new = "rotated-" + secrets.token_urlsafe(18)
    agent = live.agent()
    try:
        # The CRM's admin issues a second token; Gatehouse is given it; then the CRM revokes the first.
        accept(crm_url, old, new)
        call_command("rotate_credential", "crm", stdin=io.StringIO(new + "\n"))
        event = AuditEvent.objects.filter(verb="credential_set", system__slug="crm").first()
        assert (event.outcome, event.input["health"]["ok"]) == ("ok", True)
        accept(crm_url, new)
        response = agent.get("/api/v1/systems/crm/accounts/4471")
        assert response.status_code == 200, response.text  # the web process reads with the new secret
        assert response.json()["data"]["name"] == "Northwind Traders"

        # A wrong secret while the CRM still accepts the current one: refused, nothing changes, the owner is told.
        with pytest.raises(CommandError, match="Not rotated"):
            call_command("rotate_credential", "crm", stdin=io.StringIO("wrong-" + new + "\n"))
        assert Credential.objects.get(system__slug="crm").reveal() == new
        assert agent.get("/api/v1/systems/crm/accounts/4471").status_code == 200
        owner = get_user_model().objects.get(username="owner")
        assert [(mail.to, "not rotated" in mail.subject) for mail in mailoutbox] == [([owner.email], True)]

        # The CRM revoked what Gatehouse holds and the new secret is wrong too: stored, health failed, loud.
        accept(crm_url, "something-else")
        with pytest.raises(CommandError, match="FAILED"):
            call_command("rotate_credential", "crm", stdin=io.StringIO("also-wrong\n"))
        event = AuditEvent.objects.filter(verb="credential_set", system__slug="crm").first()
        assert event.outcome == "health_failed"
        assert "refuses it" in mailoutbox[-1].subject
        response = agent.get("/api/v1/systems/crm/accounts/4471")
        assert response.status_code == 503 and "401" in response.text
    finally:
        crm_control(crm_url, "/_control/reset", {})  # the start-up token again, for the rest of the session
