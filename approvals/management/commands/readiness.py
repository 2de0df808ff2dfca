"""Print an agent's readiness checklist; exit 1 when it fails."""

from django.core.management.base import BaseCommand, CommandError

from approvals.readiness import readiness
from governance.models import Agent


class Command(BaseCommand):
    help = "Print AGENT's readiness checklist for production writes. Exit status 1 when an item fails."

    def add_arguments(self, parser) -> None:
        parser.add_argument("agent", help="The agent's slug.")

    def handle(self, *args, **options) -> None:
        agent = Agent.objects.filter(slug=options["agent"]).first()
        if agent is None:
            raise CommandError(f"No agent {options['agent']!r}.")
        checklist = readiness(agent)
        for item in checklist.items:
            self.stdout.write(f"[{'ok' if item.ok else 'FAIL':>4}] {item.label}: {item.reason}")
        if checklist.ok:
            self.stdout.write(f"{agent.slug} is ready for production writes.")
            return
        self.stdout.write(f"{agent.slug} is NOT ready: {len(checklist.failing)} item(s) fail.")
        raise SystemExit(1)
