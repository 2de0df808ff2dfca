"""Governance overhead, measured in one run against the targets of PERFORMANCE.md.

    .venv/bin/python -m bench.governance_overhead            # embedded default (SQLite, filesystem broker)
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/x REDIS_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python -m bench.governance_overhead        # PostgreSQL + Redis (uses database gatehouse_bench)

Starts the sample CRM, Gatehouse under gunicorn (2 sync workers) and, for the auto band, a Celery worker
(prefork, 2), all on this machine's cores, and prints:
  - governed read of account 4471 vs the same read straight from the CRM: p50/p99 (1 client), rate (16 clients);
  - proposal POST rate vs the DRF empty-view rate and a bare two-row insert rate on the same database;
  - the auto band end to end: proposals POSTed until executed in the CRM, with nothing lost or doubled.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.environment import prepare_environment  # noqa: E402 - after the path


def _fmt(run) -> str:
    errors = f", errors {run.errors}" if run.errors else ""
    return f"{run.rate:8.0f}/s  p50 {run.p50:6.2f} ms  p99 {run.percentile(99):6.2f} ms  (n={run.count}{errors})"


def bare_two_row_inserts(seconds: float, clients: int = 8) -> float:
    """Transactions of two one-row inserts, straight on the database driver: the floor under any proposal."""
    from django.db import connection

    done = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    if connection.vendor == "postgresql":
        import psycopg

        url = os.environ["DATABASE_URL"]
        with psycopg.connect(url, dbname="gatehouse_bench", autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS bench_a (id bigserial primary key, payload jsonb)")
            conn.execute("CREATE TABLE IF NOT EXISTS bench_b (id bigserial primary key, note text)")

        def worker() -> None:
            n = 0
            with psycopg.connect(url, dbname="gatehouse_bench") as conn:
                while time.perf_counter() < stop_at:
                    with conn.transaction():
                        conn.execute("INSERT INTO bench_a (payload) VALUES (%s)", ['{"credit_limit": "7500.00"}'])
                        conn.execute("INSERT INTO bench_b (note) VALUES (%s)", ["proposed"])
                    n += 1
            with lock:
                done[0] += n
    else:
        import sqlite3

        path = str(connection.settings_dict["NAME"])
        setup = sqlite3.connect(path)
        setup.execute("CREATE TABLE IF NOT EXISTS bench_a (id integer primary key, payload text)")
        setup.execute("CREATE TABLE IF NOT EXISTS bench_b (id integer primary key, note text)")
        setup.commit()
        setup.close()

        def worker() -> None:
            n = 0
            conn = sqlite3.connect(path, timeout=20, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            while time.perf_counter() < stop_at:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO bench_a (payload) VALUES (?)", ['{"credit_limit": "7500.00"}'])
                conn.execute("INSERT INTO bench_b (note) VALUES (?)", ["proposed"])
                conn.execute("COMMIT")
                n += 1
            conn.close()
            with lock:
                done[0] += n

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / (time.perf_counter() - started)


def _gunicorn(port: int) -> list[str]:
    """Gatehouse's WSGI application under gunicorn, 2 sync workers (PERFORMANCE.md: best on two cores)."""
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    return [
        gunicorn,
        "gatehouse.wsgi:application",
        "--workers",
        "2",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "info",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="Length of each rate measurement.")
    parser.add_argument("--auto-count", type=int, default=2000, help="Proposals in the auto-band run.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="Run py-spy on the gunicorn workers (and, in the auto band, the Celery worker) during the 16-client read, "
        "the proposal POST and the auto band; one flame graph per phase and process kind in DIR (bench/README.md). "
        "Sampling slows the processes: take the figures from a run without it.",
    )
    parser.add_argument("--profile-format", choices=("flamegraph", "speedscope", "raw"), default="flamegraph")
    args = parser.parse_args()

    database = prepare_environment("gatehouse_bench")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from approvals.models import Proposal
    from bench.load import get, load, post_json
    from bench.profiling import Profiler
    from console.demo import seed_demo
    from governance.models import Agent
    from governance.services import agent_token_issue
    from tests.stack import Stack, free_port

    call_command("migrate", verbosity=0)
    stack = Stack(Path(settings.VAR_DIR) / "stack")
    stack.queue = "gatehouse-bench"
    from gatehouse.celery import app as celery_app

    celery_app.conf.task_default_queue = stack.queue
    crm_token = secrets.token_urlsafe(24)
    figures: dict[str, float] = {}
    profiler = Profiler(args.profile, fmt=args.profile_format)
    try:
        crm_url = stack.crm("crm", crm_token)
        token_file = Path(settings.VAR_DIR) / "sandbox" / "crm.token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(crm_token)
        seed_demo(crm_url=crm_url, crm_staging_url="http://127.0.0.1:9")
        _, token = agent_token_issue(agent=Agent.objects.get(slug="collections-agent"), channel="command")
        port = free_port()
        env = stack.env(DJANGO_SETTINGS_MODULE="bench.settings")
        stack.start("gunicorn", _gunicorn(port), "Booting worker", env=env)
        web = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {token}"}
        crm_auth = {"Authorization": f"Bearer {crm_token}"}
        load(web, get("/api/v1/systems/crm/accounts/4471", auth), clients=4, seconds=1)  # warm up
        load(crm_url, get("/accounts/4471", crm_auth), clients=4, seconds=1)

        print(f"Gatehouse governance overhead — {database}, 2 gunicorn sync workers, sample CRM on loopback\n")
        direct1 = load(crm_url, get("/accounts/4471", crm_auth), count=1000)
        governed1 = load(web, get("/api/v1/systems/crm/accounts/4471", auth), count=1000)
        direct16 = load(crm_url, get("/accounts/4471", crm_auth), clients=16, seconds=args.seconds)
        profiler.start("read-16", gunicorn=stack.processes["gunicorn"].popen.pid)
        governed16 = load(web, get("/api/v1/systems/crm/accounts/4471", auth), clients=16, seconds=args.seconds)
        profiler.stop()
        print("Read of account 4471")
        print(f"  straight from the CRM, 1 client   {_fmt(direct1)}")
        print(f"  through Gatehouse,     1 client   {_fmt(governed1)}")
        print(f"  straight from the CRM, 16 clients {_fmt(direct16)}")
        print(f"  through Gatehouse,     16 clients {_fmt(governed16)}")
        figures.update(
            read_added_p50_ms=governed1.p50 - direct1.p50,
            read_added_p99_ms=governed1.percentile(99) - direct1.percentile(99),
            read_rate_ratio_16=governed16.rate / direct16.rate,
        )
        print(
            f"  added p50 {figures['read_added_p50_ms']:.2f} ms (target ≤ 2), added p99 "
            f"{figures['read_added_p99_ms']:.2f} ms (target ≤ 5), rate at 16 clients "
            f"{figures['read_rate_ratio_16']:.2f}× direct (target ≥ 0.5)\n"
        )

        empty_django = load(web, get("/bench/empty-django"), clients=16, seconds=args.seconds)
        empty_drf = load(web, get("/bench/empty-drf"), clients=16, seconds=args.seconds)
        counter = iter(range(10**9))

        def proposal_body(client: int, n: int) -> dict:
            return {
                "system": "crm",
                "action": "update_credit_limit",
                "record_id": "4472",
                "payload": {"credit_limit": f"{1500 + (next(counter) % 400) + 1}.00"},
                "reason": "benchmark",
            }

        load(web, post_json("/api/v1/proposals", proposal_body, auth), clients=4, seconds=1)  # warm up
        profiler.start("proposal-post-16", gunicorn=stack.processes["gunicorn"].popen.pid)
        proposals = load(web, post_json("/api/v1/proposals", proposal_body, auth), clients=16, seconds=args.seconds)
        profiler.stop()
        # The same POSTs to a second web process (the first one idle meanwhile) that appends audit events without the
        # chain's lock (bench/chainless.py): what the chain costs.
        unchained_port = free_port()
        stack.start(
            "gunicorn-unchained",
            [*_gunicorn(unchained_port)],
            "Booting worker",
            env=stack.env(DJANGO_SETTINGS_MODULE="bench.settings", GATEHOUSE_BENCH_CHAIN="off"),
        )
        unchained_web = f"http://127.0.0.1:{unchained_port}"
        load(unchained_web, post_json("/api/v1/proposals", proposal_body, auth), clients=4, seconds=1)  # warm up
        unchained = load(
            unchained_web, post_json("/api/v1/proposals", proposal_body, auth), clients=16, seconds=args.seconds
        )
        stack.stop("gunicorn-unchained")
        # Chained again, after as many more proposals as the unchained run made: the two chained runs bracket it.
        again = load(web, post_json("/api/v1/proposals", proposal_body, auth), clients=16, seconds=args.seconds)
        inserts = bare_two_row_inserts(args.seconds)
        print("Proposal POST (auth, grant, schema, CRM read for the impact, decision, proposal, audit event, outbox)")
        print(f"  Django empty view, 16 clients     {_fmt(empty_django)}")
        print(f"  DRF empty view, 16 clients        {_fmt(empty_drf)}")
        print(f"  proposal POST, 16 clients         {_fmt(proposals)}")
        print(f"  bare two-row insert, 8 clients    {inserts:8.0f}/s")
        print(f"  proposal POST, audit unchained    {_fmt(unchained)}")
        print(f"  proposal POST, chained again      {_fmt(again)}")
        figures.update(
            proposal_rate=proposals.rate,
            proposal_vs_drf_empty=proposals.rate / empty_drf.rate,
            proposal_vs_bare_insert=proposals.rate / inserts,
            proposal_p99_ms=proposals.percentile(99),
            chain_cost=1 - (proposals.rate + again.rate) / 2 / unchained.rate,
        )
        print(
            f"  proposal POST = {figures['proposal_vs_drf_empty']:.2f}× the DRF empty view (target ≥ 0.2), "
            f"{figures['proposal_vs_bare_insert']:.2f}× the bare insert; p99 {figures['proposal_p99_ms']:.1f} ms "
            "(target ≤ 50)"
        )
        print(f"  the audit chain costs {figures['chain_cost']:.0%} of the unchained rate (target ≤ 10 %)\n")

        # The auto band end to end: start from an empty queue and a CRM with no writes.
        Proposal.objects.all().delete()
        celery_app.control.purge()
        from sandbox.testing import crm_control

        crm_control(crm_url, "/_control/reset", {})
        stack.worker("worker", concurrency=2)
        note = {"system": "crm", "action": "add_note", "record_id": "4473", "payload": {"text": "benchmark note"}}
        profiler.start(
            "auto-band", gunicorn=stack.processes["gunicorn"].popen.pid, celery=stack.processes["worker"].popen.pid
        )
        started = time.perf_counter()
        posted = load(
            web,
            post_json("/api/v1/proposals", lambda c, n: note, auth),
            clients=16,
            count=args.auto_count,
        )
        executed, last_change = 0, time.monotonic()
        while executed < posted.count and time.monotonic() - last_change < 30:
            now_executed = Proposal.objects.filter(status="executed").count()
            if now_executed != executed:
                executed, last_change = now_executed, time.monotonic()
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        profiler.stop()
        from django.db.models import Count

        by_status = dict(Proposal.objects.values_list("status").annotate(n=Count("id")))
        if executed < posted.count:
            print(f"  stalled: {by_status}; worker log tail:\n{stack.processes['worker'].output()[-1500:]}")
        writes = crm_control(crm_url, "/_stats")
        doubled = sum(1 for n in writes["writes_by_key"].values() if n > 1)
        figures.update(auto_rate=executed / elapsed, auto_lost=posted.count - executed, auto_doubled=doubled)
        print("Auto band end to end (add_note: POST → executed in the CRM), web and worker on the same 2 cores")
        rate = figures["auto_rate"]
        print(f"  {posted.count} posted, {executed} executed in {elapsed:.1f} s: {rate:.0f}/s (target ≥ 200)")
        print(f"  lost {figures['auto_lost']}, written twice {doubled}, CRM writes {writes['writes_total']}")
    finally:
        profiler.stop()
        stack.stop_all()
    for path in profiler.written:
        print(f"profile: {path}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
