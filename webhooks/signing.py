"""Signing secrets and signatures, by the Standard Webhooks library (standardwebhooks) rather than our own HMAC.

A secret is `whsec_` followed by the base64 of random bytes (the library strips the prefix and decodes the rest;
the specification asks for 24 to 64 bytes). The signature is `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`; several
are sent space-separated, which is how a receiver keeps verifying during a rotation.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_BYTES, MAX_BYTES = 24, 64


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_error(secret: str) -> str | None:
    """None when `secret` is a usable Standard Webhooks secret; else what is wrong, without quoting it."""
    if not secret.startswith(PREFIX):
        return f"A webhook secret starts with {PREFIX} (Standard Webhooks), followed by base64."
    try:
        raw = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return "A webhook secret is whsec_ followed by base64 (A–Z, a–z, 0–9, +, /, = padding)."
    if not MIN_BYTES <= len(raw) <= MAX_BYTES:
        return f"A webhook secret holds {MIN_BYTES} to {MAX_BYTES} random bytes once decoded (this one {len(raw)})."
    return None


def headers(*, message_id: str, body: str, secrets_in_use: list[str], at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt, signed with each secret in use (newest first).

    `at` must be aware: the library reads it as UTC by replacing its zone, so it is converted here first.
    """
    moment = at.astimezone(UTC)
    signatures = [Webhook(secret).sign(message_id, moment, body) for secret in secrets_in_use]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
