"""Print a new bearer token for an agent, once."""

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from audit.choices import Channel
from governance.models import Agent
from governance.services import agent_token_issue


class Command(BaseCommand):
    help = "Issue a new token for AGENT and print it (only a hash is stored; it cannot be shown again)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("agent", help="The agent's slug.")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help="Days until the token expires (default GATEHOUSE_TOKEN_DEFAULT_EXPIRY; at most "
            "GATEHOUSE_TOKEN_MAX_LIFETIME).",
        )
        parser.add_argument(
            "--networks",
            default="",
            help="Comma-separated networks the token may be used from, e.g. 10.2.0.0/16,192.0.2.7 (default: anywhere).",
        )
        parser.add_argument("--label", default="", help="What the token is for (shown in the admin).")
        parser.add_argument("--reason", default="", help="Why the agent gets a new token (kept in the audit trail).")

    def handle(self, *args, **options) -> None:
        agent = Agent.objects.filter(slug=options["agent"]).first()
        if agent is None:
            known = ", ".join(Agent.objects.values_list("slug", flat=True)) or "none yet"
            raise CommandError(f"No agent {options['agent']!r}. Known agents: {known}.")
        days = options["expires_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-days must be at least 1.")
        try:
            _, raw = agent_token_issue(
                agent=agent,
                channel=Channel.COMMAND,
                expires_in=timedelta(days=days) if days else None,
                label=options["label"] or "issue_token",
                networks=[net for net in options["networks"].split(",") if net.strip()],
                reason=options["reason"],
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(raw)
