"""Approvals from Slack, the parts that need no running stack: the request signature and timestamp, the door's
answers to unverified requests, who a Slack user is in Gatehouse, the client's reading of Slack's errors, and what a
message lets an agent's words do. Slack is the stand-in (sandbox/slack_standin.py), served from a thread here."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from approvals.slack.blocks import escape, message
from approvals.slack.client import SlackRefused, SlackUnavailable, slack_call
from approvals.slack.messages import slack_person, targets
from audit.models import AuditEvent
from console.slack import signature_problem
from governance.models import PersonIdentity
from sandbox.slack_standin import Server, Slack
from tests.factories import forget_forgeries

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the example secret of Slack's "Verifying requests from Slack"
TOKEN = "xoxb-unit-test-token"
URL = "/integrations/slack/interactions"


def signed(body: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    """The headers Slack sends, computed here from Slack's docs (not with the code under test)."""
    timestamp = str(int(time.time()) if at is None else at)
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"HTTP_X_SLACK_REQUEST_TIMESTAMP": timestamp, "HTTP_X_SLACK_SIGNATURE": f"v0={digest}"}


def signature_of(body: bytes, **kwargs) -> tuple[str, str]:
    headers = signed(body, **kwargs)
    return headers["HTTP_X_SLACK_REQUEST_TIMESTAMP"], headers["HTTP_X_SLACK_SIGNATURE"]


@pytest.fixture
def slack_on(settings):
    settings.GATEHOUSE_SLACK_SIGNING_SECRET = SECRET
    settings.GATEHOUSE_SLACK_BOT_TOKEN = TOKEN
    settings.GATEHOUSE_SLACK_CHANNEL = ""
    return settings


BODY = urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": "U1"}, "actions": []})}).encode()


@pytest.fixture
def fresh_flood_counter():
    """The shared per-minute count of audited forgeries, zero before and after (other tests and processes use it)."""
    forget_forgeries()
    yield
    forget_forgeries()


# --- The signature and the timestamp -----------------------------------------------------------------------------


def test_a_body_signed_with_our_secret_just_now_is_verified(slack_on):
    timestamp, signature = signature_of(BODY)
    assert signature_problem(body=BODY, timestamp=timestamp, signature=signature) == ""


def test_slacks_documented_example_signature_verifies(slack_on):
    # Slack's docs: this body, timestamp and secret give this signature.
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name="
        b"foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fho"
        b"oks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445"
        b"629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    signature = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert signature_of(body, at=1531420618)[1] == signature
    assert signature_problem(body=body, timestamp="1531420618", signature=signature, now=1531420618 + 60) == ""


def test_an_altered_body_or_another_secret_is_a_bad_signature(slack_on):
    timestamp, signature = signature_of(BODY)
    assert signature_problem(body=BODY + b"x", timestamp=timestamp, signature=signature) == "bad_signature"
    timestamp, forged = signature_of(BODY, secret="not-our-secret")
    assert signature_problem(body=BODY, timestamp=timestamp, signature=forged) == "bad_signature"


def test_a_timestamp_more_than_five_minutes_away_is_refused_even_when_signed(slack_on):
    now = int(time.time())
    for at in (now - 301, now + 301):
        timestamp, signature = signature_of(BODY, at=at)
        assert signature_problem(body=BODY, timestamp=timestamp, signature=signature) == "stale_timestamp"
    timestamp, signature = signature_of(BODY, at=now - 299)
    assert signature_problem(body=BODY, timestamp=timestamp, signature=signature) == ""


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [("", "v0=abc"), ("not-a-number", "v0=abc"), (None, "v0=abc"), ("NOW", ""), ("NOW", "v0=é")],
)
def test_missing_or_malformed_headers_are_a_bad_signature(slack_on, timestamp, signature):
    timestamp = str(int(time.time())) if timestamp == "NOW" else timestamp
    assert signature_problem(body=BODY, timestamp=timestamp, signature=signature) == "bad_signature"


def test_a_body_that_is_not_utf8_is_a_bad_signature(slack_on):
    body = b"payload=\xff\xfe"
    timestamp, signature = signature_of(body)
    assert signature_problem(body=body, timestamp=timestamp, signature=signature) == "bad_signature"


# --- The door ---------------------------------------------------------------------------------------------------


def test_the_endpoint_is_not_there_while_slack_is_off(db, settings):
    settings.GATEHOUSE_SLACK_SIGNING_SECRET = settings.GATEHOUSE_SLACK_BOT_TOKEN = ""
    response = Client().post(URL, BODY, content_type="application/x-www-form-urlencoded", **signed(BODY))
    assert response.status_code == 404


