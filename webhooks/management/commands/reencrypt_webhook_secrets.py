"""Re-encrypt every webhook subscription's signing secret under the first key of GATEHOUSE_CREDENTIAL_KEYS."""

from django.core.management.base import BaseCommand, CommandError

from audit.choices import Channel
from connectors.credentials import CredentialUndecryptable
from webhooks.services import subscription_secrets_reencrypt


class Command(BaseCommand):
    help = "Re-encrypt webhook signing secrets under the newest vault key (run with reencrypt_credentials)."

    def handle(self, *args, **options) -> None:
        try:
            moved = subscription_secrets_reencrypt(actor=None, channel=Channel.COMMAND)
        except CredentialUndecryptable as exc:
            raise CommandError(f"{exc} Nothing was changed.") from exc
        self.stdout.write(f"Re-encrypted {moved} webhook secret(s) under the current key.")
