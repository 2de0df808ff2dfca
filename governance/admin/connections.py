"""Admin for systems' connector settings: what each connector runs and where it connects.

A page of its own, so that only superusers and integrators see the settings and only through
`system_connection_set` change them: checked against the environment's allow-lists and audited with before and
after. Every other role sees a system's connector kind on the system's page, and nothing more.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from audit.choices import Channel
from core.admin import admin_user
from governance.models import SystemConnection
from governance.services import system_connection_set


@admin.register(SystemConnection)
class SystemConnectionAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "connector_kind", "integration_pattern", "environment"]
    list_filter = ["connector_kind", "environment"]
    search_fields = ["slug", "name"]
    fields = ["name", "slug", "owner", "environment", "connector_kind", "connector_config"]
    readonly_fields = ["name", "slug", "owner", "environment"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a system is added on its own page, with its first settings

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: SystemConnection, form: Any, change: bool) -> None:
        try:
            system_connection_set(
                system=obj,
                kind=form.cleaned_data["connector_kind"],
                config=form.cleaned_data["connector_config"],
                user=admin_user(request),
                channel=Channel.ADMIN,
            )
        except ValidationError as exc:  # changed meanwhile so that it no longer validates: say so, save nothing
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
