"""Approvals from e-mail: the approver's mail shows the change as the proposal's page does and carries a signed link of
their own; the link opens that page once, for them, after they sign in, and never decides anything by itself.

Django's test client and mail outbox against the session's sample CRM (`crm_demo`); two journeys in a real browser
against the running stack: one reads the link from the stack's own outbox (tests/stack.py: the file mail backend) and
signs in with a password, the other signs in through single sign-on at the sample provider (sandbox/idp).
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.core import mail, signing
from django.utils import timezone

from approvals import decision_links, notify
from approvals.choices import ProposalStatus
from approvals.decisions import proposal_approve
from approvals.models import DecisionLink, Proposal
from approvals.notify import notify_awaiting_by_id
from audit.models import AuditEvent
from governance.choices import Role
from governance.models import ActionType, Agent, System
from tests.approvals.test_phone_browser import within_the_screen
from tests.browser import PHONE, SCREEN, Journey
from tests.factories import propose_limit as propose_raise_here
from tests.factories import propose_raise
from tests.sso import reset_people, sign_in_at_provider

User = get_user_model()
RAISE = "Raise the credit limit of account 4471 from 2,000.00 to 5,000.00"
LINK = re.compile(r"https?://[^\s\"<>]+/admin/approvals/proposal/(?P<proposal>[0-9a-f-]{36})/link/[^\s\"<>]+/")
PASSWORD = "correct horse battery staple"


# --- Helpers ------------------------------------------------------------------------------------------------------


def ask(django_capture_on_commit_callbacks, limit: str = "5000.00", **kwargs) -> Proposal:
    """collections-agent proposes a raise of 4471's limit; the approver's mail goes out as the worker sends it once
    the commit has queued it (approvals/notify.py)."""
    with django_capture_on_commit_callbacks(execute=True):
        proposal = propose_raise_here(limit, **kwargs)
    assert notify_awaiting_by_id(proposal.pk)
    return proposal


def mail_to(username: str, proposal: Proposal) -> mail.EmailMultiAlternatives:
    """The one message to `username` about `proposal` (its link names the proposal)."""
    address = User.objects.get(username=username).email
    found = [m for m in mail.outbox if m.to == [address] and str(proposal.pk) in m.body]
    assert len(found) == 1, [(m.to, m.subject) for m in mail.outbox]
    return found[0]


def html_of(message) -> str:
    [(html, kind)] = message.alternatives
    assert kind == "text/html"
    return html


def link_in(message) -> str:
    """The link's path (what a person's click opens on Gatehouse), as both parts of the mail carry it."""
    [link] = {match.group(0) for match in LINK.finditer(message.body)}
    assert link.startswith(settings.BASE_URL.rstrip("/") + "/admin/")
    assert f'href="{link}"' in html_of(message)
    return urlsplit(link).path


def signed_in(client, username: str):
    client.force_login(User.objects.get(username=username))
    return client


def refusals(proposal: Proposal | None = None) -> list[tuple[str, str, str]]:
    """The `denied` events an e-mailed link left, as (outcome, actor, person)."""
    events = AuditEvent.objects.filter(verb="denied", outcome__startswith="link_").order_by("id")
    if proposal is not None:
        events = events.filter(proposal_id=proposal.pk)
    return [(event.outcome, event.actor, event.person.username if event.person else "") for event in events]


def refused_page(response) -> str:
    assert response.status_code == 403
    page = response.content.decode()
    assert 'id="link-refused"' in page and 'id="open-queue"' in page and 'href="/admin/approvals/proposal/"' in page
    return page


def still_waiting(proposal: Proposal) -> None:
    proposal = Proposal.objects.get(pk=proposal.pk)
    assert proposal.status == ProposalStatus.PENDING_APPROVAL and proposal.decided_by is None


class Tags(HTMLParser):
    """Every start tag of an HTML document, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


