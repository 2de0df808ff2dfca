"""Revoke every token of an agent."""

from django.core.management.base import BaseCommand, CommandError

from audit.choices import Channel
from governance.models import Agent
from governance.services import agent_tokens_revoke


class Command(BaseCommand):
    help = "Revoke all of AGENT's tokens; its next call is refused with 401."

    def add_arguments(self, parser) -> None:
        parser.add_argument("agent", help="The agent's slug.")
        parser.add_argument("--reason", default="", help="Why (kept in the audit trail).")

    def handle(self, *args, **options) -> None:
        agent = Agent.objects.filter(slug=options["agent"]).first()
        if agent is None:
            raise CommandError(f"No agent {options['agent']!r}.")
        count = agent_tokens_revoke(agent=agent, channel=Channel.COMMAND, reason=options["reason"])
        self.stdout.write(f"Revoked {count} token(s) of {agent.slug}.")
