"""Rotate a system's vaulted secret (or an agent's own at it): the new one is read from stdin, checked against the
system, then stored."""

from __future__ import annotations

import getpass
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from audit.choices import Channel
from connectors.services import credential_rotate
from governance.models import Agent, System


class Command(BaseCommand):
    help = (
        "Rotate SYSTEM's credential. The new secret is read from stdin (piped, or typed without echo at a terminal), "
        "never from the command line; the system's health check runs with it. Exit status 1 when the check fails."
    )
    stealth_options = ("stdin",)  # call_command(..., stdin=StringIO(...)) in tests

    def add_arguments(self, parser) -> None:
        parser.add_argument("system", help="The system's slug, e.g. crm.")
        parser.add_argument("--agent", help="Rotate this agent's own credential at the system, not the shared one.")
        parser.add_argument("--reason", default="", help="Why (kept in the audit trail; the secret never is).")

    def handle(self, *args, **options) -> None:
        system = System.objects.filter(slug=options["system"]).first()
        if system is None:
            raise CommandError(f"No system {options['system']!r}.")
        agent = None
        if options.get("agent"):
            agent = Agent.objects.filter(slug=options["agent"]).first()
            if agent is None:
                raise CommandError(f"No agent {options['agent']!r}.")
        secret = self._read_secret(options.get("stdin") or sys.stdin, system)
        try:
            rotation = credential_rotate(
                system=system,
                new_secret=secret,
                actor=None,
                channel=Channel.COMMAND,
                agent=agent,
                reason=options["reason"],
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        what = f"credential of {system.slug}" if agent is None else f"credential of {agent.slug} at {system.slug}"
        if rotation.health.ok:
            self.stdout.write(
                f"Rotated the {what} (vault key {rotation.credential.key_fingerprint}). "
                "Health check with the new secret: ok."
            )
            return
        if rotation.stored:
            raise CommandError(
                f"Rotated the {what}, but the health check with the new secret FAILED: "
                f"{rotation.health.reason}. The previous secret fails too, so the new one is kept; the owner and "
                "on-call were told."
            )
        raise CommandError(
            f"Not rotated: the health check of {system.slug} with the new secret FAILED: {rotation.health.reason}. "
            "The system still accepts the current secret, so nothing was changed; the owner was told."
        )

    def _read_secret(self, stream, system: System) -> str:
        if stream.isatty():
            secret = getpass.getpass(f"New secret for {system.slug} (not echoed): ")
        else:
            secret = stream.readline()
            if stream.read().strip():
                raise CommandError("The secret must be a single line on stdin.")
        secret = secret.removesuffix("\n").removesuffix("\r")
        if not secret:
            raise CommandError(
                "No secret on stdin: pipe the new secret in, e.g. `manage.py rotate_credential crm < new-secret.txt`."
            )
        return secret
