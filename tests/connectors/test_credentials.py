"""The credential vault: secrets encrypted at rest, rotated without downtime, never read back, never dumped."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from connectors import credentials
from connectors.credentials import CredentialUndecryptable
from connectors.models import Credential
from connectors.services import credential_set, credentials_check_decryptable, credentials_reencrypt
from gatehouse.startup import check_at_start
from governance.services import agent_token_issue
from tests.factories import AgentFactory, SystemFactory, UserFactory

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "canary-SECRET-1b9f4c7e2d05a8"


def new_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def key_a(settings) -> str:
    """Key A, configured as the only vault key."""
    key = new_key()
    settings.GATEHOUSE_CREDENTIAL_KEYS = [key]
    return key


def raw_ciphertext(credential: Credential) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT ciphertext FROM connectors_credential WHERE id = %s", [credential.pk])
        return cursor.fetchone()[0]


def event_text(event: AuditEvent) -> str:
    """Every stored field of an audit event, as one string to search."""
    values = {field.attname: getattr(event, field.attname) for field in AuditEvent._meta.concrete_fields}
    return json.dumps(values, default=str)


def fingerprint(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:12]


# --- 1. Encrypted at rest ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_secret_set_is_stored_encrypted_revealed_on_demand_and_audited_without_the_secret(key_a):
    system = SystemFactory()
    owner = system.owner

    credential = credential_set(system=system, secret=SECRET, actor=owner, channel="admin")

    stored = raw_ciphertext(credential)
    assert SECRET not in stored
    assert Fernet(key_a).decrypt(stored.encode()).decode() == SECRET  # encrypted under the configured key
    assert credential.key_fingerprint == fingerprint(key_a)
    assert Credential.objects.get(pk=credential.pk).reveal() == SECRET

    events = list(AuditEvent.objects.filter(verb="credential_set"))
    assert len(events) == 1
    event = events[0]
    assert event.system == system
    assert event.person == owner
    assert event.input["rotated"] is False
    assert event.input["key"] == fingerprint(key_a)
    assert SECRET not in event_text(event)
    assert stored not in event_text(event)


# --- 2. Key rotation --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_keys_rotate_by_putting_a_new_key_first_reencrypting_and_dropping_the_old_one(settings, key_a):
    system = SystemFactory()
    credential = credential_set(system=system, secret=SECRET, actor=None, channel="command")
    old_ciphertext = raw_ciphertext(credential)
    assert credential.key_fingerprint == fingerprint(key_a)

    key_b = new_key()
    settings.GATEHOUSE_CREDENTIAL_KEYS = [key_b, key_a]
    assert Credential.objects.get(pk=credential.pk).reveal() == SECRET  # the old key still decrypts

    assert credentials_reencrypt(actor=None, channel="command") == 1

    credential.refresh_from_db()
    assert credential.key_fingerprint == fingerprint(key_b)
    new_ciphertext = raw_ciphertext(credential)
    assert new_ciphertext != old_ciphertext
    assert SECRET not in new_ciphertext
    assert Fernet(key_b).decrypt(new_ciphertext.encode()).decode() == SECRET
    event = AuditEvent.objects.filter(verb="credential_reencrypted").get()
    assert event.input == {"count": 1, "key": fingerprint(key_b)}
    assert event.channel == "command"
    assert SECRET not in event_text(event)

    assert credentials_reencrypt(actor=None, channel="command") == 0  # nothing left under the old key
    assert AuditEvent.objects.filter(verb="credential_reencrypted").first().input["count"] == 0

    settings.GATEHOUSE_CREDENTIAL_KEYS = [key_b]
    assert Credential.objects.get(pk=credential.pk).reveal() == SECRET  # the old key can go

    settings.GATEHOUSE_CREDENTIAL_KEYS = [key_a]
    with pytest.raises(CredentialUndecryptable):
        Credential.objects.get(pk=credential.pk).reveal()


@pytest.mark.django_db
def test_reencrypting_with_a_key_that_decrypts_nothing_fails_and_moves_nothing(settings, key_a):
    system = SystemFactory()
    credential = credential_set(system=system, secret=SECRET, actor=None, channel="command")
    before = raw_ciphertext(credential)

    settings.GATEHOUSE_CREDENTIAL_KEYS = [new_key()]  # key A forgotten before re-encrypting
    with pytest.raises(CredentialUndecryptable):
        credentials_reencrypt(actor=None, channel="command")

    assert raw_ciphertext(credential) == before
    assert Credential.objects.get(pk=credential.pk).key_fingerprint == fingerprint(key_a)
    assert not AuditEvent.objects.filter(verb="credential_reencrypted").exists()


# --- 3. Fail at start on an unknown key ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_start_check_names_the_system_whose_credential_the_configured_keys_cannot_decrypt(settings, key_a):
    readable = SystemFactory(slug="crm-readable")
    credential_set(system=readable, secret="first-secret", actor=None, channel="command")
    credentials_check_decryptable()  # passes while the keys decrypt everything
    check_at_start()

    key_c = new_key()
    settings.GATEHOUSE_CREDENTIAL_KEYS = [key_c]
    with pytest.raises(ImproperlyConfigured, match="crm-readable"):
        credentials_check_decryptable()
    with pytest.raises(ImproperlyConfigured, match="crm-readable"):
        check_at_start()

    settings.GATEHOUSE_CREDENTIAL_KEYS = [key_c, key_a]
    credentials_check_decryptable()  # passes again once the key is back


@pytest.mark.django_db
def test_the_start_check_passes_when_there_is_no_credential_at_all(key_a):
    credentials_check_decryptable()


# --- 4. A malformed or missing key stops the process at start ----------------------------------------------------


def run_manage_check(tmp_path: Path, **env_changes: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["GATEHOUSE_VAR_DIR"] = str(tmp_path / "var")
    for name in ("GATEHOUSE_SECRET_KEY", "GATEHOUSE_CREDENTIAL_KEYS"):
        env.pop(name, None)
    env["GATEHOUSE_ENV"] = "development"
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_process_with_a_malformed_credential_key_fails_loudly_at_start(tmp_path):
    result = run_manage_check(tmp_path, GATEHOUSE_CREDENTIAL_KEYS="not-a-key")

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "GATEHOUSE_CREDENTIAL_KEYS" in result.stderr
    assert "key 1 is not a Fernet key" in result.stderr


def test_a_malformed_key_after_a_good_one_is_named_by_its_position(tmp_path):
    result = run_manage_check(tmp_path, GATEHOUSE_CREDENTIAL_KEYS=f"{new_key()},not-a-key")

    assert result.returncode != 0
    assert "GATEHOUSE_CREDENTIAL_KEYS: key 2 is not a Fernet key" in result.stderr


def test_a_process_with_well_formed_keys_starts(tmp_path):
    result = run_manage_check(tmp_path, GATEHOUSE_CREDENTIAL_KEYS=f"{new_key()},{new_key()}")

    assert result.returncode == 0, result.stderr


def test_production_without_credential_keys_fails_loudly_at_start(tmp_path):
    result = run_manage_check(
        tmp_path,
        GATEHOUSE_ENV="production",
        GATEHOUSE_SECRET_KEY="a-production-secret-key-" + "x" * 40,
        GATEHOUSE_CREDENTIAL_KEYS=None,
    )

    assert result.returncode != 0
    assert "GATEHOUSE_CREDENTIAL_KEYS must be set when GATEHOUSE_ENV=production" in result.stderr
    assert not (tmp_path / "var" / "gatehouse_credential_keys.txt").exists()  # nothing generated on disk


# --- 5. History holds no ciphertext -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_credential_history_holds_no_ciphertext_and_names_why_each_row_changed(settings, key_a):
    historical = Credential.history.model
    with pytest.raises(FieldDoesNotExist):
        historical._meta.get_field("ciphertext")
    with connection.cursor() as cursor:
        columns = [
            column.name for column in connection.introspection.get_table_description(cursor, historical._meta.db_table)
        ]
    assert "ciphertext" not in columns

    system = SystemFactory()
    credential = credential_set(system=system, secret=SECRET, actor=None, channel="command")
    credential_set(system=system, secret="the-second-secret", actor=None, channel="command")
    settings.GATEHOUSE_CREDENTIAL_KEYS = [new_key(), key_a]
    credentials_reencrypt(actor=None, channel="command")

    reasons = list(credential.history.order_by("history_id").values_list("history_change_reason", flat=True))
    assert reasons == ["secret set", "secret rotated", "re-encrypted under the current key"]
    for row in credential.history.all():
        values = json.dumps({f.attname: getattr(row, f.attname) for f in historical._meta.concrete_fields}, default=str)
        assert SECRET not in values
        assert "the-second-secret" not in values


# --- 6. A dump holds no usable token and no readable credential ---------------------------------------------------


@pytest.mark.django_db
def test_a_database_dump_holds_no_usable_token_and_no_readable_credential(key_a):
    system = SystemFactory()
    credential_set(system=system, secret=SECRET, actor=system.owner, channel="admin")
    credential_set(system=system, secret=SECRET + "-rotated", actor=system.owner, channel="admin")
    agent = AgentFactory()
    token, raw = agent_token_issue(agent=agent, channel="command")
    token_secret = raw.split("_", 2)[2]

    buffer = io.StringIO()
    call_command("dumpdata", stdout=buffer)
    dump = buffer.getvalue()

    assert '"model": "connectors.credential"' in dump  # the dump did cover the vault
    assert '"model": "governance.agenttoken"' in dump
    assert SECRET not in dump
    assert raw not in dump
    assert token_secret not in dump
    assert token.prefix in dump  # only the lookup prefix and the hash are stored


# --- 7. The admin form is write-only ------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_superuser=True))
    return client


def change_form_data(credential: Credential, **overrides) -> dict[str, str]:
    data = {
        "system": str(credential.system_id),
        "kind": credential.kind,
        "header_name": credential.header_name,
        "username": credential.username,
        "rotation_interval": "90 00:00:00",
        "secret": "",
        "_save": "Save",
    }
    if credential.is_admin_level:
        data["is_admin_level"] = "on"
    if credential.is_shared:
        data["is_shared"] = "on"
    data.update(overrides)
    return data


@pytest.mark.django_db
def test_the_admin_change_page_shows_neither_the_secret_nor_the_ciphertext(admin_client, key_a):
    credential = credential_set(system=SystemFactory(), secret=SECRET, actor=None, channel="command")

    for url in (
        reverse("admin:connectors_credential_change", args=[credential.pk]),
        reverse("admin:connectors_credential_history", args=[credential.pk]),
        reverse("admin:connectors_credential_changelist"),
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        content = response.content.decode()
        assert SECRET not in content, url
        assert credential.ciphertext not in content, url


@pytest.mark.django_db
def test_posting_a_new_secret_in_the_admin_rotates_the_credential_and_audits_it(admin_client, key_a):
    credential = credential_set(system=SystemFactory(), secret=SECRET, actor=None, channel="command")
    long_ago = timezone.now() - timedelta(days=100)
    Credential.objects.filter(pk=credential.pk).update(last_rotated_at=long_ago)

    response = admin_client.post(
        reverse("admin:connectors_credential_change", args=[credential.pk]),
        change_form_data(credential, secret="the-rotated-secret"),
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    credential.refresh_from_db()
    assert credential.reveal() == "the-rotated-secret"
    assert credential.last_rotated_at > long_ago
    assert not credential.rotation_overdue
    assert "the-rotated-secret" not in raw_ciphertext(credential)
    event = AuditEvent.objects.filter(verb="credential_set").first()
    assert event.input["rotated"] is True
    assert event.channel == "admin"
    assert event.person is not None and event.person.is_superuser
    assert "the-rotated-secret" not in event_text(event)
    assert Credential.objects.count() == 1


@pytest.mark.django_db
def test_posting_the_admin_form_without_a_secret_keeps_the_secret_and_saves_the_other_fields(admin_client, key_a):
    credential = credential_set(system=SystemFactory(), secret=SECRET, actor=None, channel="command")
    ciphertext, rotated_at = raw_ciphertext(credential), credential.last_rotated_at
    events_before = AuditEvent.objects.filter(verb="credential_set").count()

    response = admin_client.post(
        reverse("admin:connectors_credential_change", args=[credential.pk]),
        change_form_data(credential, is_shared="on"),
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    credential.refresh_from_db()
    assert credential.is_shared is True
    assert credential.reveal() == SECRET
    assert raw_ciphertext(credential) == ciphertext
    assert credential.last_rotated_at == rotated_at
    assert AuditEvent.objects.filter(verb="credential_set").count() == events_before
    assert credential.history.first().history_change_reason == "origin=admin"


@pytest.mark.django_db
def test_creating_a_credential_in_the_admin_without_a_secret_is_refused_and_saves_nothing(admin_client, key_a):
    system = SystemFactory()

    response = admin_client.post(
        reverse("admin:connectors_credential_add"),
        {"system": str(system.pk), "kind": "bearer", "rotation_interval": "90 00:00:00", "secret": "", "_save": "Save"},
    )

    assert response.status_code == 200
    assert "A new credential needs its secret." in response.content.decode()
    assert not Credential.objects.exists()
    assert not AuditEvent.objects.filter(verb="credential_set").exists()


@pytest.mark.django_db
def test_creating_a_credential_in_the_admin_with_a_secret_stores_it_encrypted(admin_client, key_a):
    system = SystemFactory()

    response = admin_client.post(
        reverse("admin:connectors_credential_add"),
        {
            "system": str(system.pk),
            "kind": "bearer",
            "rotation_interval": "30 00:00:00",
            "secret": SECRET,
            "_save": "Save",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    credential = Credential.objects.get(system=system)
    assert credential.reveal() == SECRET
    assert credential.rotation_interval == timedelta(days=30)
    assert SECRET not in raw_ciphertext(credential)
    event = AuditEvent.objects.filter(verb="credential_set").get()
    assert event.input["rotated"] is False
    assert SECRET not in event_text(event)


# --- 8. Rotation due ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_credential_is_overdue_for_rotation_once_its_interval_has_passed(key_a):
    credential = credential_set(
        system=SystemFactory(), secret=SECRET, actor=None, channel="command", rotation_interval=timedelta(days=30)
    )
    assert credential.rotation_overdue is False

    credential.last_rotated_at = timezone.now() - timedelta(days=31)
    assert credential.rotation_overdue is True

    credential.last_rotated_at = timezone.now() - timedelta(days=29)
    assert credential.rotation_overdue is False
    assert credential.rotation_due_at == credential.last_rotated_at + timedelta(days=30)


def test_the_vault_refuses_to_work_without_a_key(settings):
    settings.GATEHOUSE_CREDENTIAL_KEYS = []
    with pytest.raises(ImproperlyConfigured, match="GATEHOUSE_CREDENTIAL_KEYS"):
        credentials.encrypt(SECRET)


@pytest.mark.django_db
def test_reencrypt_credentials_command_moves_secrets_to_the_new_key(settings, capsys):
    from django.core.management import call_command

    from connectors.services import credential_set
    from tests.factories import SystemFactory

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.GATEHOUSE_CREDENTIAL_KEYS = [old]
    system = SystemFactory()
    credential_set(system=system, secret="s3cret-value", actor=None, channel="command")
    settings.GATEHOUSE_CREDENTIAL_KEYS = [new, old]
    call_command("reencrypt_credentials")
    assert "Re-encrypted 1 credential(s)" in capsys.readouterr().out
    settings.GATEHOUSE_CREDENTIAL_KEYS = [new]
    system.credential.refresh_from_db()
    assert system.credential.reveal() == "s3cret-value"
