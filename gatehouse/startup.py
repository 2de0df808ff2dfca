"""Checks run when a Gatehouse process starts, so misconfiguration stops it at once instead of at first use."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from connectors.services import credentials_check_decryptable
from governance.choices import Role
from governance.sign_in import role_map_problems


def check_at_start() -> None:
    """Raise ImproperlyConfigured when a stored credential cannot be decrypted with the configured keys, or when the
    single sign-on role map names a role Gatehouse does not have (a misspelt role would grant nothing, silently)."""
    credentials_check_decryptable()
    unknown = role_map_problems(settings.GATEHOUSE_OIDC_ROLE_MAP)
    if unknown:
        raise ImproperlyConfigured(
            f"GATEHOUSE_OIDC_ROLE_MAP names roles Gatehouse does not have: {', '.join(unknown)}. "
            f"The roles are: {', '.join(Role.values)}."
        )
