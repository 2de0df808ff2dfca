"""Which connector class serves a system, with its secret taken from the vault at the moment of use."""

from __future__ import annotations

from connectors.base import Connector, PermanentError


def connector_for(system) -> Connector:
    """A connector for `system`; the secret is decrypted here and lives only inside the connector object."""
    from connectors.http.connector import HttpConnector

    kinds: dict[str, type[Connector]] = {"http": HttpConnector}
    try:
        cls = kinds[system.connector_kind]
    except KeyError:
        raise PermanentError(f"No connector for kind {system.connector_kind!r} yet.") from None
    credential = getattr(system, "credential", None) if system.pk else None
    secret = credential.reveal() if credential is not None else None
    return cls(system, secret)
