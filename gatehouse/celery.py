"""The Celery application; configuration comes from Django settings (CELERY_*)."""

import os

from celery import Celery
from celery.signals import setup_logging, worker_init

from core.logs import log_format

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")

app = Celery("gatehouse")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _check_at_start(**kwargs) -> None:
    from gatehouse.startup import check_at_start  # needs the apps loaded: this module is imported by the settings

    check_at_start()


if log_format() == "json":

    @setup_logging.connect
    def _log_as_django_does(**kwargs) -> None:
        """JSON lines from workers and beat too: with a receiver here Celery leaves logging alone, and Django's LOGGING
        (JsonFormatter, which adds the task id) stays in force. The plain format keeps Celery's own layout."""
        from logging.config import dictConfig

        from django.conf import settings

        dictConfig(settings.LOGGING)
