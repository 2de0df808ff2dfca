"""Send parked webhook deliveries again (the admin's "Replay" action, from the shell)."""

from django.core.management.base import BaseCommand, CommandError

from audit.choices import Channel
from webhooks.choices import DeliveryStatus
from webhooks.models import Delivery
from webhooks.services import deliveries_replay


class Command(BaseCommand):
    help = (
        "Replay parked webhook deliveries: the ones named, or every parked one (--all), optionally of one subscription."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="delivery ids")
        parser.add_argument("--all", action="store_true", help="every parked delivery")
        parser.add_argument("--subscription", type=int, help="with --all: only this subscription's")

    def handle(self, *args, **options) -> None:
        ids = list(options["ids"])
        if options["all"]:
            parked = Delivery.objects.filter(status=DeliveryStatus.PARKED)
            if options["subscription"]:
                parked = parked.filter(subscription_id=options["subscription"])
            ids += list(parked.values_list("pk", flat=True))
        elif not ids:
            raise CommandError("Name delivery ids, or --all.")
        result = deliveries_replay(delivery_ids=ids, actor=None, channel=Channel.COMMAND)
        self.stdout.write(f"Replayed {len(result.replayed)} delivery(ies); {result.skipped} not parked, left alone.")
