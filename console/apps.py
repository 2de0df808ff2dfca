"""The console: the people's pages that are not a model's admin, and the demo."""

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