# --- The mail -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_approver_gets_a_mail_of_their_own_that_shows_the_change_as_the_decision_page_does(
    crm_demo, django_capture_on_commit_callbacks
):
    proposal = ask(django_capture_on_commit_callbacks, reason="Paid on time for a year.")
    assert len(mail.outbox) == 1
    message = mail_to("approver", proposal)
    assert message.subject == "[Gatehouse] Awaiting your decision: update_credit_limit on 4471"
    created = timezone.localtime(proposal.created_at).strftime("%Y-%m-%d %H:%M %Z")
    due = timezone.localtime(proposal.sla_due_at).strftime("%Y-%m-%d %H:%M %Z")
    text = message.body
    for fact in [
        RAISE,
        "Record: account 4471 in Sample CRM (crm)",
        "Agent: collections-agent",
        f"Change (when proposed, {created} → proposed):\n  credit limit: 2,000.00 → 5,000.00",
        "Impact: 3,000.00 USD, computed by Gatehouse when proposed",
        f"Rule and band: {proposal.decision['reason']} (One approver; named approver Dana Approver)",
        "The agent's reason:\n  > Paid on time for a year.",
        f"Decide by {due}, in 4 hours.",
        "It decides nothing by itself.",
    ]:
        assert fact in text, fact
    html = html_of(message)
    for fact in [
        f'<h1 style="margin:0 0 16px 0;font-size:18px;line-height:1.3;color:#111111;">{RAISE}</h1>',
        "account 4471 in Sample CRM (crm)",
        f"When proposed, {created}</th>",
        "2,000.00</td>",
        "5,000.00</td>",
        "3,000.00 USD, computed by Gatehouse when proposed",
        "Paid on time for a year.",
        f"Decide by {due}, in 4 hours.",
    ]:
        assert fact in html, fact
    tags = Tags()
    tags.feed(html)
    names = {tag for tag, _ in tags.tags}
    assert not names & {"img", "link", "style", "script"}  # inline styles only, nothing fetched from elsewhere
    assert all(attrs.get("href", "").startswith(settings.BASE_URL) for tag, attrs in tags.tags if tag == "a")

    path = link_in(message)
    assert path.startswith(f"/admin/approvals/proposal/{proposal.pk}/link/")
    [link] = DecisionLink.objects.filter(proposal=proposal)
    assert (link.user.username, link.purpose, link.opened_at, link.decided_at) == ("approver", "decide", None, None)
    assert link.expires_at == proposal.sla_due_at  # the SLA (4 hours) comes before the link's maximum age (24 hours)


@pytest.mark.django_db
def test_a_link_lapses_with_its_maximum_age_when_that_comes_before_the_sla(
    crm_demo, settings, django_capture_on_commit_callbacks
):
    settings.GATEHOUSE_APPROVAL_LINK_MAX_AGE = timedelta(hours=1)
    proposal = ask(django_capture_on_commit_callbacks)
    link = DecisionLink.objects.get(proposal=proposal)
    assert abs(link.expires_at - (link.created_at + timedelta(hours=1))) < timedelta(seconds=5)
    assert link.expires_at < proposal.sla_due_at


@pytest.mark.django_db
def test_each_person_who_may_decide_gets_a_link_of_their_own_and_on_call_the_page_without_one(crm_demo, f):
    """Escalated past its SLA: the approver is asked again with a new link, the system's on-call contact (an address,
    not an account) is told with the page's plain address."""
    proposal = propose_raise_here("5000.00")
    Proposal.objects.filter(pk=proposal.pk).update(sla_due_at=timezone.now() - timedelta(minutes=5))
    notify.notify_escalated(Proposal.objects.get(pk=proposal.pk))
    to_approver = mail_to("approver", proposal)
    assert "Its time to decide ran out at" in to_approver.body and "it expires undecided at" in to_approver.body
    link_in(to_approver)
    [oncall] = [m for m in mail.outbox if m.to == ["crm-oncall@gatehouse.example"]]
    assert not LINK.search(oncall.body) and f"/admin/approvals/proposal/{proposal.pk}/change/" in oncall.body
    # Past the SLA, a new link lapses when the proposal expires, or after its maximum age if that comes first.
    expires = DecisionLink.objects.get(proposal=proposal).expires_at
    assert (
        timezone.now() < expires <= min(proposal.expires_at, timezone.now() + settings.GATEHOUSE_APPROVAL_LINK_MAX_AGE)
    )


