"""Checks every connector kind's settings parser shares: a JSON object of known keys, http(s) addresses, seconds.

Each kind (`connectors/<kind>/config.py`) parses its own settings when the system is saved and again when a connector
is built; these helpers keep the common checks, and their messages, the same for all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, overload
from urllib.parse import urlparse

from django.core.exceptions import ValidationError

from connectors.hosts import host_refusal


def settings_object(
    raw: Any,
    allowed: Iterable[str],
    *,
    where: str = "connector",
    list_known: bool = False,
    not_object: str = "",
) -> dict:
    """`raw` itself, once it is a JSON object naming only `allowed` keys.

    `where` names the settings in the messages ("connector" settings, an "operation"'s); `list_known` adds the keys
    that are allowed to the unknown-key message; `not_object`, when given, replaces the not-an-object message with one
    that shows what to write instead.
    """
    if not isinstance(raw, dict):
        raise ValidationError(not_object or f"{where[:1].upper()}{where[1:]} settings must be a JSON object.")
    allowed = set(allowed)
    unknown = set(raw) - allowed
    if unknown:
        message = f"Unknown {where} setting(s): {', '.join(sorted(unknown))}."
        if list_known:
            message += f" Known: {', '.join(sorted(allowed))}."
        raise ValidationError(message)
    return raw


@overload
def http_url(raw: dict, key: str, *, invalid: str, required: Literal[True] = True) -> str: ...
@overload
def http_url(raw: dict, key: str, *, invalid: str, required: bool) -> str | None: ...
def http_url(raw: dict, key: str, *, invalid: str, required: bool = True) -> str | None:
    """The http(s) address under `key` (None when absent and not required); `invalid` says what to set instead.

    A value that is no string at all (a number, a list) gets the same message as a malformed address. The host must
    be one Gatehouse may connect to (connectors/hosts.py): it receives the system's vaulted credential. Addresses
    with a user name or password in them are refused: the credential lives in the vault, not in settings.
    """
    value = raw.get(key)
    if value is None and not required:
        return None
    parsed = urlparse(value if isinstance(value, str) else "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc or not parsed.hostname:
        raise ValidationError(invalid)
    if parsed.username is not None or parsed.password is not None:
        raise ValidationError(f'"{key}" must not carry a user name or password: put the secret in the vault.')
    try:
        port = parsed.port
    except ValueError:
        raise ValidationError(invalid) from None
    refusal = host_refusal(parsed.hostname, port)
    if refusal:
        raise ValidationError(f'"{key}": {refusal}')
    return value


def seconds(raw: dict, key: str, default: float, *, maximum: float) -> float:
    """A duration in seconds under `key`: a number above 0 and at most `maximum` (JSON true is no number)."""
    value = raw.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= maximum:
        raise ValidationError(f'"{key}" must be a number of seconds between 0 and {maximum:g}.')
    return float(value)
