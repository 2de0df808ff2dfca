"""Gatehouse: the Django project and the inventory app (systems, agents, grants, actions, threshold rules)."""

from governance.celery import app as celery_app

__all__ = ("celery_app",)
