"""The project shell as an app, so its system checks are registered wherever Django starts."""

from django.apps import AppConfig


class GatehouseConfig(AppConfig):
    name = "gatehouse"

    def ready(self) -> None:
        from gatehouse import checks  # noqa: F401 - registers the system checks (Django's documented place for this)
