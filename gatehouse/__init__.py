"""The project shell: settings, URLs, the ASGI/WSGI entry points, the Celery app, system checks, middleware."""

from gatehouse.celery import app as celery_app

__all__ = ("celery_app",)
