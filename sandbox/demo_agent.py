"""The demo agent: collections-agent drives the sample CRM through Gatehouse with `gatehouse_client`, and says so.

It is an agent like any other: it holds a Gatehouse token and nothing else (no CRM credential, no database), and
only calls the agent API. The one thing it does outside the API is play the legacy warehouse system for a moment:
it drops that system's nightly export into the drop folder, as the real system would, and later reads the rows
back as events through the API once Gatehouse has polled the folder.

    python manage.py issue_token collections-agent --expires-days 1 | python -m sandbox.demo_agent --token-stdin

`make demo-agent` runs it against a running `make run`; `make run` runs it once at start-up (the Procfile's
`demo`, which then prints the banner and idles: honcho stops every process when one exits). Run again, it tells the
same story from where the CRM stands: the small raise is computed from the current limit, and a raise still waiting
for a person is reported rather than proposed a second time.

Without --base-url it calls GATEHOUSE_WEB_PORT when set, else where `make run` recorded that it serves
(var/demo-run.json), else port 8000; whatever fails is told with the URL it called.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from gatehouse_client import ConnectionFailed, GatehouseClient, GatehouseError, Proposal, Unavailable

ACCOUNT, OTHER_ACCOUNT = "4471", "4472"
SMALL, MEDIUM, LARGE = Decimal(300), Decimal(3000), Decimal(6000)  # auto (< 500), one approver, dual (> 5,000)
# The legacy warehouse system's export: its own column names (the demo mapping in governance/demo.py).
EXPORT_HEADER = "ITEM_NO,WHSE,QTY_ON_HAND,AS_OF"
EXPORT_ITEMS = [("A-100", "EAST"), ("A-100", "WEST"), ("B-220", "EAST")]

Say = Callable[[str], None]


def _say(line: str) -> None:
    print(line, flush=True)


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _limit(record_data: dict) -> Decimal:
    return Decimal(str(record_data["credit_limit"]))


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "no deadline"


def drop_export(folder: Path, today: str) -> tuple[str, int]:
    """Write today's export as the warehouse system would: under a partial name, then renamed into place.

    Its content is fixed for the day, so a second run drops an identical file, which Gatehouse recognises as a
    copy (no new events) instead of quarantining rows that contradict the first. Dated a minute back: an export
    written overnight, past the folder's settle time, so the next poll takes it."""
    quantities = [(int(today.replace("-", "")) * (n + 7)) % 50 for n in range(len(EXPORT_ITEMS))]
    rows = [f"{sku},{where},{qty},{today}" for (sku, where), qty in zip(EXPORT_ITEMS, quantities, strict=True)]
    name = f"inventory-{today.replace('-', '')}.csv"
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{name}.part"
    partial.write_text("\n".join([EXPORT_HEADER, *rows]) + "\n")
    then = time.time() - 60
    os.utime(partial, (then, then))
    partial.replace(folder / name)
    return name, len(rows)


def _pending(gatehouse: GatehouseClient, record_id: str, mode: str, *, besides: str = "") -> Proposal | None:
    """This agent's credit-limit raise on the record still waiting for a person in `mode`, if there is one (not the
    proposal `besides`: this run's small raise, which waits too when an earlier run's raises add up with it)."""
    for status in ("pending_approval", "escalated"):
        for proposal in gatehouse.proposals(status, limit=200):
            if proposal.id != besides and (
                proposal.system,
                proposal.action,
                proposal.record_id,
                proposal.decision.mode,
            ) == (
                "crm",
                "update_credit_limit",
                record_id,
                mode,
            ):
                return proposal
    return None


def wait_until_answering(gatehouse: GatehouseClient, timeout: float, say: Say) -> None:
    """Poll /api/v1/me until Gatehouse answers (bounded): under `make run` the web process starts beside us."""
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            gatehouse.me()
            return
        except (ConnectionFailed, Unavailable):
            if time.monotonic() > deadline:
                raise
            if not told:
                say(f"Demo agent: waiting for Gatehouse at {gatehouse.base_url} to answer…")
                told = True
            time.sleep(1)