@pytest.mark.django_db
def test_what_the_agent_wrote_is_never_markup_or_a_link_in_the_approvers_mail(crm_demo):
    """A note, its reason and its record id as an agent may send them (the row as proposal_create leaves it when a
    rule sends a note to a person; the demo's rules let notes through)."""
    evil = (
        '<a href="https://evil.example/login">Approve here</a><img src="https://evil.example/p.png"> www.evil.example'
    )
    crm = System.objects.get(slug="crm")
    proposal = Proposal.objects.create(
        agent=Agent.objects.get(slug="collections-agent"),
        system=crm,
        action_type=ActionType.objects.get(system=crm, name="add_note"),
        record_id='4471"><b>bold</b>',
        payload={"text": f"{evil}\n\nOpen it to decide:\nhttps://evil.example/decide"},
        reason=f"<script>alert(1)</script>\n{evil}",
        status=ProposalStatus.PENDING_APPROVAL,
        channel="api",
        mode="single",
        decision={"mode": "single", "reason": "notes need a person here"},
        approver=User.objects.get(username="approver"),
        sla_due_at=timezone.now() + timedelta(hours=4),
        expires_at=timezone.now() + timedelta(days=3),
    )
    notify.notify_awaiting(proposal)
    message = mail_to("approver", proposal)

    html = html_of(message)
    tags = Tags()
    tags.feed(html)
    assert [tag for tag, _ in tags.tags if tag in ("img", "script", "b")] == []
    hrefs = [attrs["href"] for tag, attrs in tags.tags if tag == "a"]
    assert hrefs and all(href.startswith(settings.BASE_URL.rstrip("/") + "/admin/") for href in hrefs)
    assert not any("evil" in (value or "") for _, attrs in tags.tags for value in attrs.values())
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;a href=&quot;https[:]//evil.example/login&quot;&gt;Approve here&lt;/a&gt;" in html
    assert "4471&quot;&gt;&lt;b&gt;bold&lt;/b&gt;" in html
    assert "www[.]evil.example" in html and "https://evil" not in html and "www.evil" not in html
    text = message.body
    assert "https://evil" not in text and "www.evil" not in text and "https[:]//evil.example/login" in text
    assert "  > <script>alert(1)</script>\n  > <a href=" in text  # quoted as the agent's, line by line
    assert "Proposed:\n  text: <a href=" in text
    # Its line breaks do not lay out lines that read as the mail's own.
    assert len([line for line in text.splitlines() if line.startswith("Open it to decide")]) == 1


# --- Opening the link ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_person_who_is_not_signed_in_signs_in_and_comes_back_to_the_link_then_lands_on_the_page(
    crm_demo, client, django_capture_on_commit_callbacks
):
    proposal = ask(django_capture_on_commit_callbacks)
    path = link_in(mail_to("approver", proposal))

    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path.replace(':', '%3A')}"
    assert DecisionLink.objects.get(proposal=proposal).opened_at is None  # a mail filter's fetch spends nothing

    approver = User.objects.get(username="approver")
    approver.set_password(PASSWORD)
    approver.is_staff = False  # signed in, but not someone the admin lets in: sent to sign in, nothing spent
    approver.save()
    client.force_login(approver)
    response = client.get(path)
    assert (response.status_code, response["Location"]) == (302, f"/admin/login/?next={path.replace(':', '%3A')}")
    assert DecisionLink.objects.get(proposal=proposal).opened_at is None
    approver.is_staff = True
    approver.save()
    client.logout()
    response = client.post("/admin/login/", {"username": "approver", "password": PASSWORD, "next": path})
    assert (response.status_code, response["Location"]) == (302, path)
    response = client.get(path)
    assert (response.status_code, response["Location"]) == (302, f"/admin/approvals/proposal/{proposal.pk}/change/")
    page = client.get(response["Location"]).content.decode()
    assert f"<h1>{RAISE}</h1>" in page
    assert 'id="from-link"' in page and 'name="decision_link"' in page and 'id="approve-button"' in page
    still_waiting(proposal)  # opening the link decided nothing
    assert DecisionLink.objects.get(proposal=proposal).opened_at is not None


