"""Policy as code: export_policy writes the inventory as one YAML document, apply_policy --plan says in words what a
changed document would change, --apply makes it as a person through the admin's services. The round trip is
lossless, a plan reads as sentences, and nothing changes on a refusal or an invalid document."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from audit.choices import Channel
from audit.models import AuditEvent
from connectors.models import AgentCredential, Credential
from governance.choices import Role
from governance.models import ScopeGrant, System, ThresholdRule
from governance.policy_document import dump, export_text
from governance.policy_load import load
from governance.roles import ensure_roles
from governance.services import threshold_rule_sign_off
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
User = get_user_model()
OVERRIDE = "Restoring the inventory from git into an empty database."


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def write(tmp_path: Path, document: dict | str, name: str = "policy.yaml") -> str:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return str(path)


def exported() -> dict:
    return yaml.safe_load(export_text())


def system_of(document: dict, slug: str) -> dict:
    return next(system for system in document["systems"] if system["slug"] == slug)


def agent_of(document: dict, slug: str) -> dict:
    return next(agent for agent in document["agents"] if agent["slug"] == slug)


def rule_of(document: dict, system: str, action: str | None) -> dict:
    return next(rule for rule in system_of(document, system)["rules"] if rule["action_type"] == action)


@pytest.fixture
def dana(demo):
    return UserFactory(username="dana", first_name="Dana", last_name="Decider", roles=[Role.APPROVERS])


# --- The round trip ---------------------------------------------------------------------------------------------


def test_export_apply_to_an_empty_inventory_and_export_again_gives_the_same_bytes(tmp_path):
    from console.demo import seed_demo

    class Undo(Exception):
        pass

    try:
        with transaction.atomic():  # the demo inventory only for its export: undone after, people and all
            seed_demo(crm_url="http://127.0.0.1:9", crm_staging_url="http://127.0.0.1:9")
            first = export_text()
            people = list(User.objects.values("username", "is_superuser", "is_staff"))
            raise Undo
    except Undo:
        pass
    assert not System.objects.exists() and not User.objects.exists()
    groups = ensure_roles()  # people are not policy: made here, as a company's identity provider would
    for person in people:
        user = User.objects.create(**person)
        if person["username"] == "reviewer":
            user.groups.add(groups[Role.REVIEWERS])

    path = write(tmp_path, first)
    output = run(
        "apply_policy", path, "--apply", "--as", "admin", "--reason", "restore", "--override-readiness", OVERRIDE
    )

    assert "Applied as admin." in output
    assert export_text() == first
    assert "crm-staging" in first and "Credit limit changes on crm" in first
    assert run("apply_policy", path).strip() == "No changes: the inventory already says what the document says."
    # Created, not signed off: the applier edited them, and their business owner signs them off in the admin.
    assert not any(rule.is_signed_off for rule in ThresholdRule.objects.prefetch_related("bands"))


def backwards(value):
    """Every mapping's keys in reverse order, and every list of entries too (a resource's fields keep theirs)."""
    if isinstance(value, dict):
        return {name: backwards(value[name]) for name in reversed(list(value))}
    if isinstance(value, list):
        return [backwards(item) for item in (reversed(value) if all(isinstance(i, dict) for i in value) else value)]
    return value


def test_the_document_does_not_depend_on_the_order_entries_and_keys_come_in(demo):
    text = export_text()
    assert text.startswith("# Gatehouse policy") and "Left out on purpose" in text
    assert "\nversion: 1\nsystems:\n- slug: crm\n" in text

    shuffled = yaml.safe_dump(backwards(yaml.safe_load(text)), sort_keys=False)

    assert shuffled != text
    assert dump(load(shuffled)) == text


def test_no_secret_is_ever_exported(demo):
    credentials = [*Credential.objects.all(), *AgentCredential.objects.all()]
    assert credentials, "the demo vaults the CRMs' credentials"
    text = export_text()
    for credential in credentials:
        assert credential.reveal() not in text
        assert credential.ciphertext not in text
    for token in (settings.VAR_DIR / "sandbox").glob("*.token"):
        for line in token.read_text().split():
            assert line not in text or line in ("collections-agent",)
    assert "ciphertext" not in text and "token" not in text.lower().replace("tokens are never exported", "")


# --- The plan in words ------------------------------------------------------------------------------------------


def test_a_changed_band_reads_as_sentences_a_business_owner_understands(dana, tmp_path):
    document = exported()
    bands = rule_of(document, "crm", "update_credit_limit")["bands"]
    bands[1] |= {"approver": "dana", "sla": "8 hours", "max_amount": "7500.00"}
    bands[2]["min_amount"] = "7500.00"

    output = run("apply_policy", write(tmp_path, document), "--plan")

    assert output.splitlines() == [
        "1 entry of the inventory differs from the document:",
        "- band 500–5,000 of Credit limit changes on crm: bounds 500–5,000 → 500–7,500",
        "- band 500–5,000 of Credit limit changes on crm: approver approver → dana",
        "- band 500–5,000 of Credit limit changes on crm: SLA 4 hours → 8 hours",
        "- band 5,000 and above of Credit limit changes on crm: bounds 5,000 and above → 7,500 and above",
        "- Credit limit changes on crm is then not in force until its business owner signs it off in the admin.",
    ]
    assert ThresholdRule.objects.get(name="Credit limit changes on crm").bands.get(
        min_amount=500
    ).approver.username == ("approver")


def test_added_and_removed_grants_read_as_sentences(demo, tmp_path):
    document = exported()
    reporting = agent_of(document, "reporting-agent")
    reporting["grants"][0]["fields"] = ["name", "status"]
    reporting["grants"].append(
        {"system": "legacy-inventory", "resource": "events", "access": "read", "justification": "Stock in reports."}
    )
    collections = agent_of(document, "collections-agent")
    collections["grants"] = [g for g in collections["grants"] if g["system"] != "legacy-inventory"]

    output = run("apply_policy", write(tmp_path, document))

    assert output.splitlines() == [
        "3 entries of the inventory differ from the document:",
        "- reporting-agent's read grant on crm accounts: fields credit_limit, name, notes, status → name, status",
        "- new grant: reporting-agent may read legacy-inventory events (every field)",
        "- removed grant: collections-agent may read legacy-inventory events (every field)",
    ]


# --- Applying ---------------------------------------------------------------------------------------------------


def test_apply_leaves_the_changed_rule_unsigned_the_others_signed_and_audits_each_change_as_the_person(dana, tmp_path):
    document = exported()
    rule_of(document, "crm", "update_credit_limit")["bands"][1]["approver"] = "dana"
    rule_of(document, "crm", "set_status")["name"] = "Account status changes on crm"  # a name is not signed terms
    agent_of(document, "reporting-agent")["grants"][0]["justification"] = "Monthly account reports."
    before = AuditEvent.objects.count()

    output = run(
        "apply_policy", write(tmp_path, document), "--apply", "--as", "owner", "--reason", "Dana takes over (FIN-9)."
    )

    assert "Applied as owner." in output
    assert output.endswith("signs them off in the admin (Threshold rules → Sign off): Credit limit changes on crm.\n")
    rules = {rule.name: rule for rule in ThresholdRule.objects.prefetch_related("bands")}
    changed = rules.pop("Credit limit changes on crm")
    assert not changed.is_signed_off and changed.edited_by.username == "owner"
    assert changed.signed_off_by.username == "owner"  # kept, void: as after an edit in the admin
    assert rules["Account status changes on crm"].is_signed_off
    assert all(rule.is_signed_off for rule in rules.values())
    events = list(AuditEvent.objects.filter(verb="configured").order_by("id"))[-3:]
    assert [event.resource for event in events] == ["thresholdrule", "thresholdrule", "scopegrant"]
    assert {(event.person.username, event.channel) for event in events} == {("owner", "command")}
    assert {event.input["reason"] for event in events} == {"Dana takes over (FIN-9)."}
    assert list(events[1].state_after.values()) == [{"approver": "dana"}]
    assert events[2].state_after == {"justification": "Monthly account reports."}
    assert AuditEvent.objects.count() == before + 3
    # Four eyes: the person who applied it cannot sign it off.
    with pytest.raises(PermissionDenied, match="someone else signs it off"):
        threshold_rule_sign_off(rule=changed, user=User.objects.get(username="owner"), channel=Channel.ADMIN)


def test_a_budget_and_an_agents_status_are_applied_through_their_own_services(demo, tmp_path):
    document = exported()
    agent_of(document, "collections-agent")["budgets"] = [
        {"system": "crm", "window": "24 hours", "max_amount": "10000", "currency": "USD", "max_writes": 20}
    ]
    agent_of(document, "reporting-agent")["status"] = "disabled"
    path = write(tmp_path, document)

    assert run("apply_policy", path).splitlines()[1:] == [
        "- agent reporting-agent: status Active → Disabled",
        "- new budget: collections-agent on crm: at most 10,000 USD and 20 writes per 24 hours",
    ]
    run("apply_policy", path, "--apply", "--as", "admin", "--reason", "Pilot ends; cap the collections agent.")

    assert yaml.safe_load(export_text()) == yaml.safe_load(dump(load(Path(path).read_text())))
    assert AuditEvent.objects.filter(verb="kill_switch_on", agent__slug="reporting-agent", channel="command").exists()
    budget_event = AuditEvent.objects.filter(verb="configured", resource="agent", agent__slug="collections-agent")
    assert budget_event.get().person.username == "admin"


def test_plan_is_the_default_and_changes_nothing(dana, tmp_path):
    document = exported()
    rule_of(document, "crm", "update_credit_limit")["bands"][1]["approver"] = "dana"
    before = export_text()

    output = run("apply_policy", write(tmp_path, document), "--as", "owner", "--reason", "x")

    assert "approver approver → dana" in output and "Nothing was changed" in output
    assert export_text() == before


@pytest.mark.parametrize(
    ("who", "change", "refusal"),
    [
        ("approver", "band", "approver may not change threshold rule Credit limit changes on crm"),
        ("owner", "connector", "Only an integrator or a superuser changes a system's connector settings."),
        ("owner", "owner", "Handing system crm to another owner is a superuser's act."),
        # After the band's change, which the owner may make: undone with the rest.
        ("owner", "agent", "owner may not change agent reporting-agent: in the admin too."),
    ],
)
def test_a_person_without_the_right_is_refused_and_nothing_changes(dana, tmp_path, who, change, refusal):
    document = exported()
    rule_of(document, "crm", "update_credit_limit")["bands"][1]["approver"] = "dana"  # allowed to the owner
    crm = system_of(document, "crm")
    if change == "connector":
        crm["connector_config"]["timeout"] = 3
    if change == "owner":
        crm["owner"] = "dana"
    if change == "agent":
        agent_of(document, "reporting-agent")["description"] = "Monthly reports."
    before, events = export_text(), AuditEvent.objects.count()

    with pytest.raises(CommandError) as refused:
        run("apply_policy", write(tmp_path, document), "--apply", "--as", who, "--reason", "try")

    assert str(refused.value).startswith("Nothing was changed:")
    assert refusal in str(refused.value)
    assert export_text() == before and AuditEvent.objects.count() == events


def test_production_writes_pass_the_readiness_gate_as_in_the_admin(demo, tmp_path):
    document = exported()
    agent_of(document, "reporting-agent")["grants"].append(
        {"system": "crm", "resource": "accounts", "access": "write", "actions": ["add_note"], "justification": "x"}
    )
    path = write(tmp_path, document)

    with pytest.raises(CommandError, match="is refused until the readiness checklist passes"):
        run("apply_policy", path, "--apply", "--as", "owner", "--reason", "notes")
    assert not ScopeGrant.objects.filter(agent__slug="reporting-agent", access="write").exists()

    run("apply_policy", path, "--apply", "--as", "admin", "--reason", "notes", "--override-readiness", "pilot")
    assert ScopeGrant.objects.get(agent__slug="reporting-agent", access="write").granted_by.username == "admin"
    assert AuditEvent.objects.filter(verb="readiness_overridden", channel="command", person__username="admin").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text + "  oops: [", "Not YAML"),
        (lambda text: text.replace("version: 1", "version: 2"), "version: 1 was expected"),
        (lambda text: text.replace("  write_mode: enabled", "  write_mode: sometimes", 1), "systems.0.write_mode"),
        (lambda text: text.replace("- slug: crm\n", "- slug: crm\n  colour: blue\n", 1), "systems.0.colour: Unknown"),
        (lambda text: text.replace("sla: 4 hours", "sla: '4'", 1), "Say the unit of “4”"),
        (lambda text: text.replace("approver: approver", "approver: nobody", 1), "nobody: no such user"),
        (lambda text: text.replace("max_amount: '500.00'", "max_amount: '400.00'", 1), "There is a gap between 400"),
        (lambda text: text.replace("resource: accounts", "resource: invoices", 1), "on resource invoices, not listed"),
    ],
)
def test_an_invalid_document_is_refused_with_where_and_why_and_changes_nothing(demo, tmp_path, edit, message):
    before, events = export_text(), AuditEvent.objects.count()

    with pytest.raises(CommandError) as refused:
        run("apply_policy", write(tmp_path, edit(before)), "--apply", "--as", "admin", "--reason", "x")

    assert message in str(refused.value)
    assert export_text() == before and AuditEvent.objects.count() == events


def test_apply_needs_a_person_that_exists(demo, tmp_path):
    path = write(tmp_path, export_text())
    with pytest.raises(CommandError, match="--apply needs --as USERNAME"):
        run("apply_policy", path, "--apply", "--reason", "x")
    with pytest.raises(CommandError, match="No user 'ghost'"):
        run("apply_policy", path, "--apply", "--as", "ghost", "--reason", "x")


# --- As an operator runs it ---------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_export_then_plan_as_real_processes_against_postgres(transactional_db, tmp_path):
    from console.demo import seed_demo

    seed_demo(crm_url="http://127.0.0.1:9", crm_staging_url="http://127.0.0.1:9")
    UserFactory(username="dana")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "DATABASE_URL", "REDIS_URL"))}
    env |= {
        "GATEHOUSE_ENV": "development",
        "DATABASE_URL": settings.DATABASE_URL,
        "GATEHOUSE_DB_NAME": str(connection.settings_dict["NAME"]),
        "GATEHOUSE_VAR_DIR": str(settings.VAR_DIR),
        "GATEHOUSE_CREDENTIAL_KEYS": ",".join(settings.GATEHOUSE_CREDENTIAL_KEYS),
        "GATEHOUSE_SECRET_KEY": settings.SECRET_KEY,
    }
    policy = tmp_path / "policy.yaml"

    def manage(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *argv],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    exported_ = manage("export_policy", "--output", str(policy))
    assert exported_.returncode == 0, exported_.stderr
    assert policy.read_text() == export_text()

    policy.write_text(policy.read_text().replace("approver: approver\n", "approver: dana\n", 1))
    planned = manage("apply_policy", str(policy), "--plan")

    assert planned.returncode == 0, planned.stderr
    assert "- band 500–5,000 of Default for crm: approver approver → dana" in planned.stdout
    assert not ThresholdRule.objects.filter(bands__approver__username="dana").exists()
