"""ASGI entry point (uvicorn, or gunicorn with uvicorn workers)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
application = get_asgi_application()

from governance.startup import check_at_start  # noqa: E402 - needs the apps loaded

check_at_start()