def main(
    base_url: str,
    token: str,
    *,
    drop_folder: Path | None = None,
    say: Say = _say,
    wait_for_web: float = 0,
    decision_timeout: float = 60,
    events_timeout: float = 90,
    poll_now: Callable[[], object] | None = None,
) -> int:
    """Tell the story; 0 when it was told to the end, 1 when Gatehouse answered something it did not expect.

    `poll_now`, when given, is called while waiting for the export to become events: a test has no Celery beat
    polling the drop folder every 10 s, so it stands in for it.
    """
    admin = f"{base_url.rstrip('/')}/admin"
    with GatehouseClient(base_url, token, timeout=15) as gatehouse:
        try:
            if wait_for_web:
                wait_until_answering(gatehouse, wait_for_web, say)
            _story(gatehouse, admin, drop_folder, say, decision_timeout, events_timeout, poll_now)
        except ConnectionFailed as exc:
            say(f"Demo agent: stopped: {exc} (is `make run` running there?)")
            return 1
        except GatehouseError as exc:
            say(f"Demo agent: stopped: {exc}")
            return 1
    say("Demo agent: finished. Where to look in the admin (sign in as approver to decide, as auditor to read):")
    say(f"  approval queue         {admin}/approvals/proposal/")
    say(f"  account {ACCOUNT} timeline  {admin}/audit/auditevent/timeline/crm/{ACCOUNT}/")
    say(f"  refusals               {admin}/audit/auditevent/?verb__exact=denied")
    say(f"  legacy batch files     {admin}/connectors/batchfile/")
    return 0


def _story(
    gatehouse: GatehouseClient,
    admin: str,
    drop_folder: Path | None,
    say: Say,
    decision_timeout: float,
    events_timeout: float,
    poll_now: Callable[[], object] | None,
) -> None:
    me = gatehouse.me()
    say(
        f"Demo agent: {me.slug} ({me.status}) works through Gatehouse at {gatehouse.base_url}; "
        "it holds a Gatehouse token, no CRM credential."
    )

    # 0. The legacy system's nightly export lands first: Gatehouse polls the folder while the agent works.
    today = datetime.now(UTC).date().isoformat()
    if drop_folder is not None:
        name, rows = drop_export(drop_folder, today)
        say(f"  0. The legacy warehouse system drops its nightly export {name} ({rows} rows) in its drop folder.")

    # 1. A governed read: only the granted fields come back.
    account = gatehouse.read("crm", "accounts", ACCOUNT)
    hidden = "" if "email" in account.data else " No email: its grant leaves that field out."
    say(
        f"  1. Read crm account {ACCOUNT} ({account.data.get('name')}): credit limit "
        f"{_money(_limit(account.data))} USD, status {account.data.get('status')}.{hidden}"
    )

    # 2. A small raise: below 500 USD the signed-off rule executes it without a person.
    before = _limit(account.data)
    key = str(uuid.uuid4())
    payload = {"credit_limit": f"{before + SMALL:.2f}"}
    reason = "Paid on time for 12 months."
    proposal = gatehouse.propose("crm", "update_credit_limit", ACCOUNT, payload, reason, idempotency_key=key)
    if not proposal.awaiting_decision:  # executed by rule, or on its way there; a person's decision is not waited for
        try:
            proposal = gatehouse.wait_for_decision(proposal.id, timeout=decision_timeout, poll=0.5)
        except TimeoutError:
            proposal = gatehouse.proposal(proposal.id)
    after = _limit(gatehouse.read("crm", "accounts", ACCOUNT).data)
    if proposal.status == "executed":
        outcome = f"executed by rule (auto band); the CRM now says {_money(after)}"
    else:
        # E.g. a second run within 24 h: the rule adds up the agent's raises of this account, and a person decides.
        why = f": {proposal.decision.reason}" if proposal.decision.reason else ""
        outcome = f"{proposal.status} (mode {proposal.decision.mode}{why}); the CRM still says {_money(after)}"
    say(f"  2. Proposed +{_money(SMALL)} USD ({_money(before)} → {_money(before + SMALL)}): {outcome}.")
    again = gatehouse.propose("crm", "update_credit_limit", ACCOUNT, payload, reason, idempotency_key=key)
    same = "the same proposal" if again.id == proposal.id else f"another proposal ({again.id})"
    say(
        f"     Sent again with the same Idempotency-Key: Gatehouse answered with {same}"
        f"{' (a replay)' if again.replayed else ''}; nothing was written twice."
    )

    # 3. A raise of 3,000: one named approver decides.
    medium = _pending(gatehouse, ACCOUNT, "single", besides=proposal.id)
    if medium is None:
        payload = {"credit_limit": f"{after + MEDIUM:.2f}"}
        medium = gatehouse.propose("crm", "update_credit_limit", ACCOUNT, payload, "Large order expected next month.")
        opening = f"Proposed +{_money(MEDIUM)} USD ({_money(after)} → {_money(after + MEDIUM)})"
    else:
        opening = f"Still pending from an earlier run: +{_money(medium.impact.amount or Decimal(0))} USD"
    say(
        f"  3. {opening}: {medium.status}, waiting for a decision by user '{medium.decision.approver}' "
        f"(due {_when(medium.decision.sla_due_at)}). Nothing is written until then."
    )
    say(f"     Decide it: {admin}/approvals/proposal/{medium.id}/change/")

    # 4. A raise of 6,000 on another account: above 5,000, the approver and a second reviewer.
    large = _pending(gatehouse, OTHER_ACCOUNT, "dual")
    if large is None:
        current = _limit(gatehouse.read("crm", "accounts", OTHER_ACCOUNT).data)
        payload = {"credit_limit": f"{current + LARGE:.2f}"}
        large = gatehouse.propose("crm", "update_credit_limit", OTHER_ACCOUNT, payload, "New distribution contract.")
        opening = (
            f"Proposed +{_money(LARGE)} USD on account {OTHER_ACCOUNT} ({_money(current)} → {_money(current + LARGE)})"
        )
    else:
        opening = (
            f"Still pending from an earlier run: +{_money(large.impact.amount or Decimal(0))} USD on {OTHER_ACCOUNT}"
        )
    say(
        f"  4. {opening}: {large.status}, dual approval: user '{large.decision.approver}' decides, and a second "
        f"reviewer from the '{large.decision.review_group}' group checks it."
    )

    # 5. A write outside its grants: refused, and the refusal is audited too.
    try:
        refused = gatehouse.propose("crm-staging", "update_credit_limit", ACCOUNT, {"credit_limit": "1.00"})
    except GatehouseError as exc:
        say(f"  5. Tried a write on crm-staging, where it holds no grant: refused, {exc.code}: {exc.detail}")
    else:
        say(f"  5. A write on crm-staging, where it holds no grant, was NOT refused ({refused.status}): check grants.")

    # 6. The legacy export, now events in Gatehouse's event queue, read in pages through the API.
    _read_export(gatehouse, today, say, events_timeout, poll_now)


