"""Create (or bring up to date) the demo inventory; safe to run any number of times."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from console.demo import seed_demo


class Command(BaseCommand):
    help = (
        "Create the demo inventory of CONTRACT.md (idempotent), say where the sample systems point and print the demo "
        "users' passwords. The sample CRMs' URLs come from GATEHOUSE_CRM_PORT and GATEHOUSE_CRM_STAGING_PORT; "
        "connector settings someone changed are left as they are."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--crm-url",
            help="Point the sample CRM here, whoever set it before (default: http://127.0.0.1:$GATEHOUSE_CRM_PORT "
            "for a new system; an existing one moves only as console/demo_connections.py says).",
        )
        parser.add_argument("--crm-staging-url", help="The same for its staging twin (GATEHOUSE_CRM_STAGING_PORT).")
        parser.add_argument("--reset-passwords", action="store_true", help="Give every demo user a new password.")
        parser.add_argument("--quiet", action="store_true", help="Do not print the passwords.")

    def handle(self, *args, **options) -> None:
        if settings.PRODUCTION:
            raise CommandError(
                "seed_demo makes demo users with known passwords: refused when GATEHOUSE_ENV=production."
            )
        report = seed_demo(
            crm_url=options["crm_url"],
            crm_staging_url=options["crm_staging_url"],
            reset_passwords=options["reset_passwords"],
        )
        summary = ", ".join(report.created) if report.created else "nothing new: the demo inventory was up to date"
        self.stdout.write(f"Demo inventory ready ({summary}).")
        for line in report.connections:
            self.stdout.write(f"  {line}")
        if not options["quiet"]:
            self.stdout.write("Demo users (username / password):")
            for username, password in report.passwords.items():
                self.stdout.write(f"  {username:<10} {password}")