@pytest.mark.django_db
def test_the_decision_still_takes_the_click_and_then_the_same_link_is_refused(
    crm_demo, client, django_capture_on_commit_callbacks
):
    proposal = ask(django_capture_on_commit_callbacks)
    path = link_in(mail_to("approver", proposal))
    signed_in(client, "approver")
    page = client.get(path, follow=True)
    assert page.status_code == 200
    link = DecisionLink.objects.get(proposal=proposal)
    for method in (client.post, client.put, client.delete):
        assert method(path).status_code == 405  # only a GET opens it, and a GET changes nothing about the proposal
    still_waiting(proposal)

    response = client.post(
        f"/admin/approvals/proposal/{proposal.pk}/decide/", {"step": "approve", "decision_link": str(link.pk)}
    )
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Approved."]
    assert Proposal.objects.get(pk=proposal.pk).decided_by.username == "approver"
    assert DecisionLink.objects.get(pk=link.pk).decided_at is not None

    page = refused_page(client.get(path))
    assert "This link was already used." in page
    assert refusals(proposal) == [("link_used", "approver", "approver")]


@pytest.mark.django_db
def test_a_link_to_a_proposal_someone_else_decided_meanwhile_is_refused(
    crm_demo, client, django_capture_on_commit_callbacks
):
    proposal = ask(django_capture_on_commit_callbacks)
    path = link_in(mail_to("approver", proposal))
    proposal_approve(proposal_id=proposal.pk, user=User.objects.get(username="approver"), channel="api")
    page = refused_page(signed_in(client, "approver").get(path))
    assert "This proposal was already decided." in page and "approver decided it" in page
    assert refusals(proposal) == [("link_decided", "approver", "approver")]


def _sign_old(payload: dict, *, age: timedelta) -> str:
    """A token signed as the mail would have signed it `age` ago."""

    class Then(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time() - age.total_seconds()))

    return Then(salt=decision_links.SALT).sign_object(payload, compress=True)


@pytest.mark.parametrize(
    ("case", "outcome", "says"),
    [
        ("another proposal's id in the address", "link_other_proposal", "This link is for another proposal."),
        ("a tampered signature", "link_broken", "This link is not valid."),
        ("a token cut short", "link_broken", "This link is not valid."),
        ("signed longer ago than the maximum age", "link_expired", "This link has expired."),
        ("past the time to decide", "link_expired", "This link has expired."),
        ("opened once already", "link_used", "This link was already used."),
        ("another person's", "link_not_yours", "This link was sent to someone else."),
        ("signed with another salt", "link_broken", "This link is not valid."),
    ],
)
@pytest.mark.django_db
def test_a_link_that_does_not_hold_is_refused_with_a_page_that_says_why_and_is_audited(
    crm_demo, client, django_capture_on_commit_callbacks, case, outcome, says
):
    proposal = ask(django_capture_on_commit_callbacks)
    other = ask(django_capture_on_commit_callbacks, "4000.00", record="4472")
    path = link_in(mail_to("approver", proposal))
    prefix, token = path.rsplit("/", 2)[0] + "/", path.rsplit("/", 2)[1]
    link = DecisionLink.objects.get(proposal=proposal)
    username = "approver"
    claims = {"link": str(link.pk), "proposal": str(proposal.pk), "user": link.user_id, "purpose": "decide"}
    if case == "another proposal's id in the address":
        path = path.replace(str(proposal.pk), str(other.pk))
    elif case == "a tampered signature":
        path = f"{prefix}{token[:-2]}{'AA' if not token.endswith('AA') else 'BB'}/"
    elif case == "a token cut short":
        path = f"{prefix}{token[: len(token) // 2]}/"
    elif case == "signed longer ago than the maximum age":
        path = f"{prefix}{_sign_old(claims, age=settings.GATEHOUSE_APPROVAL_LINK_MAX_AGE + timedelta(minutes=1))}/"
    elif case == "past the time to decide":
        DecisionLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "opened once already":
        assert signed_in(client, "approver").get(path).status_code == 302
    elif case == "another person's":
        username = "owner"
    elif case == "signed with another salt":
        path = f"{prefix}{signing.TimestampSigner(salt='another').sign_object(claims, compress=True)}/"

    page = refused_page(signed_in(client, username).get(path))
    assert says in page and "Open your queue" in page and "Nothing was decided" in page
    on = other if case == "another proposal's id in the address" else proposal
    assert refusals(on) == [(outcome, username, username)]
    event = AuditEvent.objects.filter(verb="denied", outcome=outcome).latest("id")
    assert event.summary.startswith(f"{username} opened an e-mailed decision link for update_credit_limit on")
    assert token not in str(event.input) and token not in event.summary  # the token itself is never kept
    still_waiting(proposal)
    still_waiting(other)
    if case != "opened once already":
        assert DecisionLink.objects.get(pk=link.pk).opened_at is None  # a refused opening spends nothing