def test_a_forged_request_is_401_and_audited_with_what_is_known_but_not_its_body(db, slack_on):
    secret_words = b"approve-the-forged-proposal"
    body = BODY + b"&" + secret_words
    response = Client().post(
        URL, body, content_type="application/x-www-form-urlencoded", **signed(body, secret="forger")
    )

    assert response.status_code == 401
    (event,) = AuditEvent.objects.all()
    assert (event.verb, event.channel, event.outcome, event.actor_type) == (
        "denied",
        "slack",
        "bad_signature",
        "gatehouse",
    )
    assert event.input["body_bytes"] == len(body)
    assert event.input["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert secret_words.decode() not in json.dumps(event.input) + event.summary


def test_a_flood_of_forged_requests_stops_being_appended_to_the_trail(db, slack_on, fresh_flood_counter):
    client = Client()
    for _ in range(35):
        client.post(URL, BODY, content_type="application/x-www-form-urlencoded", **signed(BODY, secret="forger"))
    assert 30 <= AuditEvent.objects.filter(outcome="bad_signature").count() <= 31  # a minute may turn meanwhile


def test_a_verified_request_that_is_not_a_form_with_a_payload_is_400(db, slack_on):
    body = b"nothing=here"
    response = Client().post(URL, body, content_type="application/x-www-form-urlencoded", **signed(body))
    assert response.status_code == 400
    assert not AuditEvent.objects.exists()


def test_get_is_not_allowed(db, slack_on):
    assert Client().get(URL).status_code == 405


# --- Slack's Web API, the stand-in served here ------------------------------------------------------------------


@pytest.fixture
def standin(slack_on):
    slack = Slack(TOKEN, SECRET)
    server = Server(("127.0.0.1", 0), slack)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    slack_on.GATEHOUSE_SLACK_API_URL = f"http://127.0.0.1:{server.server_address[1]}/api/"
    yield slack
    server.shutdown()
    server.server_close()


def slack_user(user_id: str, email: str, **fields) -> dict:
    return {"id": user_id, "name": user_id.lower(), "is_email_confirmed": True, "profile": {"email": email}} | fields


def test_a_slack_user_is_the_gatehouse_person_with_the_confirmed_address_in_any_case(db, standin):
    dana = get_user_model().objects.create_user("dana", email="dana@example.com")
    standin.users = {"U1": slack_user("U1", "Dana@Example.COM")}
    assert slack_person("U1").user == dana


@pytest.mark.parametrize(
    ("fields", "outcome", "words"),
    [
        ({"is_email_confirmed": False}, "unconfirmed_email", "has not confirmed"),
        ({"is_email_confirmed": None}, "unconfirmed_email", "has not confirmed"),
        ({"deleted": True}, "unmapped_slack_user", "deactivated or a bot"),
        ({"is_bot": True}, "unmapped_slack_user", "deactivated or a bot"),
        ({"profile": {}}, "unmapped_slack_user", "does not share an e-mail address"),
    ],
)
def test_a_slack_user_without_a_confirmed_address_is_nobody(db, standin, fields, outcome, words):
    get_user_model().objects.create_user("dana", email="dana@example.com")
    standin.users = {"U1": slack_user("U1", "dana@example.com") | fields}
    person = slack_person("U1")
    assert person.user is None and person.outcome == outcome and words in person.refusal


def test_a_field_slack_leaves_out_is_read_as_not_confirmed(db, standin):
    get_user_model().objects.create_user("dana", email="dana@example.com")
    user = slack_user("U1", "dana@example.com")
    del user["is_email_confirmed"]
    standin.users = {"U1": user}
    assert slack_person("U1").outcome == "unconfirmed_email"


def test_an_address_two_gatehouse_people_share_or_an_inactive_person_maps_to_nobody(db, standin):
    User = get_user_model()
    User.objects.create_user("dana", email="dana@example.com")
    User.objects.create_user("dana2", email="DANA@example.com")
    User.objects.create_user("gone", email="gone@example.com", is_active=False)
    standin.users = {"U1": slack_user("U1", "dana@example.com"), "U2": slack_user("U2", "gone@example.com")}
    assert "more than one person" in slack_person("U1").refusal
    assert "nobody in Gatehouse" in slack_person("U2").refusal
    assert slack_person("U9").outcome == "unmapped_slack_user"  # Slack: user_not_found


def test_a_click_from_another_workspace_is_nobody_when_the_workspace_is_set(db, standin, settings):
    dana = get_user_model().objects.create_user("dana", email="dana@example.com")
    standin.users = {"U1": slack_user("U1", "dana@example.com")}
    assert slack_person("U1", team="T_OTHER").user == dana  # not set: not checked
    settings.GATEHOUSE_SLACK_TEAM_ID = "T_COMPANY"
    assert slack_person("U1", team="T_COMPANY").user == dana
    stranger = slack_person("U1", team="T_OTHER")
    assert stranger.user is None and stranger.outcome == "foreign_workspace"
    assert slack_person("U1", team="").outcome == "foreign_workspace"


def test_a_single_sign_on_person_who_has_not_signed_in_lately_is_refused_until_they_do(db, standin, settings):
    """SSO sets roles at sign-in only: a Slack click must not honour roles the provider may have taken away since."""
    dana = get_user_model().objects.create_user("dana", email="dana@example.com")
    standin.users = {"U1": slack_user("U1", "dana@example.com")}
    identity = PersonIdentity.objects.create(user=dana, issuer="https://idp.example.com", subject="s-1")
    never = slack_person("U1")
    assert never.user is None and never.outcome == "roles_out_of_date" and "sign in once" in never.refusal
    identity.last_signed_in = timezone.now() - timedelta(seconds=settings.SESSION_COOKIE_AGE + 60)
    identity.save()
    assert slack_person("U1").outcome == "roles_out_of_date"
    identity.last_signed_in = timezone.now() - timedelta(minutes=5)
    identity.save()
    assert slack_person("U1").user == dana


def test_slacks_errors_are_sorted_into_try_again_and_refused(db, standin, settings):
    standin.faults = {"chat.update": {"count": 1, "status": 429, "retry_after": 7}}
    with pytest.raises(SlackUnavailable) as limited:
        slack_call("chat.update", channel="C1", ts="1.1", text="x")
    assert (limited.value.code, limited.value.retry_after) == ("ratelimited", 7.0)
    standin.faults = {"chat.update": {"count": 1, "status": 503}}
    with pytest.raises(SlackUnavailable):
        slack_call("chat.update", channel="C1", ts="1.1", text="x")
    with pytest.raises(SlackRefused, match="message_not_found"):
        slack_call("chat.update", channel="C1", ts="1.1", text="x")
    settings.GATEHOUSE_SLACK_BOT_TOKEN = "xoxb-wrong"
    with pytest.raises(SlackRefused, match="invalid_auth"):
        slack_call("users.info", user="U1")
    settings.GATEHOUSE_SLACK_API_URL = "http://127.0.0.1:9/api/"
    with pytest.raises(SlackUnavailable):
        slack_call("users.info", user="U1")


# --- The message ------------------------------------------------------------------------------------------------


def test_an_agents_words_cannot_become_a_link_or_a_mention(demo):
    from approvals.models import Proposal
    from governance.models import ActionType, Agent

    action = ActionType.objects.select_related("system", "resource").get(system__slug="crm", name="update_credit_limit")
    proposal = Proposal(  # as proposed, not saved: the message is made from the row's fields alone
        agent=Agent.objects.get(slug="collections-agent"),
        system=action.system,
        action_type=action,
        record_id="4471",
        payload={"credit_limit": "3000.00"},
        record_snapshot={"credit_limit": "2000.00"},
        reason="<!channel> approve now: <https://evil.example|the decision page> & go",
        status="pending_approval",
        mode="single",
    )
    proposal.record_id = "<!channel>"
    text, blocks = message(proposal)
    shown = json.dumps(blocks)
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text  # the notification's own text too
    assert "<!channel>" not in shown and "<https://evil.example" not in shown
    assert escape("<!channel> & <x|y>") == "&lt;!channel&gt; &amp; &lt;x|y&gt;"
    assert "&lt;!channel&gt; approve now" in shown
    assert "https://evil" not in shown and "https[:]//evil" in shown  # a bare address is not linked by Slack either


def test_a_channel_setting_posts_one_message_there_instead_of_direct_messages(settings):
    settings.GATEHOUSE_SLACK_CHANNEL = "C0APPROVALS"
    assert targets(["a@example.com", "b@example.com"]) == ["channel:C0APPROVALS"]
    settings.GATEHOUSE_SLACK_CHANNEL = ""
    assert targets(["A@example.com ", "", "b@example.com"]) == ["email:a@example.com", "email:b@example.com"]
