"""Checks run when a Gatehouse process starts, so misconfiguration stops it at once instead of at first use."""

from __future__ import annotations

from connectors.services import credentials_check_decryptable


def check_at_start() -> None:
    """Raise ImproperlyConfigured when a stored credential cannot be decrypted with the configured keys."""
    credentials_check_decryptable()