@pytest.mark.django_db
def test_a_mangled_address_gets_the_refusal_page_never_an_error(crm_demo, client):
    signed_in(client, "approver")
    missing = "00000000-0000-0000-0000-000000000000"
    for token in ["x", "...", ".eJz:abc:def", "a" * 500]:
        page = refused_page(client.get(f"/admin/approvals/proposal/{missing}/link/{token}/"))
        assert "This link is not valid." in page
    assert {outcome for outcome, _, _ in refusals()} == {"link_broken"}


# --- The decision made after arriving by link -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_link_cannot_be_carried_into_a_decision_on_another_proposal(
    crm_demo, client, django_capture_on_commit_callbacks
):
    proposal = ask(django_capture_on_commit_callbacks)
    other = ask(django_capture_on_commit_callbacks, "4000.00", record="4472")
    signed_in(client, "approver").get(link_in(mail_to("approver", proposal)))
    link = DecisionLink.objects.get(proposal=proposal)

    response = client.post(
        f"/admin/approvals/proposal/{other.pk}/decide/", {"step": "approve", "decision_link": str(link.pk)}
    )
    said = [str(m) for m in get_messages(response.wsgi_request)]
    assert said and said[0].startswith("This link is for another proposal. Nothing was decided.")
    still_waiting(other)
    assert refusals(other) == [("link_other_proposal", "approver", "approver")]
    assert (
        AuditEvent.objects.filter(verb="denied", outcome="link_other_proposal")
        .latest("id")
        .summary.startswith(
            "approver tried to decide through an e-mailed decision link for update_credit_limit on 4472"
        )
    )

    # Nor posted from a session that never opened it (another browser, a crafted form).
    stranger = signed_in(client.__class__(), "approver")
    response = stranger.post(
        f"/admin/approvals/proposal/{proposal.pk}/decide/", {"step": "approve", "decision_link": str(link.pk)}
    )
    [said] = [str(m) for m in get_messages(response.wsgi_request)]
    assert said.startswith("This link is not valid.")
    still_waiting(proposal)

    # The page the link opened decides its own proposal.
    response = client.post(
        f"/admin/approvals/proposal/{proposal.pk}/decide/",
        {"step": "reject", "reason": "Two invoices overdue.", "decision_link": str(link.pk)},
    )
    assert [str(m) for m in get_messages(response.wsgi_request)][-1] == "Rejected."
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.REJECTED


# --- In a real browser, against the running stack ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.browser
def test_the_approver_opens_the_mails_link_signs_in_approves_on_the_page_and_the_link_is_spent(live, sign_in):
    proposal_id = propose_raise(live, "5000.00")
    message = _wait_for_mail(live, proposal_id)
    [link] = {match.group(0) for match in LINK.finditer(message.get_body(("plain",)).get_content())}
    assert link.startswith(live.stack.web_url + "/admin/")  # the web process's own address (GATEHOUSE_BASE_URL)
    html = message.get_body(("html",)).get_content()
    assert f'href="{link}"' in html and RAISE in html

    page = sign_in("approver", viewport=SCREEN)  # the approver's browser, with a password set for this test
    page.locator("#logout-form button").click()  # …signed out, as when the mail arrives
    page.wait_for_load_state("load")
    page.goto(link)  # the click in the mail program
    assert "/admin/login/" in page.url and "next=" in page.url
    journey = Journey(page)
    page.fill("#id_username", "approver")
    page.fill("#id_password", "browser-test-password")
    journey.click("input[type=submit]")
    assert page.url == f"{live.stack.web_url}/admin/approvals/proposal/{proposal_id}/change/"
    assert page.locator("h1").inner_text() == RAISE
    assert "You opened this page from the link in your e-mail" in page.locator("#from-link").inner_text()
    assert Proposal.objects.get(pk=proposal_id).status == ProposalStatus.PENDING_APPROVAL  # the link decided nothing

    journey.click("#approve-button")
    assert "Approved." in page.locator(".messagelist").inner_text()
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"
    print(f"\napprover: from the e-mail's link to approved in {journey.clicks} clicks (sign in, Approve)")
    assert journey.clicks == 2

    page.goto(link)  # the same link again, from the same mail
    assert "This link was already used." in page.locator("#link-refused").inner_text()
    journey.assert_fits()
    journey.click("#open-queue")
    assert page.locator("h1").inner_text() == "Waiting for you"
    assert AuditEvent.objects.filter(proposal_id=proposal_id, verb="denied", outcome="link_used").count() == 1


