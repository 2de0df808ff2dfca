"""The admin site: Django's own, with a home page that shows each person their work (governance/dashboard.py).

Installed as the default site through `GatehouseAdminConfig` (in INSTALLED_APPS instead of "django.contrib.admin"), so
`admin.site`, `@admin.register` and every ModelAdmin keep working unchanged.
"""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.template.response import TemplateResponse


class GatehouseAdminSite(AdminSite):
    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        from console.dashboard import dashboard_for

        return super().index(request, {"dashboard": dashboard_for(request.user), **(extra_context or {})})


class GatehouseAdminConfig(AdminConfig):
    default_site = "gatehouse.admin_site.GatehouseAdminSite"
