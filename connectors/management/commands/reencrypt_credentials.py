"""Re-encrypt every vaulted credential under the first key of GATEHOUSE_CREDENTIAL_KEYS."""

from django.core.management.base import BaseCommand, CommandError

from audit.choices import Channel
from connectors.credentials import CredentialUndecryptable
from connectors.services import credentials_reencrypt


class Command(BaseCommand):
    help = "Re-encrypt vaulted secrets under the newest key, so the older keys can be removed."

    def handle(self, *args, **options) -> None:
        try:
            moved = credentials_reencrypt(actor=None, channel=Channel.COMMAND)
        except CredentialUndecryptable as exc:
            raise CommandError(f"{exc} Nothing was changed.") from exc
        self.stdout.write(f"Re-encrypted {moved} credential(s) under the current key.")
