"""The Celery application; configuration comes from Django settings (CELERY_*)."""

import os

from celery import Celery
from celery.signals import beat_init, setup_logging, task_postrun, task_prerun, worker_init, worker_process_init

from core.logs import log_format
from gatehouse.tracing import tracing_start

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")

app = Celery("gatehouse")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _keep_database_connection(sender=None, **kwargs) -> None:
    """Each task is to the worker what a request is to the web: its database connection is kept between tasks and
    dropped only when broken or older than CONN_MAX_AGE, checked as Django checks it around a request. Celery's own
    handlers would close it before and after every task (CELERY_DB_REUSE_MAX keeps them off), and a new PostgreSQL
    connection for each task cost more than the task's own queries (issue 18)."""
    if sender is not None and getattr(sender.request, "is_eager", False):
        return  # run inside the caller (tests, GATEHOUSE_TASKS_EAGER): its connection and transaction are its own
    from django.db import close_old_connections

    close_old_connections()


@worker_init.connect
def _check_at_start(**kwargs) -> None:
    from gatehouse.startup import check_at_start  # needs the apps loaded: this module is imported by the settings

    check_at_start()
    _trace_in_place(kwargs.get("sender"))


def _trace_in_place(worker) -> None:
    """A worker whose pool runs tasks in its own process (solo, threads) traces there; a prefork worker's tasks run in
    its pool's processes, which start tracing each after its fork (`_trace_pool_process`): the SDK's export thread
    and connection are the process's own."""
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    pool = get_implementation(getattr(worker, "pool_cls", None) or app.conf.worker_pool)  # as the worker resolves it
    if not (isinstance(pool, type) and issubclass(pool, TaskPool)):
        tracing_start("worker")


@worker_process_init.connect
def _trace_pool_process(**kwargs) -> None:
    tracing_start("worker")


@beat_init.connect
def _trace_beat(**kwargs) -> None:
    tracing_start("beat")


if log_format() == "json":

    @setup_logging.connect
    def _log_as_django_does(**kwargs) -> None:
        """JSON lines from workers and beat too: with a receiver here Celery leaves logging alone, and Django's LOGGING
        (JsonFormatter, which adds the task id) stays in force. The plain format keeps Celery's own layout."""
        from logging.config import dictConfig

        from django.conf import settings

        dictConfig(settings.LOGGING)
