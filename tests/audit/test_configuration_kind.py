"""The audit admin's "kind of event" filter: configuration selects exactly the events of a person changing what
governs an agent or a system (configured, tokens, credentials, sign-offs, switches…), and its page reads each
change field by field, before → after, with the reason."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.choices import AGENT_ACTIVITY_VERBS, CONFIGURATION_VERBS, DECISION_VERBS, Verb
from audit.models import AuditEvent
from audit.services import audit_record
from governance.choices import Role

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:audit_auditevent_changelist")


@pytest.fixture
def auditor(client, f):
    client.force_login(f.UserFactory(username="casey", roles=[Role.AUDITORS]))
    return client


@pytest.fixture
def every_verb(f):
    agent, system, person = f.AgentFactory(), f.SystemFactory(), f.UserFactory(username="olivia")
    for verb in Verb:
        audit_record(verb=verb, actor=person, agent=agent, system=system, channel="admin", summary=f"a {verb} event")


def shown(client, kind: str) -> set[str]:
    response = client.get(CHANGELIST, {"kind": kind, "all": ""})
    assert response.status_code == 200
    return {event.verb for event in response.context["cl"].result_list}


def test_the_configuration_kind_selects_exactly_the_configuration_verbs(auditor, every_verb):
    assert shown(auditor, "configuration") == set(CONFIGURATION_VERBS)
    assert Verb.CONFIGURED in CONFIGURATION_VERBS and Verb.TOKEN_ISSUED in CONFIGURATION_VERBS


def test_the_other_kinds_split_the_rest(auditor, every_verb):
    assert shown(auditor, "activity") == set(AGENT_ACTIVITY_VERBS)
    assert shown(auditor, "decisions") == set(DECISION_VERBS)
    rest = set(Verb) - CONFIGURATION_VERBS - AGENT_ACTIVITY_VERBS - DECISION_VERBS
    assert shown(auditor, "other") == rest
    assert auditor.get(CHANGELIST, {"kind": "nonsense"}).status_code in (200, 302)  # Django's "?e=1": no 500


def test_a_configuration_events_page_reads_before_after_and_the_reason(auditor, f):
    event = audit_record(
        verb=Verb.CONFIGURED,
        actor=f.UserFactory(username="olivia"),
        agent=f.AgentFactory(),
        channel="admin",
        input={"object": "scope grant", "action": "changed", "reason": "Month-end reports."},
        state_before={"actions": ["add_note"]},
        state_after={"actions": ["add_note", "update_credit_limit"]},
        summary="olivia changed a grant.",
    )
    page = auditor.get(reverse("admin:audit_auditevent_change", args=[event.pk])).content.decode()
    assert "actions: add_note → add_note, update_credit_limit" in page
    assert "Reason: “Month-end reports.”" in page
    assert reverse("admin:audit_agent_timeline", args=[event.agent.slug]) in page
    assert AuditEvent.objects.count() == 1
    # The timeline tells it from the states, not the (possibly cut) summary: who, what, before → after, why.
    timeline = auditor.get(reverse("admin:audit_agent_timeline", args=[event.agent.slug])).content.decode()
    assert "olivia changed scope grant: actions: add_note → add_note, update_credit_limit" in timeline
    assert "reason: “Month-end reports.”" in timeline
