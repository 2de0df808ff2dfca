"""Print what a newcomer needs after `make run` starts: where to go, who to sign in as, an agent token."""

from datetime import timedelta

from django.core.management.base import BaseCommand

from audit.choices import Channel
from console.demo import demo_passwords
from governance.models import Agent
from governance.services import agent_token_issue


class Command(BaseCommand):
    help = "Print the admin URL, the demo users' passwords and a fresh token for collections-agent."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--web-url", default="http://127.0.0.1:8000")

    def handle(self, *args, **options) -> None:
        url = options["web_url"].rstrip("/")
        agent = Agent.objects.get(slug="collections-agent")
        _, token = agent_token_issue(
            agent=agent, channel=Channel.COMMAND, expires_in=timedelta(days=7), label="make run"
        )
        lines = [
            "",
            "=" * 78,
            "Gatehouse demo",
            f"  Admin:        {url}/admin/",
            f"  Agent API:    {url}/api/v1/   (docs: {url}/api/v1/docs/)",
            "  Demo users (username / password):",
            *(f"    {username:<10} {password}" for username, password in demo_passwords().items()),
            "  Token for collections-agent (valid 7 days, shown once):",
            f"    {token}",
            "  Try it:",
            f'    curl -H "Authorization: Bearer {token}" {url}/api/v1/me',
            "=" * 78,
            "",
        ]
        self.stdout.write("\n".join(lines))
