"""Mail settings from the environment reach a real SMTP server on loopback (aiosmtpd), signed in with the given user.

Notices (approvals, escalations, failures, rotations) all go through Django's mail backend; `sendtestemail` is the
operator's check of the same path, run here as a fresh process with only the environment to go on."""

from __future__ import annotations

import os
import subprocess
import sys
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.stack import ROOT, free_port

USER, PASSWORD = "gatehouse-mailer", "correct horse battery staple"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, bytes | None]] = []

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content, login))
        return "250 Message accepted for delivery"


def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, auth_data=auth_data if ok else None)


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticate,
        auth_require_tls=False,  # loopback only; production sets GATEHOUSE_EMAIL_STARTTLS or _SSL
    )
    controller.start()
    yield controller, inbox
    controller.stop()


def send_test_email(tmp_path, port: int, password: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "DATABASE_URL", "REDIS_URL"))}
    env.update(
        {
            "GATEHOUSE_ENV": "development",  # secrets generated under the var folder
            "GATEHOUSE_VAR_DIR": str(tmp_path),
            "GATEHOUSE_EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "GATEHOUSE_EMAIL_HOST": "127.0.0.1",
            "GATEHOUSE_EMAIL_PORT": str(port),
            "GATEHOUSE_EMAIL_USER": USER,
            "GATEHOUSE_EMAIL_PASSWORD": password,
            "GATEHOUSE_FROM_EMAIL": "gatehouse@example.com",
            **extra,
        }
    )
    return subprocess.run(
        [sys.executable, "manage.py", "sendtestemail", "oncall@example.com"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_mail_goes_to_the_configured_server_signed_in_as_the_configured_user(smtp, tmp_path):
    controller, inbox = smtp
    result = send_test_email(tmp_path, controller.port, PASSWORD)
    assert result.returncode == 0, result.stderr

    [(sender, recipients, content, login)] = inbox.messages
    assert sender == "gatehouse@example.com"
    assert recipients == ["oncall@example.com"]
    assert login == USER.encode()
    assert message_from_bytes(content)["From"] == "gatehouse@example.com"


def test_a_wrong_mail_password_sends_nothing_and_the_timeout_ends_the_wait(smtp, tmp_path):
    controller, inbox = smtp
    # aiosmtpd holds back its answer to a wrong sign-in; GATEHOUSE_EMAIL_TIMEOUT ends the wait instead of hanging.
    result = send_test_email(tmp_path, controller.port, "wrong", GATEHOUSE_EMAIL_TIMEOUT="2")
    assert result.returncode != 0
    assert "smtplib.SMTP" in result.stderr, result.stderr
    assert inbox.messages == []
