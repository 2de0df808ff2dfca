"""The single sign-on door (gatehouse/oidc.py, the admin's sign-in page): the provider's button keeps `next`, local
passwords can be switched off for good (the page and a crafted POST), the lockout still guards them when on, the ID
token must be this issuer's for this client, discovery must name the configured issuer, and the sign-in method is
named in the events of the person's own session. The whole flow against a real provider: tests/security/
test_sso_browser.py."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.exceptions import SuspiciousOperation
from django.test import Client, RequestFactory

from audit.integrity import verify_chain
from audit.models import AuditEvent
from audit.services import audit_record
from core.request_context import sign_in_set
from gatehouse import oidc
from tests.gatehouse.test_settings import start

ISSUER = "https://login.example.com/acme"
PASSWORD = "correct horse battery staple"  # tests/factories.py
BACKENDS = ["axes.backends.AxesStandaloneBackend", "gatehouse.oidc.GatehouseOIDCBackend"]


@pytest.fixture
def sso_on(settings):
    """Single sign-on configured, local passwords off, as production would have it."""
    settings.GATEHOUSE_OIDC = True
    settings.GATEHOUSE_OIDC_ISSUER = ISSUER
    settings.GATEHOUSE_OIDC_PROVIDER_NAME = "Okta"
    settings.GATEHOUSE_LOCAL_PASSWORDS = False
    settings.AUTHENTICATION_BACKENDS = BACKENDS
    settings.OIDC_RP_CLIENT_ID = "gatehouse"
    oidc._providers.clear()
    yield settings
    oidc._providers.clear()


@pytest.mark.django_db
def test_without_local_passwords_the_page_offers_only_the_provider_and_keeps_next(client, sso_on):
    page = client.get("/admin/login/", {"next": "/admin/approvals/proposal/42/change/"})
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="login-form"' not in html and 'name="password"' not in html
    assert "Sign in with Okta" in html
    assert 'href="/oidc/authenticate/?next=/admin/approvals/proposal/42/change/"' in html


@pytest.mark.django_db
def test_without_local_passwords_a_password_post_is_refused_even_with_the_right_password(f, sso_on):
    user = f.UserFactory()
    client = Client()
    response = client.post("/admin/login/", {"username": user.username, "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session
    assert "sign in with Okta" in response.content.decode()
    assert not AuditEvent.objects.filter(verb="signed_in").exists()


@pytest.mark.django_db
def test_with_local_passwords_both_ways_are_offered_and_a_password_sign_in_is_named_in_the_session_and_trail(f, sso_on):
    sso_on.GATEHOUSE_LOCAL_PASSWORDS = True
    sso_on.AUTHENTICATION_BACKENDS = [*BACKENDS, "django.contrib.auth.backends.ModelBackend"]
    user = f.UserFactory()
    client = Client()
    html = client.get("/admin/login/").content.decode()
    assert "Sign in with Okta" in html and 'id="login-form"' in html

    response = client.post("/admin/login/", {"username": user.username, "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302
    assert client.session["gatehouse_sign_in"] == {"method": "password"}
    event = AuditEvent.objects.get(verb="signed_in")
    assert event.person == user and event.input == {"sign_in": {"method": "password"}}


@pytest.mark.django_db
def test_with_local_passwords_on_beside_the_provider_the_lockout_still_applies(f, sso_on):
    sso_on.GATEHOUSE_LOCAL_PASSWORDS = True
    sso_on.AUTHENTICATION_BACKENDS = [*BACKENDS, "django.contrib.auth.backends.ModelBackend"]
    user = f.UserFactory()
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    codes = [
        attacker.post("/admin/login/", {"username": user.username, "password": "guess"}).status_code for _ in range(5)
    ]
    assert codes == [200, 200, 200, 200, 429]
    assert attacker.post("/admin/login/", {"username": user.username, "password": PASSWORD}).status_code == 429


@pytest.mark.django_db
def test_the_provider_backend_answers_only_the_callback_never_a_password_form_carrying_a_code(f, sso_on):
    request = RequestFactory().post("/admin/login/?code=stolen&state=guessed")
    backend = oidc.GatehouseOIDCBackend()
    assert backend.authenticate(request, username="someone", password="x") is None
    assert backend.authenticate(request) is None


def test_without_single_sign_on_its_pages_do_not_exist(client, settings):
    settings.GATEHOUSE_OIDC = False
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404


# --- The ID token: this issuer's, for this client, in date, with the configured algorithm -------------------------


@pytest.fixture(scope="module")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def checked(signing_key, algorithm: str = "RS256", **changes):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "gatehouse", "sub": "00u1", "iat": now, "exp": now + 300, **changes}
    claims = {key: value for key, value in claims.items() if value is not None}
    key = signing_key if algorithm.startswith("RS") else "a-shared-secret-of-thirty-two-bytes!"
    token = jwt.encode(claims, key, algorithm=algorithm, headers={"kid": "1"})
    backend = oidc.GatehouseOIDCBackend()
    backend.issuer, backend.OIDC_RP_CLIENT_ID, backend.OIDC_RP_SIGN_ALGO = ISSUER, "gatehouse", "RS256"
    return backend._verify_jws(token, signing_key.public_key())


def test_a_token_from_this_issuer_for_this_client_holds(signing_key):
    assert checked(signing_key)["sub"] == "00u1"


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"aud": "another-app"}, "Audience"),
        ({"iss": "https://evil.example.com"}, "issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"exp": None}, "exp"),
        ({"aud": ["gatehouse", "another-app"], "azp": "another-app"}, "another client"),
        ({"algorithm": "HS256"}, "signed with HS256"),
        ({"sub": None}, "sub"),
        ({"iat": None}, "iat"),
        ({"iss": None}, "iss"),
    ],
    ids=[
        "other-audience",
        "other-issuer",
        "expired",
        "no-expiry",
        "other-azp",
        "other-algorithm",
        "no-sub",
        "no-iat",
        "no-issuer",
    ],
)
def test_a_token_for_another_client_or_issuer_or_out_of_date_is_refused(signing_key, changes, why):
    algorithm = changes.pop("algorithm", "RS256")
    with pytest.raises(SuspiciousOperation, match=why):
        checked(signing_key, algorithm=algorithm, **changes)


def test_a_token_minted_for_another_sign_in_is_refused_by_its_nonce(signing_key, settings):
    """The nonce kept in this browser's session must be the token's: a token replayed from another sign-in fails."""
    settings.OIDC_USE_NONCE = True
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "gatehouse", "sub": "00u1", "iat": now, "exp": now + 300, "nonce": "theirs"}
    token = jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": "1"})
    backend = oidc.GatehouseOIDCBackend()
    backend.issuer, backend.OIDC_RP_CLIENT_ID, backend.OIDC_RP_SIGN_ALGO = ISSUER, "gatehouse", "RS256"
    backend.OIDC_RP_IDP_SIGN_KEY = signing_key.public_key()
    assert backend.verify_token(token, nonce="theirs")["sub"] == "00u1"
    with pytest.raises(SuspiciousOperation, match="Nonce"):
        backend.verify_token(token, nonce="mine")


# --- Discovery ----------------------------------------------------------------------------------------------------


@pytest.fixture
def discovery_server():
    """A web server on loopback answering a discovery document the test chooses."""
    answer: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(answer).encode()
            self.send_response(200 if self.path.endswith("/.well-known/openid-configuration") else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/realms/acme", answer
    server.shutdown()
    server.server_close()


def document(issuer: str) -> dict:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/certs",
    }


@pytest.mark.django_db
def test_the_sign_in_button_goes_to_the_discovered_endpoint_with_pkce_and_next(client, sso_on, discovery_server):
    issuer, answer = discovery_server
    answer.update(document(issuer))
    sso_on.GATEHOUSE_OIDC_ISSUER = issuer
    response = client.get("/oidc/authenticate/", {"next": "/admin/approvals/proposal/42/change/"})
    assert response.status_code == 302
    assert response["Location"].startswith(f"{issuer}/auth?response_type=code&scope=")
    assert "code_challenge_method=S256" in response["Location"] and "nonce=" in response["Location"]
    assert client.session["oidc_login_next"] == "/admin/approvals/proposal/42/change/"


@pytest.mark.django_db
@pytest.mark.parametrize("elsewhere", ["https://evil.example.com/admin/", "//evil.example.com/", "javascript:alert(1)"])
def test_a_next_address_off_this_site_is_not_kept_for_the_way_back(client, sso_on, discovery_server, elsewhere):
    issuer, answer = discovery_server
    answer.update(document(issuer))
    sso_on.GATEHOUSE_OIDC_ISSUER = issuer
    response = client.get("/oidc/authenticate/", {"next": elsewhere})
    assert response.status_code == 302
    assert client.session.get("oidc_login_next") in (None, "")


@pytest.mark.django_db
def test_a_discovery_document_naming_another_issuer_is_refused(client, sso_on, discovery_server):
    issuer, answer = discovery_server
    answer.update(document("https://evil.example.com"))
    sso_on.GATEHOUSE_OIDC_ISSUER = issuer
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 503
    assert "names another issuer" in response.content.decode()


@pytest.mark.django_db
def test_a_provider_that_cannot_be_reached_is_a_clear_page_and_asked_again_next_time(client, sso_on):
    sso_on.GATEHOUSE_OIDC_ISSUER = "http://127.0.0.1:9/realms/acme"
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 503 and "cannot be used right now" in response.content.decode()
    assert not oidc._providers  # not remembered


# --- The trail names how the acting person signed in -------------------------------------------------------------


@pytest.mark.django_db
def test_the_events_of_the_sessions_own_person_name_the_sign_in_and_the_chain_still_verifies(f):
    dana, other = f.UserFactory(), f.UserFactory()
    method = {"method": "oidc", "issuer": ISSUER}
    with sign_in_set(dana.pk, method):
        hers = audit_record(verb="read", actor=dana, channel="admin", summary="dana read", input={"fields": ["a"]})
        theirs = audit_record(verb="read", actor=other, channel="admin", summary="someone else")
        gatehouse = audit_record(verb="read", actor=None, channel="admin", summary="gatehouse", person=dana)
    outside = audit_record(verb="read", actor=dana, channel="admin", summary="after the request")
    assert hers.input == {"fields": ["a"], "sign_in": method}
    assert theirs.input == {} and gatehouse.input == {} and outside.input == {}
    assert AuditEvent.objects.get(pk=hers.pk).compute_hash() == hers.hash  # hashed with the rest
    assert verify_chain().ok


# --- Settings ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEHOUSE_LOCAL_PASSWORDS": "false"}, "nobody could sign in"),
        ({"GATEHOUSE_OIDC_ISSUER": "https://login.example.com"}, "GATEHOUSE_OIDC_CLIENT_ID and"),
        ({"GATEHOUSE_OIDC_ROLE_MAP": '["Approvers"]'}, "GATEHOUSE_OIDC_ROLE_MAP must be a JSON object"),
        ({"GATEHOUSE_OIDC_ROLE_MAP": '{"finance": 3}'}, "'finance' must map to a role name"),
        ({"GATEHOUSE_OIDC_ROLE_MAP": "{nope"}, "GATEHOUSE_OIDC_ROLE_MAP is not JSON"),
        ({"GATEHOUSE_OIDC_SIGN_ALGO": "PS256"}, "GATEHOUSE_OIDC_SIGN_ALGO"),
    ],
)
def test_bad_single_sign_on_settings_stop_the_process_at_start(tmp_path, env, message):
    result = start(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_production_with_a_provider_turns_local_passwords_off_by_default(tmp_path: Path):
    env = {
        "GATEHOUSE_ENV": "production",
        "GATEHOUSE_SECRET_KEY": "a-production-secret-key-" + "x" * 40,
        "GATEHOUSE_CREDENTIAL_KEYS": "c2VjcmV0LWtleS1mb3ItdGhlLXZhdWx0LW9mLWdhdGU=",
        "GATEHOUSE_AUDIT_DIGEST_KEY": "an-audit-digest-key-" + "y" * 40,
        "DJANGO_SETTINGS_MODULE": "gatehouse.settings",
    }
    show = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.GATEHOUSE_LOCAL_PASSWORDS, 'django.contrib.auth.backends.ModelBackend' in s.AUTHENTICATION_BACKENDS)"
    )
    without = start(tmp_path, "-c", show, **env)
    assert without.stdout.split() == ["True", "True"], without.stderr  # no provider: passwords are the way in
    sso = {
        "GATEHOUSE_OIDC_ISSUER": "https://login.example.com/acme",
        "GATEHOUSE_OIDC_CLIENT_ID": "gatehouse",
        "GATEHOUSE_OIDC_CLIENT_SECRET": "s3cret",
    }
    with_sso = start(tmp_path, "-c", show, **env, **sso)
    assert with_sso.stdout.split() == ["False", "False"], with_sso.stderr
    plain = start(tmp_path, "-c", show, **env, **{**sso, "GATEHOUSE_OIDC_ISSUER": "http://login.example.com/acme"})
    assert "GATEHOUSE_OIDC_ISSUER must be an https:// URL in production" in plain.stderr