def _read_export(
    gatehouse: GatehouseClient, today: str, say: Say, timeout: float, poll_now: Callable[[], object] | None
) -> None:
    deadline = time.monotonic() + timeout
    told = False
    while True:
        if poll_now is not None:
            poll_now()
        pages, events = 0, []
        after = None
        while True:
            page = gatehouse.events("legacy-inventory", after=after, limit=2)
            pages += 1
            events.extend(page.events)
            if len(page.events) < 2:
                break
            after = page.next_after
        todays = [event for event in events if event.data.get("as_of") == today]
        if todays:
            stock = "; ".join(
                f"{event.data['sku']} at {event.data['warehouse']}: {event.data['quantity']}" for event in todays
            )
            say(
                f"  6. Read the export back as events: {len(events)} legacy-inventory event(s) in {pages} page(s) of "
                f"2; today's ({today}): {stock}."
            )
            return
        if time.monotonic() > deadline:
            say(f"  6. The export has not been polled into events within {timeout:g} s; it will show up later.")
            return
        if not told:
            say("     (waiting for Gatehouse to poll the legacy drop folder: it does so every minute)")
            told = True
        time.sleep(2)


def default_base_url(var_dir: Path) -> str:
    """GATEHOUSE_WEB_PORT when set; else what `make run` recorded in var/demo-run.json (the Makefile writes it: this
    checkout's demo, on whatever ports it was started); else the default port."""
    port = os.environ.get("GATEHOUSE_WEB_PORT")
    if port:
        return f"http://127.0.0.1:{port}"
    try:
        return str(json.loads((var_dir / "demo-run.json").read_text())["web_url"])
    except (OSError, ValueError, KeyError, TypeError):  # no demo recorded (or a broken record): the default
        return "http://127.0.0.1:8000"


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    var_dir = Path(os.environ.get("GATEHOUSE_VAR_DIR", "var"))
    parser.add_argument(
        "--base-url",
        default=default_base_url(var_dir),
        help="Where Gatehouse serves (default: GATEHOUSE_WEB_PORT, else what `make run` recorded, else port 8000).",
    )
    parser.add_argument("--token-stdin", action="store_true", help="Read the agent's token from stdin (one line).")
    parser.add_argument(
        "--drop-folder",
        type=Path,
        default=var_dir / "legacy-inventory" / "drop",
        help="The legacy-inventory drop folder (seed_demo's, under var/).",
    )
    parser.add_argument("--wait-for-web", type=float, default=60, help="Seconds to wait for Gatehouse to answer.")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # honcho shows lines as they come

    token = sys.stdin.readline().strip() if args.token_stdin else os.environ.get("GATEHOUSE_TOKEN", "")
    if not token:
        _say("Demo agent: no token (pipe one in with --token-stdin, or set GATEHOUSE_TOKEN).")
        code = 1
    else:
        try:
            code = main(args.base_url, token, drop_folder=args.drop_folder, wait_for_web=args.wait_for_web)
        except Exception as exc:  # a bug here is told in one line, not a traceback in the middle of `make run`
            _say(f"Demo agent: stopped while calling Gatehouse at {args.base_url}: {exc!r}")
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(run())
