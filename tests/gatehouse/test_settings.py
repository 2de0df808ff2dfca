"""Settings from the environment fail loudly at start, with a message that says what to fix."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.env import env_bool, env_choice, env_int, env_list, env_seconds

ROOT = Path(__file__).resolve().parents[2]


def test_typed_helpers_read_good_values(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "12")
    monkeypatch.setenv("X_SECONDS", "1.5")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    monkeypatch.setenv("X_CHOICE", "production")
    assert env_bool("X_BOOL") is True
    assert env_int("X_INT", 1, minimum=1) == 12
    assert env_seconds("X_SECONDS", timedelta(1)) == timedelta(seconds=1.5)
    assert env_list("X_LIST") == ["a", "b", "c"]
    assert env_choice("X_CHOICE", "development", ("development", "production")) == "production"
    assert env_int("X_UNSET", 7) == 7


@pytest.mark.parametrize(
    ("reader", "value", "expected"),
    [
        (lambda: env_bool("X"), "maybe", "1/0, true/false"),
        (lambda: env_int("X", 1, minimum=1), "0", "a whole number >= 1"),
        (lambda: env_int("X", 1), "ten", "a whole number"),
        (lambda: env_seconds("X", timedelta(1)), "-3", "a positive number of seconds"),
        (lambda: env_choice("X", "a", ("a", "b")), "c", "one of a, b"),
    ],
)
def test_typed_helpers_name_the_variable_and_what_was_expected(monkeypatch, reader, value, expected):
    monkeypatch.setenv("X", value)
    with pytest.raises(ImproperlyConfigured) as caught:
        reader()
    assert f"X={value!r}" in str(caught.value) and expected in str(caught.value)


def start(tmp_path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """`manage.py check` (or `argv`) in a process with only the GATEHOUSE_ variables given (development unless said)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "DATABASE_URL", "REDIS_URL"))}
    clean.update({"GATEHOUSE_VAR_DIR": str(tmp_path), "GATEHOUSE_ENV": "development", **env})
    clean = {k: v for k, v in clean.items() if v is not None}
    return subprocess.run(
        [sys.executable, *(argv or ["manage.py", "check"])],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must be a postgresql:// URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL must be a redis://"),
        ({"GATEHOUSE_ENV": "production"}, "GATEHOUSE_SECRET_KEY must be set"),
        ({"GATEHOUSE_TASK_TIME_LIMIT": "10", "GATEHOUSE_TASK_SOFT_TIME_LIMIT": "20"}, "must be larger"),
        ({"GATEHOUSE_DEBUG": "perhaps"}, "GATEHOUSE_DEBUG='perhaps' is not valid"),
        ({"GATEHOUSE_CRM_PORT": "0"}, "GATEHOUSE_CRM_PORT='0' is not valid"),
        ({"GATEHOUSE_WEB_PORT": "70000"}, "GATEHOUSE_WEB_PORT=70000 is not valid: expected a port number"),
        (
            {"GATEHOUSE_EMAIL_STARTTLS": "1", "GATEHOUSE_EMAIL_SSL": "1"},
            "GATEHOUSE_EMAIL_STARTTLS or GATEHOUSE_EMAIL_SSL, not both",
        ),
    ],
)
def test_a_process_with_bad_settings_stops_at_start(tmp_path, env, message):
    result = start(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_production_is_the_default_and_refuses_to_start_without_its_secrets(tmp_path):
    result = start(tmp_path, GATEHOUSE_ENV=None)
    assert result.returncode != 0
    assert "GATEHOUSE_SECRET_KEY must be set when GATEHOUSE_ENV=production (the default)" in result.stderr
    assert not (tmp_path / "gatehouse_secret_key.txt").exists()  # nothing generated on disk


def test_production_by_default_runs_without_debug_and_with_secure_cookies(tmp_path):
    secrets = {
        "GATEHOUSE_SECRET_KEY": "a-production-secret-key-" + "x" * 40,
        "GATEHOUSE_CREDENTIAL_KEYS": "c2VjcmV0LWtleS1mb3ItdGhlLXZhdWx0LW9mLWdhdGU=",
        "GATEHOUSE_AUDIT_DIGEST_KEY": "an-audit-digest-key-" + "y" * 40,
    }
    show = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.GATEHOUSE_ENV, settings.DEBUG, settings.SESSION_COOKIE_SECURE)"
    )
    env = {"DJANGO_SETTINGS_MODULE": "gatehouse.settings", "GATEHOUSE_ENV": None, **secrets}
    result = start(tmp_path, "-c", show, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["production", "False", "True"]


def test_the_embedded_default_starts_in_development_with_no_other_variables(tmp_path):
    result = start(tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "gatehouse_secret_key.txt").stat().st_mode & 0o777 == 0o600


def test_a_visibility_timeout_not_longer_than_the_task_time_limit_starts_with_a_warning(tmp_path):
    result = start(
        tmp_path,
        REDIS_URL="redis://127.0.0.1:9/0",  # never connected to: the check reads settings only
        GATEHOUSE_TASK_SOFT_TIME_LIMIT="100",
        GATEHOUSE_TASK_TIME_LIMIT="120",
        GATEHOUSE_BROKER_VISIBILITY_TIMEOUT="120",
    )
    assert result.returncode == 0, result.stderr
    assert "(gatehouse.W001) GATEHOUSE_BROKER_VISIBILITY_TIMEOUT (120 s) is not longer than" in result.stderr
    assert "delivers a task again" in result.stderr


def test_the_visibility_timeout_check_warns_only_on_redis_and_only_when_tasks_can_outlast_it(settings):
    from gatehouse.checks import broker_visibility_timeout

    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.CELERY_TASK_TIME_LIMIT = 90
    settings.GATEHOUSE_BROKER_VISIBILITY_TIMEOUT = 90 * 4  # the default
    assert broker_visibility_timeout() == []
    settings.GATEHOUSE_BROKER_VISIBILITY_TIMEOUT = 90
    assert [message.id for message in broker_visibility_timeout()] == ["gatehouse.W001"]
    assert not broker_visibility_timeout()[0].is_serious()  # a warning: the process still starts
    settings.REDIS_URL = ""  # the filesystem broker has no visibility timeout
    assert broker_visibility_timeout() == []
