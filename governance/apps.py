"""App configuration."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_roles(sender, **kwargs) -> None:
    from governance.roles import ensure_roles  # imports the auth models: not before the apps are loaded

    ensure_roles()


class GovernanceConfig(AppConfig):
    name = "governance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Role groups are setup data, not business flow: every fresh database gets them after migrating.
        post_migrate.connect(_ensure_roles, sender=self, dispatch_uid="gatehouse-ensure-roles")
