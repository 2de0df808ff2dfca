""" "Find a record" on the auditor's home: a system and an id → that record's timeline; a mistake → a clear message."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from audit.services import audit_record
from governance.choices import Role

FIND = "admin:audit_find_record"


@pytest.fixture
def auditor(client, f):
    client.force_login(f.UserFactory(username="casey", roles=[Role.AUDITORS]))
    return client


@pytest.fixture
def two_4471s(f):
    """crm 4471 and crm-staging 4471: the same id, two records."""
    crm, staging = f.SystemFactory(slug="crm"), f.SystemFactory(slug="crm-staging")
    f.SystemFactory(slug="billing")
    for system in (crm, staging):
        audit_record(verb="read", actor=None, channel="api", system=system, record_id="4471", summary=f"{system} 4471")
    audit_record(verb="read", actor=None, channel="api", system=crm, record_id="9001", summary="crm 9001")
    return crm, staging


def timeline(system: str, record: str) -> str:
    return reverse("admin:audit_timeline", args=[system, record])


def error_of(response, field: str) -> str:
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors, errors
    return errors[field][0]


@pytest.mark.django_db
def test_a_system_and_an_id_open_that_records_timeline(auditor, two_4471s):
    response = auditor.get(reverse(FIND), {"system": "crm-staging", "record": " 4471 "})
    assert response.status_code == 302 and response["Location"] == timeline("crm-staging", "4471")


@pytest.mark.django_db
def test_crm_4471_typed_whole_names_the_system(auditor, two_4471s):
    response = auditor.get(reverse(FIND), {"system": "", "record": "crm 4471"})
    assert response["Location"] == timeline("crm", "4471")


@pytest.mark.django_db
def test_an_id_on_one_system_only_needs_no_system(auditor, two_4471s):
    assert auditor.get(reverse(FIND), {"record": "9001"})["Location"] == timeline("crm", "9001")


@pytest.mark.django_db
def test_an_id_on_two_systems_asks_which_record_and_never_mixes_them(auditor, two_4471s):
    response = auditor.get(reverse(FIND), {"record": "4471"})
    assert response.status_code == 200
    assert response.context["choices"] == [
        ("crm 4471", timeline("crm", "4471")),
        ("crm-staging 4471", timeline("crm-staging", "4471")),
    ]
    assert "is a record id on 2 systems: 2 different records" in response.content.decode()


@pytest.mark.django_db
def test_an_unknown_system_is_named_with_the_systems_there_are(auditor, two_4471s):
    message = error_of(auditor.get(reverse(FIND), {"system": "crn", "record": "4471"}), "system")
    assert message == "There is no system “crn”. The systems are: billing, crm, crm-staging."


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("record", "says"),
    [
        ("", "Type the record's id, for example 4471."),
        ("   ", "Type the record's id, for example 4471."),
        ("x" * 201, "A record id has at most 200 characters; this one has 201."),
        ("44\x0071", "A record id has no control characters"),
        ("44\t71", "A record id has no control characters"),
        ("44\n71", "A record id has no control characters"),
    ],
)
def test_a_bad_id_is_a_clear_message_not_an_error_page(auditor, two_4471s, record, says):
    assert error_of(auditor.get(reverse(FIND), {"system": "crm", "record": record}), "record").startswith(says)


@pytest.mark.django_db
def test_an_id_no_system_has_is_said_and_hostile_ids_are_just_ids(auditor, two_4471s):
    message = error_of(auditor.get(reverse(FIND), {"record": "4471' OR 1=1 --"}), "record")
    assert message == "No system has an event about a record “4471' OR 1=1 --”. Choose a system to open it."
    weird = auditor.get(reverse(FIND), {"system": "crm", "record": "ü😀 %/x"})
    assert weird.status_code == 302
    assert auditor.get(weird["Location"]).status_code == 200


@pytest.mark.django_db
def test_the_page_without_a_question_is_the_empty_form(auditor, two_4471s):
    response = auditor.get(reverse(FIND))
    assert response.status_code == 200 and not response.context["form"].is_bound


@pytest.mark.django_db
def test_people_without_audit_access_are_refused(client, f, two_4471s):
    client.force_login(f.UserFactory(username="dana", roles=[Role.APPROVERS]))
    assert client.get(reverse(FIND), {"system": "crm", "record": "4471"}).status_code == 403


@pytest.mark.django_db
def test_the_auditors_home_page_has_the_form_and_writes_times_in_the_audit_pages_format(auditor, two_4471s):
    from audit.models import AuditVerification

    AuditVerification.objects.create(ok=True, checked=5)
    audit_record(verb="denied", actor=None, channel="api", summary="refused")  # listed under recent denials
    page = auditor.get(reverse("admin:index")).content.decode()
    assert f'action="{reverse(FIND)}"' in page
    assert '<option value="crm-staging">crm-staging (' in page and 'name="record"' in page
    moments = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)
    assert len(moments) >= 3  # as of, the last chain check, the denial
    assert not re.search(r"\b(a\.m\.|p\.m\.)|\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\.? \d", page)
