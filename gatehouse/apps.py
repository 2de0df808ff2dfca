"""The project shell as apps: its system checks, and the admin with Gatehouse's own site."""

from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig

from gatehouse.tracing import tracing_apps_ready


class GatehouseConfig(AppConfig):
    name = "gatehouse"

    def ready(self) -> None:
        from gatehouse import checks  # noqa: F401 - registers the system checks (Django's documented place for this)

        tracing_apps_ready()  # with tracing on, the task modules known here too (gatehouse/tracing.py)


class GatehouseAdminConfig(AdminConfig):
    """django.contrib.admin with the role dashboard as its home page; the site class is imported once apps are ready."""

    default_site = "gatehouse.admin_site.GatehouseAdminSite"
