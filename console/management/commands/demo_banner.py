"""Print what a newcomer needs once `make run` is up: where to go, who signs in for what, an agent token.

`make run` runs it last (the Procfile's `demo` process, after the demo agent's story) with --wait: it first waits
until the web process, a Celery worker and the sample CRMs answer, so that the banner ends the start-up output
instead of scrolling away under it. The token is issued here and the passwords are read from var/demo-users.json
(`seed_demo --quiet` prints none): each is printed once, and neither passes through a command line or the environment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

import httpx
from celery import current_app
from django.conf import settings
from django.core.management.base import BaseCommand

from audit.choices import Channel
from console.demo import DEMO_JOBS, demo_passwords
from governance.models import Agent, System
from governance.services import agent_token_issue

RULE = "=" * 78


def _http_answers(url: str) -> Callable[[], bool]:
    def answers() -> bool:
        try:
            httpx.get(url, timeout=2)
        except httpx.HTTPError:
            return False
        return True

    return answers


def _ready(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


def _worker_answers() -> bool:
    try:
        return bool(current_app.control.ping(timeout=1.0, limit=1))
    except Exception:  # the broker itself is not there yet: the same as no answer
        return False


def stack_checks(web_url: str) -> dict[str, Callable[[], bool]]:
    """What must answer before the banner is worth reading: name → a check that is true once it does."""
    checks = {"web": _ready(f"{web_url}/readyz"), "worker": _worker_answers}
    for system in System.objects.filter(slug__in=["crm", "crm-staging"]).order_by("slug"):
        base_url = str(system.connector_config.get("base_url", "")).rstrip("/")
        if base_url:
            checks[f"{system.slug} ({base_url})"] = _http_answers(f"{base_url}/_health")
    return checks


def wait_for(checks: dict[str, Callable[[], bool]], seconds: float) -> list[str]:
    """Poll the checks until all pass or `seconds` are up; the names of those still not answering."""
    deadline = time.monotonic() + seconds
    waiting = list(checks)
    while True:
        waiting = [name for name in waiting if not checks[name]()]
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(1)


class Command(BaseCommand):
    help = (
        "Print the admin URL, each demo user's password and job, and a fresh token for collections-agent "
        "(with --wait, once the web process, a worker and the sample CRMs answer)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--web-url", default=settings.BASE_URL, help="Where Gatehouse serves (GATEHOUSE_BASE_URL).")
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            metavar="SECONDS",
            help="First wait, at most this long, until web, worker and the sample CRMs answer.",
        )

    def handle(self, *args, **options) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # the checks' own requests are not news
        url = options["web_url"].rstrip("/")
        silent = wait_for(stack_checks(url), options["wait"]) if options["wait"] else []
        agent = Agent.objects.get(slug="collections-agent")
        _, token = agent_token_issue(
            agent=agent, channel=Channel.COMMAND, expires_in=timedelta(days=7), label="make run"
        )
        passwords = demo_passwords()
        if silent:
            state = f"Not answering after {options['wait']:g} s: {', '.join(silent)}."
        elif options["wait"]:
            state = "web, worker and the sample CRMs answer."
        else:
            state = ""
        lines = [
            "",
            RULE,
            f"Gatehouse demo{': ' + state if state else ''}",
            f"  Admin:        {url}/admin/",
            f"  Agent API:    {url}/api/v1/   (docs: {url}/api/v1/docs/)",
            "  Sign in as (username, password: their job in the demo):",
            *(
                f"    {username:<9} {password:<17} {DEMO_JOBS.get(username, '')}".rstrip()
                for username, password in passwords.items()
            ),
            "  Token for collections-agent (valid 7 days, shown once):",
            f"    {token}",
            "  Try it:",
            f'    curl -H "Authorization: Bearer {token}" {url}/api/v1/me',
            RULE,
            "",
        ]
        self.stdout.write("\n".join(lines))
