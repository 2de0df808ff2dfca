"""Top-level routes: the admin, the agent API, and the operations endpoints."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.defaults import page_not_found, server_error
from django.views.generic import RedirectView

from console import health, metrics, slack
from core.problems import problem_response
from gatehouse import oidc

admin.site.site_header = "Gatehouse"
admin.site.site_title = "Gatehouse"
admin.site.index_title = "Governance"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # Single sign-on (gatehouse/oidc.py): 404 unless GATEHOUSE_OIDC_ISSUER is set. The provider knows the callback as
    # <GATEHOUSE_BASE_URL>/oidc/callback/.
    path("oidc/authenticate/", oidc.SignInView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", oidc.CallbackView.as_view(), name="oidc_authentication_callback"),
    path("oidc/refused/", oidc.refused_view, name="oidc_refused"),
    path("api/v1/", include("agents.rest.urls")),
    # Operations: no login, no agent token, no throttle (governance/health.py, governance/metrics.py).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    # Approvals from Slack: Slack's interaction payloads, verified by their signature (console/slack.py).
    path("integrations/slack/interactions", slack.interactions, name="slack_interactions"),
]


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return problem_response(status=404, code="not_found", title="Not found", detail="No such endpoint.")
    return page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return problem_response(
            status=500, code="internal_error", title="Internal error", detail="Gatehouse failed; the error is logged."
        )
    return server_error(request)
