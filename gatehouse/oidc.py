"""Single sign-on through the company's identity provider: OpenID Connect's authorization code flow with PKCE.

mozilla-django-oidc does the flow (state, nonce, PKCE, the code exchange, the JWKS). What it leaves to its user, done
here: the endpoints come from the issuer's discovery document (read once per process, and checked to be that
issuer's); the ID token must be for this client (`aud`) from this issuer (`iss`) and unexpired, and the userinfo must
be about the same subject; the backend answers only the callback view, never a password form that happens to carry a
`code`. The account and its roles are governance's business (governance/sign_in.py); this module is the door.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from gatehouse.middleware import SIGN_IN_SESSION_KEY
from governance.sign_in import OIDC, SignInRefused, person_sign_in_oidc

log = logging.getLogger(__name__)

REFUSED_SESSION_KEY = "gatehouse_sign_in_refused"


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str


class ProviderUnavailable(Exception):
    """The identity provider's discovery document could not be read or does not fit: nobody signs in through it."""


_providers: dict[tuple[str, ...], Provider] = {}
_providers_lock = threading.Lock()


def provider() -> Provider:
    """The configured provider's endpoints: each one named in the settings, else from the discovery document.

    A document that names another issuer is refused (OpenID Connect Discovery 1.0, 4.3): whoever could answer that
    URL must not also choose whose tokens are believed. A provider that cannot be reached is not remembered, so the
    next sign-in asks again.
    """
    explicit = (
        settings.GATEHOUSE_OIDC_AUTHORIZATION_ENDPOINT,
        settings.GATEHOUSE_OIDC_TOKEN_ENDPOINT,
        settings.GATEHOUSE_OIDC_USERINFO_ENDPOINT,
        settings.GATEHOUSE_OIDC_JWKS_URI,
    )
    issuer = settings.GATEHOUSE_OIDC_ISSUER
    key = (issuer, *explicit)
    with _providers_lock:
        found = _providers.get(key)
    if found is not None:
        return found
    document: dict[str, Any] = {}
    if not all(explicit):
        document = _discovery(issuer)
    names = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
    endpoints = [given or str(document.get(name) or "") for given, name in zip(explicit, names, strict=True)]
    missing = [name for name, value in zip(names, endpoints, strict=True) if not value]
    if missing:
        raise ProviderUnavailable(f"the provider's discovery document names no {', '.join(missing)}")
    if settings.PRODUCTION and not all(url.startswith("https://") for url in endpoints):
        raise ProviderUnavailable("the provider's endpoints must be https:// URLs")
    found = Provider(issuer, *endpoints)
    with _providers_lock:
        _providers[key] = found
    return found


def _discovery(issuer: str) -> dict[str, Any]:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT, verify=True)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("single sign-on: cannot read %s: %s", url, exc)
        raise ProviderUnavailable(f"{url} could not be read") from exc
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        raise ProviderUnavailable(f"{url} names another issuer than {issuer}")
    return document


class GatehouseOIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, answering only the callback view, with the token checks it leaves out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Django makes a backend for every authenticate() and every session's user: no settings or network here.
        self.UserModel = get_user_model()

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        # The callback view passes the nonce and PKCE verifier it kept in the session. Anything else (the password
        # form, an API's authenticate()) is not a provider's answer, even with a `code` in its query string.
        if request is None or not settings.GATEHOUSE_OIDC or "nonce" not in kwargs or "code_verifier" not in kwargs:
            return None
        found = provider()
        self.issuer = found.issuer
        self.OIDC_OP_TOKEN_ENDPOINT = found.token_endpoint
        self.OIDC_OP_USER_ENDPOINT = found.userinfo_endpoint
        self.OIDC_OP_JWKS_ENDPOINT = found.jwks_uri
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        return super().authenticate(request, **kwargs)

    def _verify_jws(self, payload: str, key: Any) -> dict[str, Any]:
        """The signature with the provider's key and the configured algorithm, and the claims that make the token
        this sign-in's: from this issuer, for this client, not expired (mozilla-django-oidc checks the signature
        only)."""
        try:
            algorithm = jwt.get_unverified_header(payload).get("alg")
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation("The identity provider's token is not a JWT.") from exc
        if algorithm != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(f"The identity provider signed with {algorithm}, not {self.OIDC_RP_SIGN_ALGO}.")
        try:
            claims = jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=self.issuer,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
                leeway=60,
            )
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"The identity provider's token does not hold: {exc}.") from exc
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SuspiciousOperation("The token was issued to another client (azp).")
        return claims

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The userinfo endpoint's claims under the ID token's: the signed token wins where both speak."""
        info = super().get_userinfo(access_token, id_token, payload)
        if str(info.get("sub")) != str(payload.get("sub")):  # OpenID Connect Core 1.0, 5.3.2
            raise SuspiciousOperation("The userinfo endpoint answered about another subject.")
        return {**info, **payload}

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        claims = self.get_userinfo(access_token, id_token, payload)
        try:
            return person_sign_in_oidc(
                issuer=self.issuer,
                claims=claims,
                role_map=settings.GATEHOUSE_OIDC_ROLE_MAP,
                groups_claim=settings.GATEHOUSE_OIDC_GROUPS_CLAIM,
            )
        except SignInRefused as refused:
            self.request.session[REFUSED_SESSION_KEY] = str(refused)
            return None

    def get_user(self, user_id: Any) -> Any:
        return ModelBackend.get_user(self, user_id)  # an inactive account's session ends (mozilla's does not check)


class SignInView(OIDCAuthenticationRequestView):
    """`/oidc/authenticate/?next=…`: off to the provider, with state, nonce and the PKCE challenge kept in the
    session and `next` (checked to be this site's) kept for the way back."""

    def __init__(self, **kwargs: Any) -> None:
        View.__init__(self, **kwargs)  # the endpoint is resolved per request, not from a setting

    def get(self, request: HttpRequest) -> HttpResponse:
        if not settings.GATEHOUSE_OIDC:
            raise Http404("Single sign-on is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider().authorization_endpoint
        except ProviderUnavailable as exc:
            return unavailable(request, exc)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


class CallbackView(OIDCAuthenticationCallbackView):
    """`/oidc/callback/`: the provider's answer. Signed in, the session remembers how (the audit trail names it);
    refused, the person sees why."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not settings.GATEHOUSE_OIDC:
            raise Http404("Single sign-on is not configured.")
        try:
            return super().get(request)
        except ProviderUnavailable as exc:
            return unavailable(request, exc)
        except requests.RequestException as exc:
            log.warning("single sign-on: the provider's token or userinfo endpoint failed: %s", exc)
            request.session[REFUSED_SESSION_KEY] = "The identity provider did not complete the sign-in. Try again."
            return self.login_failure()

    def login_success(self) -> HttpResponse:
        response = super().login_success()
        self.request.session[SIGN_IN_SESSION_KEY] = {"method": OIDC, "issuer": settings.GATEHOUSE_OIDC_ISSUER}
        return response


def refused_view(request: HttpRequest) -> HttpResponse:
    """Where a sign-in that did not complete lands: why, in plain words, and the way back to the sign-in page."""
    reason = request.session.pop(REFUSED_SESSION_KEY, "")
    return TemplateResponse(
        request,
        "admin/sign_in_refused.html",
        {
            "title": "Not signed in",
            "reason": reason or "The sign-in did not complete. Try again.",
            **admin.site.each_context(request),
        },
        status=403 if reason else 200,
    )


def unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    return TemplateResponse(
        request,
        "admin/sign_in_refused.html",
        {
            "title": "Sign-in unavailable",
            "reason": f"The sign-in service ({settings.GATEHOUSE_OIDC_PROVIDER_NAME}) cannot be used right now: "
            f"{exc}. Try again in a minute; if it lasts, tell the administrators.",
            **admin.site.each_context(request),
        },
        status=503,
    )
