"""WSGI entry point (gunicorn with sync workers)."""

import os

from django.core.wsgi import get_wsgi_application

from gatehouse.tracing import tracing_start

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")
tracing_start("web")  # in each gunicorn worker, after the fork; before Django loads its middleware
application = get_wsgi_application()

from gatehouse.startup import check_at_start  # noqa: E402 - needs the apps loaded

check_at_start()
