"""Production settings pass Django's deployment checks, and every admin page carries the security headers."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    # Nothing of the suite's own environment: not its services, nor DJANGO_ALLOW_ASYNC_UNSAFE (the browser fixture's).
    prefixes = ("GATEHOUSE_", "DATABASE_URL", "REDIS_URL", "DJANGO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        {
            "GATEHOUSE_ENV": "production",
            "GATEHOUSE_SECRET_KEY": secrets.token_urlsafe(50),
            "GATEHOUSE_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
            "GATEHOUSE_AUDIT_DIGEST_KEY": secrets.token_hex(32),
            "GATEHOUSE_ALLOWED_HOSTS": "gatehouse.example.com",
            "GATEHOUSE_CSRF_TRUSTED_ORIGINS": "https://gatehouse.example.com",
            "GATEHOUSE_VAR_DIR": str(tmp_path),
        }
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/login/", "/admin/"])
def test_admin_pages_carry_the_security_headers(client, f, path):
    client.force_login(f.UserFactory(is_superuser=True))
    response = client.get(path)
    assert response.status_code in (200, 302)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.django_db
def test_session_and_csrf_cookies_are_http_only_and_same_site(client, f):
    response = client.post(
        "/admin/login/", {"username": f.UserFactory().username, "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    session = response.cookies["sessionid"]
    assert session["httponly"] and session["samesite"] == "Lax"
    assert int(session["max-age"]) == 12 * 3600
