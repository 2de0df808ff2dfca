"""The credential vault: secrets encrypted at rest with MultiFernet; keys come from the environment only.

The first key encrypts; every key decrypts, so keys rotate by putting a new key first, re-encrypting
(`reencrypt_credentials`), then dropping the old key.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class CredentialUndecryptable(Exception):
    """A stored secret was encrypted with a key that is not configured (or the ciphertext was altered)."""


@lru_cache(maxsize=4)
def _vault(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("GATEHOUSE_CREDENTIAL_KEYS is empty: the vault has no key.")
    return MultiFernet([Fernet(key) for key in keys])


def vault() -> MultiFernet:
    return _vault(tuple(settings.GATEHOUSE_CREDENTIAL_KEYS))


def encrypt(secret: str) -> str:
    return vault().encrypt(secret.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return vault().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise CredentialUndecryptable(
            "A credential cannot be decrypted with the configured GATEHOUSE_CREDENTIAL_KEYS: "
            "was a key removed before re-encrypting?"
        ) from exc


def reencrypt(ciphertext: str) -> str:
    """The same secret under the current first key (MultiFernet.rotate)."""
    try:
        return vault().rotate(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise CredentialUndecryptable("A credential cannot be re-encrypted: no configured key decrypts it.") from exc


def primary_key_fingerprint() -> str:
    """Which key encrypts now, without revealing it."""
    import hashlib

    return hashlib.sha256(settings.GATEHOUSE_CREDENTIAL_KEYS[0].encode()).hexdigest()[:12]
