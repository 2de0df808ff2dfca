"""Check the audit trail's hash chain; exit 1 at the first break."""

from django.core.management.base import BaseCommand, CommandError

from audit.integrity import verify_chain


class Command(BaseCommand):
    help = "Verify the audit hash chain; exits 1 and names the first broken event when it does not hold."

    def handle(self, *args, **options) -> None:
        report = verify_chain()
        if not report.ok:
            raise CommandError(
                f"Audit chain broken after {report.checked} good event(s): {report.reason}.", returncode=1
            )
        self.stdout.write(f"Audit chain intact: {report.checked} event(s).")
