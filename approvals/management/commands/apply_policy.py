"""Say what a policy document would change (--plan, the default), or make the changes as a person (--apply)."""

import sys
from pathlib import Path

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from approvals.policy_apply import policy_apply, unsigned_rules
from governance.policy_document import PolicyError, export_document
from governance.policy_load import load
from governance.policy_plan import plan, plan_text


class Command(BaseCommand):
    help = (
        "Compare a policy document (from export_policy) with the inventory and print the differences in words "
        "(--plan, the default: nothing is changed). With --apply --as USERNAME --reason TEXT, make them as that "
        "person, checked as the admin checks them and audited; threshold rules it changes wait for their business "
        "owner's sign-off in the admin. Here in approvals rather than governance: applying passes the readiness gate "
        "and an agent's status is its kill switch, both approvals'."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="The policy document (YAML); - reads standard input.")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--plan", action="store_true", help="Only say what would change (the default).")
        mode.add_argument("--apply", action="store_true", help="Make the changes (needs --as and --reason).")
        parser.add_argument("--as", dest="username", help="The person making the changes, by username.")
        parser.add_argument("--reason", default="", help="Why: kept in the audit trail with every change.")
        parser.add_argument(
            "--override-readiness",
            default="",
            help="Superusers only: enable production writes although the readiness checklist fails, for this reason "
            "(audited), as the admin's override does.",
        )

    def handle(self, *args, **options) -> None:
        source = options["file"]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot read {source}: {exc.strerror}.") from None
        try:
            document = load(text)
        except PolicyError as exc:
            raise CommandError(_problems(f"{source} is not a valid policy document", exc)) from None
        if not options["apply"]:
            self.stdout.write(plan_text(plan(export_document(), document)))
            if any((options["username"], options["reason"], options["override_readiness"])):
                self.stdout.write("Nothing was changed: add --apply to make these changes.")
            return
        if not options["username"]:
            raise CommandError(
                "--apply needs --as USERNAME: the person the changes are made as (a command has no signed-in user)."
            )
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}: apply_policy never creates people.")
        try:
            changes = policy_apply(
                document=document,
                user=user,
                reason=options["reason"],
                override_readiness=options["override_readiness"],
            )
        except PolicyError as exc:
            raise CommandError(_problems("Nothing was changed", exc)) from None
        self.stdout.write(plan_text(changes))
        if changes:
            self.stdout.write(f"Applied as {user.get_username()}.")
        waiting = unsigned_rules(changes)
        if waiting:
            self.stdout.write(
                "Not in force until their business owner signs them off in the admin (Threshold rules → Sign off): "
                + ", ".join(waiting)
                + "."
            )


def _problems(lead: str, exc: PolicyError) -> str:
    return f"{lead}:\n" + "\n".join(f"- {problem}" for problem in exc.problems)
