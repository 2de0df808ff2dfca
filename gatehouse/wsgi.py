"""WSGI entry point (gunicorn with sync workers)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")
application = get_wsgi_application()

from gatehouse.startup import check_at_start  # noqa: E402 - needs the apps loaded

check_at_start()
