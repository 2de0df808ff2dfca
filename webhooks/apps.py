"""App configuration."""

from django.apps import AppConfig

from audit import followers


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from webhooks.outbox import FOLLOWER  # imports the models: only once the apps are ready

        # The trail hands each event it wants to the outbox, in the event's transaction (audit/followers.py).
        followers.register(FOLLOWER)
