"""A record's timeline in plain language: the pure function that turns events into lines, and the admin page."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record
from audit.timeline import timeline_lines
from governance.choices import Role

T0 = datetime(2026, 11, 17, 14, 1, tzinfo=UTC)  # a Tuesday


def event(pk: int, minutes: float, verb: str, **fields) -> AuditEvent:
    """An unsaved event, as the services write them: the function under test needs no database."""
    defaults = {"actor": "gatehouse", "actor_type": "gatehouse", "channel": "task", "record_id": "4471", "summary": ""}
    return AuditEvent(pk=pk, occurred_at=T0 + timedelta(minutes=minutes), verb=verb, **{**defaults, **fields})


class Person:
    """Stands in for a user row on an unsaved event (the function reads the name only)."""

    def __init__(self, full_name: str, username: str) -> None:
        self.full_name, self.username = full_name, username

    def get_full_name(self) -> str:
        return self.full_name

    def get_username(self) -> str:
        return self.username


def approved_raise(proposal_id: uuid.UUID) -> list[AuditEvent]:
    approved = event(2, 1, "approved", actor="approver", actor_type="human", proposal_id=proposal_id)
    approved.person_id = 7
    approved._state.fields_cache["person"] = Person("Dana Approver", "approver")
    return [
        event(
            1,
            0,
            "proposed",
            actor="collections-agent",
            actor_type="agent",
            resource="accounts",
            proposal_id=proposal_id,
            input={"action": "update_credit_limit", "payload": {"credit_limit": "5000.00"}, "reason": "Pays on time"},
            state_before={"credit_limit": "2000.00"},
        ),
        approved,
        event(3, 1.5, "executing", proposal_id=proposal_id),
        event(
            4,
            2,
            "executed",
            proposal_id=proposal_id,
            resource="accounts",
            state_before={"credit_limit": "2000.00"},
            state_after={"credit_limit": "5000.00"},
        ),
    ]


def test_an_approved_and_executed_raise_reads_as_one_sentence():
    proposal_id = uuid.uuid4()
    lines = timeline_lines(approved_raise(proposal_id), labels={"accounts": "account"}, currencies={proposal_id: "USD"})
    assert len(lines) == 1
    assert lines[0].text == (
        "collections-agent raised the credit limit of account 4471 from 2,000.00 to 5,000.00 USD "
        "(reason: “Pays on time”) — approved by Dana Approver at 14:02:00, executed 14:03:00"
    )
    assert lines[0].proposal_id == proposal_id and lines[0].event_ids == [1, 2, 3, 4]
    assert lines[0].outcome == "ok"


def test_events_arriving_out_of_order_still_make_one_line_in_order():
    proposal_id = uuid.uuid4()
    events = list(reversed(approved_raise(proposal_id)))
    lines = timeline_lines(events, currencies={proposal_id: "USD"})
    assert lines[0].text.startswith("collections-agent raised the credit limit of account 4471")
    assert lines[0].text.index("approved") < lines[0].text.index("executed")


def test_a_rejected_proposal_says_what_was_proposed_who_rejected_and_why():
    proposal_id = uuid.uuid4()
    rejected = event(
        2, 3, "rejected", actor="approver", actor_type="human", proposal_id=proposal_id, input={"reason": "Overdue"}
    )
    proposed = approved_raise(proposal_id)[0]
    lines = timeline_lines([proposed, rejected], labels={"accounts": "account"}, currencies={proposal_id: "USD"})
    assert lines[0].text == (
        "collections-agent proposed to raise the credit limit of account 4471 from 2,000.00 to 5,000.00 USD "
        "(reason: “Pays on time”) — rejected by approver at 14:04:00: “Overdue”"
    )
    assert lines[0].outcome == "rejected"


def test_a_pending_proposal_says_it_has_not_run_and_a_lower_limit_is_lowered():
    proposal_id = uuid.uuid4()
    proposed = event(
        1,
        0,
        "proposed",
        actor="collections-agent",
        resource="accounts",
        proposal_id=proposal_id,
        input={"action": "update_credit_limit", "payload": {"credit_limit": "500"}},
        state_before={"credit_limit": "2000.00"},
    )
    (line,) = timeline_lines([proposed], currencies={proposal_id: "USD"})
    assert line.text == (
        "collections-agent proposed to lower the credit limit of account 4471 from 2,000.00 to 500.00 USD "
        "— not executed yet"
    )
    assert line.outcome == "pending"


def test_an_auto_approved_note_and_a_failure_and_plain_reads_each_get_a_line():
    note, failed = uuid.uuid4(), uuid.uuid4()
    events = [
        event(1, 0, "read", actor="collections-agent", summary="collections-agent read account 4471.",
              input={"fields": ["name", "credit_limit"]}),
        event(2, 1, "proposed", actor="collections-agent", resource="accounts", proposal_id=note,
              input={"action": "add_note", "payload": {"text": "Called the customer"}}),
        event(3, 1, "auto_approved", proposal_id=note),
        event(4, 2, "executed", proposal_id=note, state_before={}, state_after={"note": {"id": 9}}),
        event(5, 5, "proposed", actor="collections-agent", resource="accounts", proposal_id=failed,
              input={"action": "set_status", "payload": {"status": "on_hold"}}, state_before={"status": "active"}),
        event(6, 6, "approved", actor="approver", proposal_id=failed),
        event(7, 7, "failed", proposal_id=failed, summary="set_status on 4471 failed after 5 attempt(s): 503"),
    ]  # fmt: skip
    lines = timeline_lines(events, labels={"accounts": "account"})
    assert [line.text for line in lines] == [
        "collections-agent read account 4471 (fields returned: name, credit_limit)",
        "collections-agent ran add note on account 4471 (text: Called the customer) — auto-approved by rule at "
        "14:02:00, executed 14:03:00",
        "collections-agent proposed to change the status of account 4471 from active to on_hold — approved by "
        "approver at 14:07:00, failed at 14:08:00: set_status on 4471 failed after 5 attempt(s): 503",
    ]
    assert [line.outcome for line in lines] == ["ok", "ok", "failed"]


def test_no_events_make_no_lines():
    assert timeline_lines([]) == []


# --- The page -----------------------------------------------------------------------------------------------------


@pytest.fixture
def auditor(client, f):
    client.force_login(f.UserFactory(username="casey", roles=[Role.AUDITORS]))
    return client


def write_story(system, agent, approver, record_id="4471"):
    """The events the governed path writes for one approved, executed raise (approvals/services.py)."""
    proposal_id = uuid.uuid4()
    common = {"system": system, "record_id": record_id, "proposal_id": proposal_id}
    audit_record(
        verb="proposed",
        actor=agent,
        channel="api",
        resource="accounts",
        input={"action": "update_credit_limit", "payload": {"credit_limit": "5000.00"}, "reason": ""},
        state_before={"credit_limit": "2000.00"},
        summary=f"{agent.slug} proposed update_credit_limit on account {record_id}.",
        **common,
    )
    audit_record(verb="approved", actor=approver, channel="admin", summary="approved", **common)
    audit_record(verb="executing", actor=None, channel="task", summary="executing", **common)
    audit_record(
        verb="executed",
        actor=None,
        channel="task",
        resource="accounts",
        person=approver,
        state_before={"credit_limit": "2000.00"},
        state_after={"credit_limit": "5000.00"},
        summary="executed",
        **common,
    )
    return proposal_id


@pytest.mark.django_db
def test_the_auditor_reads_one_records_timeline_on_a_day_and_nothing_of_other_records(auditor, f):
    system = f.SystemFactory(slug="crm")
    f.ResourceFactory(system=system, name="accounts", label="account")
    agent = f.AgentFactory(slug="collections-agent")
    approver = f.UserFactory(username="approver", first_name="Dana", last_name="Approver")
    proposal_id = write_story(system, agent, approver)
    write_story(system, agent, approver, record_id="4472")
    audit_record(verb="read", actor=agent, channel="api", system=system, record_id="4471", summary="read 4471.")
    today = AuditEvent.objects.latest("id").occurred_at.date()

    url = reverse("admin:audit_timeline", args=["crm", "4471"])
    response = auditor.get(url, {"day": today.isoformat()})

    assert response.status_code == 200
    lines = [line.text for line in response.context["lines"]]
    assert lines[0].startswith(
        "collections-agent raised the credit limit of account 4471 from 2,000.00 to 5,000.00 — approved by "
        "Dana Approver at "
    )
    assert lines[1] == "read 4471"
    assert "4472" not in response.content.decode()
    assert reverse("admin:approvals_proposal_change", args=[proposal_id]) in response.content.decode()
    other_day = auditor.get(url, {"day": (today - timedelta(days=3)).isoformat()})
    assert other_day.context["lines"] == [] and "Nothing happened to crm 4471" in other_day.content.decode()
    assert auditor.get(url, {"day": "not-a-day"}).status_code == 200  # shows every day, says so


@pytest.mark.django_db
def test_a_proposal_decided_on_another_day_is_still_told_whole(auditor, f):
    system = f.SystemFactory(slug="crm")
    agent = f.AgentFactory(slug="collections-agent")
    write_story(system, agent, f.UserFactory(username="approver"))
    events = AuditEvent.objects.for_record(system, "4471")
    day = events.first().occurred_at.date()
    # Only the day of the proposal, with the others on the next day: the line still has the approval and execution.
    assert events.on(day).count() == 4 and events.on(day + timedelta(days=1)).count() == 0
    response = auditor.get(reverse("admin:audit_timeline", args=["crm", "4471"]), {"day": day.isoformat()})
    assert "executed" in response.context["lines"][0].text


@pytest.mark.django_db
def test_a_timeline_of_an_unknown_system_is_not_found_and_people_without_audit_access_are_refused(auditor, client, f):
    assert auditor.get(reverse("admin:audit_timeline", args=["nope", "4471"])).status_code == 404
    f.SystemFactory(slug="crm")
    client.force_login(f.UserFactory(username="dana", roles=[Role.APPROVERS]))
    assert client.get(reverse("admin:audit_timeline", args=["crm", "4471"])).status_code == 403


@pytest.mark.django_db
def test_hostile_record_ids_in_the_timeline_url_answer_an_empty_timeline(auditor, f):
    f.SystemFactory(slug="crm")
    for record_id in ["4471' OR 1=1 --", "%", "ü😀/../x", "a" * 10_000, '"; DROP TABLE audit_auditevent; --']:
        response = auditor.get(reverse("admin:audit_timeline", args=["crm", record_id]))
        assert response.status_code == 200
        assert response.context["lines"] == []


@pytest.mark.slow
@pytest.mark.django_db
def test_the_governed_path_writes_a_timeline_the_auditor_can_read(crm_demo, auditor):
    """Through the real services and the sample CRM: propose, approve, execute; then the timeline tells it."""
    from django.contrib.auth import get_user_model

    from approvals.decisions import proposal_approve
    from approvals.execution import proposal_execute
    from approvals.services import ProposalRequest, proposal_create
    from governance.models import Agent

    agent = Agent.objects.get(slug="collections-agent")
    request = ProposalRequest(
        system="crm", action="update_credit_limit", record_id="4471", payload={"credit_limit": "5000.00"}
    )
    proposal, _ = proposal_create(agent=agent, request=request, channel="api")
    approver = get_user_model().objects.get(username="approver")
    proposal_approve(proposal_id=proposal.pk, user=approver, channel="admin")
    assert proposal_execute(proposal_id=proposal.pk).status == "executed"

    response = auditor.get(reverse("admin:audit_timeline", args=["crm", "4471"]))
    texts = [line.text for line in response.context["lines"]]
    assert len(texts) == 1, texts
    assert re.fullmatch(
        r"collections-agent raised the credit limit of account 4471 from 2,000\.00 to 5,000\.00 USD"
        r" — approved by Dana Approver at \d\d:\d\d:\d\d, executed \d\d:\d\d:\d\d",
        texts[0],
    ), texts[0]


@pytest.mark.django_db
def test_a_long_timeline_pages_by_keyset_and_tells_each_proposal_once(auditor, f, monkeypatch):
    """Four proposals of four events each, three events a page: every proposal appears whole on exactly one page."""
    from audit import timeline as audit_timeline

    monkeypatch.setattr(audit_timeline, "TIMELINE_PAGE", 3)
    system = f.SystemFactory(slug="crm")
    agent = f.AgentFactory(slug="collections-agent")
    approver = f.UserFactory(username="approver")
    stories = [write_story(system, agent, approver) for _ in range(4)]
    url = reverse("admin:audit_timeline", args=["crm", "4471"])

    told: list = []
    response = auditor.get(url)
    pages = 0
    while True:
        pages += 1
        assert response.status_code == 200
        for line in response.context["lines"]:
            assert re.search(r", executed \d\d:\d\d:\d\d$", line.text), line.text  # told whole, with its outcome
            told.append(line.proposal_id)
        if response.context["next_page_url"] is None:
            break
        assert pages < 10, "paging does not end"
        response = auditor.get(url + response.context["next_page_url"])
        assert response.context["continued"] and not response.context["bad_cursor"]

    assert told == stories
    assert pages == 4  # one page per proposal: a page made only of events of proposals already told is skipped


@pytest.mark.django_db
def test_a_cursor_of_another_record_or_garbage_starts_the_timeline_from_the_beginning(auditor, f):
    system = f.SystemFactory(slug="crm")
    agent = f.AgentFactory(slug="collections-agent")
    approver = f.UserFactory(username="approver")
    write_story(system, agent, approver)
    write_story(system, agent, approver, record_id="4472")
    other = AuditEvent.objects.for_record(system, "4472").first()
    url = reverse("admin:audit_timeline", args=["crm", "4471"])
    for after in [str(other.pk), "x", "-1", "9" * 40, "1 OR 1=1"]:
        response = auditor.get(url, {"after": after})
        assert response.status_code == 200
        assert response.context["bad_cursor"] is True
        assert len(response.context["lines"]) == 1
        assert "does not belong to this timeline" in response.content.decode()


def test_hold_release_and_reversal_read_as_steps_of_the_proposals_line():
    proposal_id = uuid.uuid4()
    events = [
        *approved_raise(proposal_id),
        event(5, 10, "held", proposal_id=proposal_id),
        event(6, 11, "released", proposal_id=proposal_id),
        event(7, 20, "reversed", proposal_id=proposal_id),
    ]
    (line,) = timeline_lines(events, labels={"accounts": "account"}, currencies={proposal_id: "USD"})
    assert "put on hold by the kill switch at 14:11:00, released from hold at 14:12:00" in line.text
    assert line.text.endswith("reversed at 14:21:00") and line.outcome == "reversed"


# --- In the order it happened -------------------------------------------------------------------------------------


def raise_events(proposal_id: uuid.UUID, *, pk: int, proposed: float, decided: float, old: str, new: str):
    """A raise proposed at `proposed` minutes and approved and executed at `decided` minutes (after T0)."""
    approved = event(pk + 1, decided, "approved", actor="approver", actor_type="human", proposal_id=proposal_id)
    approved.person_id = 7
    approved._state.fields_cache["person"] = Person("Dana Approver", "approver")
    return [
        event(pk, proposed, "proposed", actor="collections-agent", resource="accounts", proposal_id=proposal_id,
              input={"action": "update_credit_limit", "payload": {"credit_limit": new}, "reason": "Pays on time"},
              state_before={"credit_limit": old}),
        approved,
        event(pk + 2, decided + 0.1, "executing", proposal_id=proposal_id),
        event(pk + 3, decided + 0.2, "executed", proposal_id=proposal_id, resource="accounts",
              state_before={"credit_limit": old}, state_after={"credit_limit": new}),
    ]  # fmt: skip


def test_a_raise_executed_later_is_never_shown_above_an_earlier_one():
    """A proposed at 14:01 and executed at 15:01; B proposed and executed at 14:11. The lines go as it happened: A's
    proposal, B's raise, then A's raise, which names A again and links the same proposal."""
    a, b = uuid.uuid4(), uuid.uuid4()
    events = [
        *raise_events(a, pk=1, proposed=0, decided=60, old="2000.00", new="5000.00"),
        *raise_events(b, pk=10, proposed=10, decided=10, old="2000.00", new="2400.00"),
    ]
    lines = timeline_lines(events, labels={"accounts": "account"}, currencies={a: "USD", b: "USD"})
    assert [line.text for line in lines] == [
        "collections-agent proposed to raise the credit limit of account 4471 from 2,000.00 to 5,000.00 USD "
        "(reason: “Pays on time”) — continued below",
        "collections-agent raised the credit limit of account 4471 from 2,000.00 to 2,400.00 USD "
        "(reason: “Pays on time”) — approved by Dana Approver at 14:11:00, executed 14:11:12",
        "collections-agent raised the credit limit of account 4471 from 2,000.00 to 5,000.00 USD "
        "— approved by Dana Approver at 15:01:00, executed 15:01:12",
    ]
    assert [line.at for line in lines] == sorted(line.at for line in lines)
    assert [line.proposal_id for line in lines] == [a, b, a]  # each line still links its proposal
    assert [line.continued for line in lines] == [False, False, True]
    assert lines[0].proposal_ref == lines[2].proposal_ref == f"proposal {str(a)[:8]}"
    assert lines[2].event_ids == [2, 3, 4] and lines[0].event_ids == [1]


def test_quiet_steps_join_their_proposals_line_and_never_make_one_of_their_own():
    """The approver reading the record and the worker's `executing` are steps of the proposal's line before them:
    with other events between, they make no empty line of their own."""
    a = uuid.uuid4()
    proposed, approved, executing, executed = raise_events(a, pk=1, proposed=0, decided=5, old="2000.00", new="2400.00")
    events = [
        proposed,
        event(20, 1, "read", actor="reporting-agent", summary="reporting-agent read account 4471."),
        event(21, 2, "read", actor="approver", actor_type="human", proposal_id=a, summary="approver looked"),
        event(22, 3, "read", actor="reporting-agent", summary="reporting-agent read account 4471 again."),
        approved,
        executing,
        event(23, 5.15, "read", actor="reporting-agent", summary="reporting-agent read account 4471 a third time."),
        executed,
    ]
    lines = timeline_lines(events, labels={"accounts": "account"}, currencies={a: "USD"})
    assert [line.text for line in lines] == [
        "collections-agent proposed to raise the credit limit of account 4471 from 2,000.00 to 2,400.00 USD "
        "(reason: “Pays on time”) — continued below",
        "reporting-agent read account 4471",
        "reporting-agent read account 4471 again",
        "collections-agent's proposal to raise the credit limit of account 4471 from 2,000.00 to 2,400.00 USD "
        "— approved by Dana Approver at 14:06:00, continued below",
        "reporting-agent read account 4471 a third time",
        "collections-agent raised the credit limit of account 4471 from 2,000.00 to 2,400.00 USD — executed 14:06:12",
    ]
    assert lines[0].event_ids == [1, 21] and lines[3].event_ids == [2, 3] and lines[5].event_ids == [4]


def test_a_waiting_proposal_with_something_else_after_it_says_it_has_not_run():
    a = uuid.uuid4()
    proposed = raise_events(a, pk=1, proposed=0, decided=5, old="2000.00", new="5000.00")[0]
    later = event(9, 3, "read", actor="reporting-agent", summary="reporting-agent read account 4471.")
    first, second = timeline_lines([later, proposed], currencies={a: "USD"})
    assert first.text.endswith("— not executed yet") and first.outcome == "pending"
    assert second.text == "reporting-agent read account 4471"


@pytest.mark.django_db
def test_the_timeline_page_writes_every_time_in_one_format_and_lists_lines_in_order(auditor, f):
    system = f.SystemFactory(slug="crm")
    agent = f.AgentFactory(slug="collections-agent")
    write_story(system, agent, f.UserFactory(username="approver"))
    audit_record(verb="read", actor=agent, channel="api", system=system, record_id="4471", summary="read 4471.")
    today = timezone.localdate()

    response = auditor.get(reverse("admin:audit_timeline", args=["crm", "4471"]), {"day": today.isoformat()})

    page = response.content.decode()
    whens = re.findall(r'<td class="when">([^<]*)</td>', page)
    assert len(whens) == 2 and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", when) for when in whens)
    assert whens == sorted(whens)
    assert f"Timeline of crm 4471 on {today:%A} {today.isoformat()}" in page
    assert not re.search(r"\b(a\.m\.|p\.m\.)|\b\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\b", page)


@pytest.mark.django_db
def test_the_timeline_says_the_same_id_on_another_system_is_another_record(auditor, f):
    crm, staging = f.SystemFactory(slug="crm"), f.SystemFactory(slug="crm-staging")
    agent = f.AgentFactory(slug="collections-agent")
    write_story(crm, agent, f.UserFactory(username="approver"))
    audit_record(verb="read", actor=None, channel="task", system=staging, record_id="4471", summary="drill read.")

    response = auditor.get(reverse("admin:audit_timeline", args=["crm", "4471"]))

    assert response.context["elsewhere"] == [
        ("crm-staging", reverse("admin:audit_timeline", args=["crm-staging", "4471"]))
    ]
    assert "drill read" not in "".join(line.text for line in response.context["lines"])


# --- Export -------------------------------------------------------------------------------------------------------


def exported(response) -> list[dict[str, str]]:
    import csv
    import io

    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/csv") and "attachment" in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))


@pytest.mark.django_db
def test_the_timelines_export_holds_that_record_on_that_system_only(auditor, f):
    crm, staging = f.SystemFactory(slug="crm"), f.SystemFactory(slug="crm-staging")
    agent = f.AgentFactory(slug="collections-agent")
    approver = f.UserFactory(username="approver")
    proposal_id = write_story(crm, agent, approver)
    write_story(staging, agent, approver)  # the same id on crm-staging: another record
    write_story(crm, agent, approver, record_id="4472")
    today = timezone.localdate().isoformat()

    page = auditor.get(reverse("admin:audit_timeline", args=["crm", "4471"]), {"day": today})
    export_url = page.context["export_url"]
    assert export_url == reverse("admin:audit_timeline_export", args=["crm", "4471"]) + f"?day={today}"
    assert f'href="{export_url}" id="export-timeline"' in page.content.decode().replace("&amp;", "&")
    response = auditor.get(export_url)

    rows = exported(response)
    assert [(row["system"], row["record_id"], row["verb"]) for row in rows] == [
        ("crm", "4471", verb) for verb in ("proposed", "approved", "executing", "executed")
    ]
    assert {row["proposal_id"] for row in rows} == {str(proposal_id)}
    assert f'filename="crm-4471-{today}.csv"' in response["Content-Disposition"]
    assert auditor.get(export_url.replace(today, "yesterday")).status_code == 400


@pytest.mark.django_db
def test_the_export_of_a_record_id_with_odd_characters_names_its_file_safely(auditor, f):
    crm = f.SystemFactory(slug="crm")
    audit_record(verb="read", actor=None, channel="api", system=crm, record_id='a/"b"; c', summary="odd")
    response = auditor.get(reverse("admin:audit_timeline_export", args=["crm", 'a/"b"; c']))
    assert [row["summary"] for row in exported(response)] == ["odd"]
    assert response["Content-Disposition"] == 'attachment; filename="crm-a_b_c.csv"'


@pytest.mark.django_db
def test_an_agents_and_a_systems_timeline_export_their_own_events(auditor, f):
    crm = f.SystemFactory(slug="crm")
    agent, other = f.AgentFactory(slug="collections-agent"), f.AgentFactory(slug="reporting-agent")
    write_story(crm, agent, f.UserFactory(username="approver"))
    audit_record(verb="read", actor=other, channel="api", system=crm, record_id="4471", summary="other read")
    audit_record(verb="configured", actor=None, channel="command", system=crm, summary="crm's own setting")

    by_agent = exported(auditor.get(reverse("admin:audit_agent_timeline_export", args=["collections-agent"])))
    assert [(row["agent"], row["verb"]) for row in by_agent] == [("collections-agent", "proposed")]
    own = exported(auditor.get(reverse("admin:audit_system_timeline_export", args=["crm"])))
    assert [row["summary"] for row in own] == ["crm's own setting"]


@pytest.mark.django_db
def test_an_approver_without_audit_rights_may_not_export_a_timeline(client, f):
    """The same check as the changelist's exports: refused before anything is looked up (an unknown system too)."""
    crm = f.SystemFactory(slug="crm")
    f.AgentFactory(slug="collections-agent")
    audit_record(verb="read", actor=None, channel="api", system=crm, record_id="4471", summary="read")
    client.force_login(f.UserFactory(username="dana", roles=[Role.APPROVERS]))
    for url in [
        reverse("admin:audit_timeline_export", args=["crm", "4471"]),
        reverse("admin:audit_timeline_export", args=["no-such-system", "4471"]),
        reverse("admin:audit_agent_timeline_export", args=["collections-agent"]),
        reverse("admin:audit_system_timeline_export", args=["crm"]),
        reverse("admin:audit_export_csv"),
    ]:
        assert client.get(url).status_code == 403, url
