"""App configuration."""

from django.apps import AppConfig

from governance import connections


class ConnectorsConfig(AppConfig):
    name = "connectors"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from connectors.registry import Checks  # imports the models: only once the apps are ready

        # The inventory refuses connector settings and operations no connector kind could use (see there).
        connections.register(Checks())
