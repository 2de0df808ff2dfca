"""The admin site: Django's own, with a home page that shows each person their work (console/dashboard/).

Installed as the default site through `gatehouse.apps.GatehouseAdminConfig` (in INSTALLED_APPS instead of
"django.contrib.admin"), so `admin.site`, `@admin.register` and every ModelAdmin keep working unchanged. Django imports
this module once the apps are loaded (when the admin app is ready), so it may import models and the console.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.admin import AdminSite
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path

from console import blast_radius, mine, timeline
from console.dashboard import dashboard_for
from gatehouse.middleware import SIGN_IN_SESSION_KEY
from governance.sign_in import PASSWORD, person_sign_in_password


class GatehouseAdminSite(AdminSite):
    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        return super().index(request, {"dashboard": dashboard_for(request.user), **(extra_context or {})})

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        """Django's sign-in page, with the identity provider's button when single sign-on is configured.

        Without local passwords the page shows only that button and a password POST is refused before any password is
        checked. With them, django-axes' lockout applies as before, and each password sign-in is audited and its
        method kept in the session (for the trail of what the person then does)."""
        context = {
            "local_passwords": settings.GATEHOUSE_LOCAL_PASSWORDS,
            "sso_provider_name": settings.GATEHOUSE_OIDC_PROVIDER_NAME if settings.GATEHOUSE_OIDC else "",
            **(extra_context or {}),
        }
        if request.method == "POST" and not settings.GATEHOUSE_LOCAL_PASSWORDS:
            return TemplateResponse(
                request,
                "admin/sign_in_refused.html",
                {
                    **self.each_context(request),
                    "title": "Passwords are switched off",
                    "reason": "Gatehouse does not take passwords here: sign in with "
                    f"{settings.GATEHOUSE_OIDC_PROVIDER_NAME}.",
                },
                status=403,
            )
        response = super().login(request, context)
        if request.method == "POST" and response.status_code == 302 and request.user.is_authenticated:
            request.session[SIGN_IN_SESSION_KEY] = {"method": PASSWORD}
            person_sign_in_password(user=request.user)
        return response

    def get_urls(self) -> list[URLPattern | URLResolver]:
        """The console's pages that live under a model's admin address (a record's timeline, a credential's blast
        radius, the approver's own page) come first, so the model admin's own `<object_id>/` patterns never swallow
        them."""
        view = self.admin_view
        pages: list[URLPattern | URLResolver] = [
            path("audit/auditevent/find/", view(timeline.find_record_view), name="audit_find_record"),
            path(
                "audit/auditevent/timeline-export/<slug:system_slug>/<path:record_id>/",
                view(timeline.timeline_export_view),
                name="audit_timeline_export",
            ),
            path(
                "audit/auditevent/agent-timeline/<slug:agent_slug>/export/",
                view(timeline.agent_timeline_export_view),
                name="audit_agent_timeline_export",
            ),
            path(
                "audit/auditevent/system-timeline/<slug:system_slug>/export/",
                view(timeline.system_timeline_export_view),
                name="audit_system_timeline_export",
            ),
            path(
                "audit/auditevent/timeline/<slug:system_slug>/<path:record_id>/",
                view(timeline.timeline_view),
                name="audit_timeline",
            ),
            path(
                "audit/auditevent/agent-timeline/<slug:agent_slug>/",
                view(timeline.agent_timeline_view),
                name="audit_agent_timeline",
            ),
            path(
                "audit/auditevent/system-timeline/<slug:system_slug>/",
                view(timeline.system_timeline_view),
                name="audit_system_timeline",
            ),
            path("approvals/mine/", view(mine.mine_view), name="approvals_mine"),  # the approver's own page
            path(
                "connectors/credential/blast-radius/<slug:system>/",
                view(blast_radius.blast_radius_view),
                name="connectors_credential_blast_radius",
            ),
        ]
        return pages + super().get_urls()