@pytest.mark.slow
@pytest.mark.browser
def test_on_a_phone_the_mails_link_opens_a_page_that_fits_with_approve_in_reach_and_so_does_its_refusal(live, sign_in):
    proposal_id = propose_raise(live, "5000.00")
    message = _wait_for_mail(live, proposal_id)
    [link] = {match.group(0) for match in LINK.finditer(message.get_body(("plain",)).get_content())}
    page = sign_in("approver", viewport=PHONE)  # signed in on the phone already: the link opens the page at once
    page.goto(link)
    journey = Journey(page)  # the decision page fits 390 px
    assert page.url.endswith(f"/admin/approvals/proposal/{proposal_id}/change/")
    assert page.locator("#from-link").is_visible()
    within_the_screen(page, page.locator("#approve-button"))
    journey.click("#approve-button")
    assert "Approved." in page.locator(".messagelist").inner_text()
    live.wait_for(proposal_id, "executed")
    page.goto(link)
    assert "This link was already used." in page.locator("#link-refused").inner_text()
    journey.assert_fits()
    within_the_screen(page, page.locator("#open-queue"))


def _wait_for_mail(live, proposal_id: str, timeout: float = 15):
    """The approver's mail about the proposal, from the stack's outbox (the web process sends it after the commit)."""
    deadline = time.monotonic() + timeout
    while True:
        for message in live.stack.mails():
            if (
                message["To"] == "approver@gatehouse.example"
                and proposal_id in message.get_body(("plain",)).get_content()
            ):
                return message
        if time.monotonic() > deadline:
            raise AssertionError(f"no mail about {proposal_id}: {[m['Subject'] for m in live.stack.mails()]}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.browser
def test_the_mails_link_opens_the_right_page_after_single_sign_on_and_the_decision_names_how_she_signed_in(
    sso_stack, live, browser
):
    reset_people(sso_stack)  # as the provider started: another test may have changed a group
    web = sso_stack["web_url"]
    contexts = [browser.new_context(viewport=SCREEN) for _ in range(2)]
    first, page = (context.new_page() for context in contexts)
    # Dana's first sign-in through the provider makes her account, in the Approvers group her provider group maps to.
    first.goto(f"{web}/admin/")
    sign_in_at_provider(Journey(first), "dana")
    dana = User.objects.get(identities__issuer=sso_stack["issuer"])
    contexts[0].close()

    proposal_id = propose_raise(live, "5000.00")
    Proposal.objects.filter(pk=proposal_id).update(approver=None, approver_group=Group.objects.get(name=Role.APPROVERS))
    mail.outbox.clear()
    notify.notify_awaiting(Proposal.objects.get(pk=proposal_id))  # as the web process sent it, now to the group
    path = link_in(mail_to(dana.username, Proposal.objects.get(pk=proposal_id)))

    page.set_default_timeout(20000)
    page.goto(web + path)  # the click in her mail program, in a browser signed in nowhere
    assert "/admin/login/?next=" in page.url and page.locator("#login-form").count() == 0
    journey = Journey(page)
    sign_in_at_provider(journey, "dana")  # Gatehouse's button, then the provider's own form
    assert page.url == f"{web}/admin/approvals/proposal/{proposal_id}/change/", "the link, after the round trip"
    assert page.locator("h1").inner_text() == RAISE
    assert page.locator("#from-link").count() == 1
    journey.click("#approve-button")
    assert "Approved." in page.locator(".messagelist").inner_text()
    print(f"\nsso: from the e-mail's link to approved in {journey.clicks} clicks (provider's button, sign-in, Approve)")
    assert journey.clicks == 3
    live.wait_for(proposal_id, "executed")
    assert live.crm_account("4471")["credit_limit"] == "5000.00"
    approved = AuditEvent.objects.get(verb="approved", proposal_id=proposal_id)
    assert (approved.person, approved.input["sign_in"]["method"]) == (dana, "oidc")

    page.goto(web + path)
    assert "This link was already used." in page.locator("#link-refused").inner_text()
    contexts[1].close()
