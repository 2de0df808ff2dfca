"""The audit trail at scale, measured against the targets of PERFORMANCE.md. PostgreSQL only.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m bench.audit_scale --events 5000000 [--json out.json] [--verify]

Drops and recreates database `gatehouse_audit_bench`, migrates, seeds the demo, then loads N realistic, validly
hash-chained audit events with COPY (~2,000 records across 3 systems, 20 agents' reads, proposals, decisions and
executions spread over 90 days). The secondary indexes and constraints of the audit table are dropped for the load
and recreated from their own definitions afterwards (the usual bulk-load path; the schema ends up identical, and the
foreign keys are validated when they are added back). Then it measures, as medians of several runs:
  - the record-timeline query (`AuditEvent.objects.for_record(...)`, ordered): one day, and all time;
  - the admin record timeline page and the audit changelist (first page; filtered by system + day), through
    Django's test Client as a superuser, DEBUG off;
  - the CSV export (the admin's streamed response) over up to 1M rows: rows/s and RSS growth, at two sizes to show
    memory stays flat.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = "gatehouse_audit_bench"
DAYS = 90


def _prepare_environment() -> None:
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("bench.audit_scale needs PostgreSQL: set DATABASE_URL=postgres://…")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.setdefault(
        "GATEHOUSE_ENV", "development"
    )  # a bench on this machine: generated secrets, loopback systems
    os.environ.setdefault("GATEHOUSE_VAR_DIR", tempfile.mkdtemp(prefix="gatehouse-audit-bench-"))
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], dbname="postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    os.environ["GATEHOUSE_DB_NAME"] = DB_NAME


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Peak resident memory while a block runs, sampled every few milliseconds (ru_maxrss is a lifetime peak)."""

    def __enter__(self):
        self.start = self.peak = _rss_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_kb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_kb())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1024


# --- The data ------------------------------------------------------------------------------------------------------


class World:
    """Systems, records, agents and people the generated events refer to."""

    def __init__(self) -> None:
        from django.contrib.auth import get_user_model

        from governance.models import Agent, System

        User = get_user_model()
        owner = User.objects.order_by("id").first()
        systems = {s.slug: s for s in System.objects.all()}
        self.crm, self.staging, self.legacy = systems["crm"], systems["crm-staging"], systems["legacy-inventory"]
        for n in range(1, 19):
            Agent.objects.get_or_create(
                slug=f"bench-agent-{n:02d}", defaults={"name": f"Bench agent {n}", "owner": owner}
            )
        self.agents = list(Agent.objects.order_by("id").values_list("id", "slug"))
        self.people = list(User.objects.order_by("id").values_list("id", "username"))
        # ~2,000 records: 1,500 CRM accounts, 200 on the staging twin, 300 inventory SKUs.
        self.records = (
            [(self.crm.pk, "accounts", "account", str(4000 + n)) for n in range(1500)]
            + [(self.staging.pk, "accounts", "account", str(4000 + n)) for n in range(200)]
            + [(self.legacy.pk, "events", "stock event", f"SKU-{10000 + n}") for n in range(300)]
        )


READ_FIELDS = ["credit_limit", "name", "notes", "status"]
ACTIONS = ["update_credit_limit", "add_note", "set_status"]


def generate(world: World, total: int, *, first_id: int = 1, seed: int = 7):
    """Yield (id, chained content dict) in chain order; times rise monotonically over the last DAYS days."""
    rng = random.Random(seed)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    start = end - timedelta(days=DAYS)
    step_us = DAYS * 86400 * 1_000_000 / total
    clock = start.timestamp() * 1_000_000
    event_id = first_id - 1
    last_id = first_id - 1 + total
    records, agents, people = world.records, world.agents, world.people
    crm_pk = world.crm.pk

    def base(verb, actor_type, actor, agent_id, person_id, record, channel, summary, **extra):
        nonlocal clock, event_id
        event_id += 1
        clock += step_us * (0.5 + rng.random())
        moment = datetime.fromtimestamp(clock / 1_000_000, UTC)
        system_id, resource, _label, record_id = record
        content = {
            "occurred_at": moment.isoformat(timespec="microseconds"),
            "verb": verb,
            "actor_type": actor_type,
            "actor": actor,
            "agent": agent_id,
            "person": person_id,
            "system": system_id,
            "channel": channel,
            "resource": resource,
            "record_id": record_id,
            "proposal_id": None,
            "input": {},
            "decision": {},
            "state_before": None,
            "state_after": None,
            "outcome": "ok",
            "request_id": "",
            "summary": summary,
        }
        content.update(extra)
        return event_id, content

    while event_id < last_id:
        record = records[rng.randrange(len(records))]
        agent_id, agent_slug = agents[rng.randrange(len(agents))]
        request_id = uuid.UUID(int=rng.getrandbits(128)).hex
        label, record_id = record[2], record[3]
        roll = rng.random()
        if roll < 0.70 or record[0] != crm_pk:  # reads: most of the trail
            fields = rng.sample(READ_FIELDS, rng.randint(1, 4))
            fields.sort()
            yield base(
                "read",
                "agent",
                agent_slug,
                agent_id,
                None,
                record,
                "mcp" if roll < 0.2 else "api",
                f"{agent_slug} read {label} {record_id}.",
                input={"fields": fields},
                request_id=request_id,
            )
        elif roll < 0.74:
            yield base(
                "denied",
                "agent",
                agent_slug,
                agent_id,
                None,
                record,
                "api",
                f"{agent_slug} may not update_credit_limit on {label} {record_id}: no write grant.",
                outcome="denied",
                request_id=request_id,
                input={"action": "update_credit_limit", "payload": {"credit_limit": "9000.00"}},
            )
        else:  # a proposal's story: proposed, approved (by rule or a person), executing, executed
            proposal_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            old = rng.randrange(1000, 9000)
            new = old + rng.choice([-500, 250, 500, 1000, 2500])
            payload = {"credit_limit": f"{new}.00"}
            decision = {"band": "auto" if new < 5000 else "one_approver", "rule": "credit limit bands"}
            before, after = {"credit_limit": f"{old}.00"}, {"credit_limit": f"{new}.00"}
            common = {"proposal_id": proposal_id, "request_id": request_id}
            yield base(
                "proposed",
                "agent",
                agent_slug,
                agent_id,
                None,
                record,
                "api",
                f"{agent_slug} proposed update_credit_limit on {label} {record_id} ({new}.00 USD).",
                input={"action": "update_credit_limit", "payload": payload, "reason": "overdue 60 days"},
                decision=decision,
                state_before=before,
                **common,
            )
            if event_id >= last_id:
                break
            if decision["band"] == "auto":
                yield base(
                    "auto_approved",
                    "gatehouse",
                    "gatehouse",
                    agent_id,
                    None,
                    record,
                    "api",
                    "Auto-approved by rule: under 5,000.00 USD.",
                    decision=decision,
                    **common,
                )
            else:
                person_id, username = people[rng.randrange(len(people))]
                yield base(
                    "approved",
                    "human",
                    username,
                    agent_id,
                    person_id,
                    record,
                    "admin",
                    f"{username} approved update_credit_limit on {record_id}.",
                    decision=decision,
                    input={"comment": "ok, paid last week"},
                    **common,
                )
            if event_id >= last_id:
                break
            yield base(
                "executing",
                "gatehouse",
                "gatehouse",
                agent_id,
                None,
                record,
                "task",
                f"Executing update_credit_limit on {record_id} in crm.",
                **common,
            )
            if event_id >= last_id:
                break
            yield base(
                "executed",
                "gatehouse",
                "gatehouse",
                agent_id,
                None,
                record,
                "task",
                f"Executed update_credit_limit on {label} {record_id}.",
                state_before=before,
                state_after=after,
                **common,
            )


def _copy_text(value) -> str:
    return "\\N" if value is None else str(value)


def copy_lines(world: World, total: int, *, first_id: int, prev: str, batch: int = 5000):
    """COPY text blocks of chained events; the hash is computed exactly like AuditEvent.compute_hash."""
    dumps = json.dumps
    sha256 = hashlib.sha256
    lines: list[str] = []
    for event_id, content in generate(world, total, first_id=first_id):
        content["prev_hash"] = prev
        canonical = dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        digest = sha256(canonical.encode()).hexdigest()
        c = content
        lines.append(
            "\t".join(
                (
                    str(event_id),
                    c["occurred_at"],
                    c["verb"],
                    c["actor_type"],
                    c["actor"],
                    _copy_text(c["agent"]),
                    _copy_text(c["person"]),
                    _copy_text(c["system"]),
                    c["channel"],
                    c["resource"],
                    c["record_id"],
                    _copy_text(c["proposal_id"]),
                    dumps(c["input"]),
                    dumps(c["decision"]),
                    "\\N" if c["state_before"] is None else dumps(c["state_before"]),
                    "\\N" if c["state_after"] is None else dumps(c["state_after"]),
                    c["outcome"],
                    c["request_id"],
                    c["summary"],
                    prev,
                    digest,
                )
            )
        )
        prev = digest
        if len(lines) >= batch:
            yield "\n".join(lines) + "\n", len(lines)
            lines = []
    if lines:
        yield "\n".join(lines) + "\n", len(lines)


COPY_COLUMNS = (
    "id, occurred_at, verb, actor_type, actor, agent_id, person_id, system_id, channel, resource, record_id, "
    "proposal_id, input, decision, state_before, state_after, outcome, request_id, summary, prev_hash, hash"
)


def load_events(world: World, total: int) -> dict[str, float]:
    from django.db import connection

    table = "audit_auditevent"
    timings: dict[str, float] = {}
    from audit.models import GENESIS_HASH, AuditEvent

    # The demo seed already wrote a few events: the loaded ones continue their chain.
    head = AuditEvent.objects.order_by("-id").first()
    first_id, prev = (head.pk + 1, head.hash) if head else (1, GENESIS_HASH)
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('u', 'f') ORDER BY contype DESC",
            [table],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = %s AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = to_regclass(i.indexname))",
            [table],
        )
        indexes = cursor.fetchall()
        for name, _ in constraints:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')

    started = time.perf_counter()
    loaded = 0
    raw = connection.connection  # psycopg 3 connection under Django's wrapper
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({COPY_COLUMNS}) FROM STDIN") as copy:
        for block, n in copy_lines(world, total, first_id=first_id, prev=prev):
            copy.write(block)
            loaded += n
            if loaded % 500_000 < n:
                rate = loaded / (time.perf_counter() - started)
                print(f"    … {loaded:>10,} events  {rate:>9,.0f}/s", flush=True)
    if not raw.autocommit:
        raw.commit()
    timings["copy_s"] = time.perf_counter() - started
    timings["copy_rate"] = loaded / timings["copy_s"]

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for _name, definition in indexes:
            cursor.execute(definition)
        for name, definition in constraints:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), (SELECT max(id) FROM audit_auditevent))", [table]
        )
    timings["index_s"] = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {table}")
    timings["analyze_s"] = time.perf_counter() - started
    timings["loaded"] = loaded
    return timings


def check_chain_sample() -> str:
    """The loaded rows read back through the ORM hash the same (first and last 2,000) and link up."""
    from audit.models import GENESIS_HASH, AuditEvent

    first = list(AuditEvent.objects.order_by("id")[:2000])
    last = list(AuditEvent.objects.order_by("-id")[:2000])[::-1]
    for rows, prev in ((first, GENESIS_HASH), (last, None)):
        for event in rows:
            if prev is not None and event.prev_hash != prev:
                return f"broken link at #{event.pk}"
            if event.compute_hash() != event.hash:
                return f"hash mismatch at #{event.pk}"
            prev = event.hash
    return "ok (first and last 2,000 events re-hashed through the ORM)"


# --- Measurements --------------------------------------------------------------------------------------------------


def median_ms(fn, runs: int) -> tuple[float, float]:
    fn()  # warm
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def sql_timer(queryset):
    from django.db import connection

    sql, params = queryset.query.sql_with_params()

    def run():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return len(cursor.fetchall())

    return run, sql, params


def explain_top(sql, params) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        plan = [row[0] for row in cursor.fetchall()]
    scans = [line.strip().lstrip("-> ").strip() for line in plan if "Scan" in line]
    return (scans[0] if scans else plan[0]).split("  (cost")[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000, help="Audit events to load.")
    parser.add_argument("--export-rows", type=int, default=1_000_000, help="Rows in the big CSV export.")
    parser.add_argument("--runs", type=int, default=7, help="Runs per median.")
    parser.add_argument("--verify", action="store_true", help="Also walk the whole chain with verify_chain.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = parser.parse_args()

    wall = time.perf_counter()
    _prepare_environment()
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from audit.exports import export_response
    from audit.models import AuditEvent
    from audit.timeline import TIMELINE_PAGE
    from console.demo import seed_demo

    assert connection.vendor == "postgresql"
    call_command("migrate", verbosity=0)
    seed_demo(crm_url="http://127.0.0.1:9", crm_staging_url="http://127.0.0.1:9")
    world = World()
    figures: dict[str, float] = {"events": args.events}

    print(f"Gatehouse audit trail at scale — PostgreSQL, database {DB_NAME}, DEBUG={settings.DEBUG}\n")
    print(
        f"Loading {args.events:,} chained audit events with COPY ({len(world.records):,} records, "
        f"3 systems, {len(world.agents)} agents, {DAYS} days)"
    )
    timings = load_events(world, args.events)
    figures.update(load_rate=timings["copy_rate"], load_s=timings["copy_s"], index_s=timings["index_s"])
    print(
        f"  COPY {timings['loaded']:,} events in {timings['copy_s']:.1f} s = {timings['copy_rate']:,.0f}/s "
        "(Python chaining + COPY)"
    )
    print(
        f"  indexes and constraints rebuilt in {timings['index_s']:.1f} s, VACUUM ANALYZE {timings['analyze_s']:.1f} s"
    )
    print(f"  chain check: {check_chain_sample()}")
    if args.verify:
        from audit.integrity import verify_chain

        started = time.perf_counter()
        report = verify_chain()
        print(f"  verify_chain: {report} in {time.perf_counter() - started:.1f} s")
    print()

    # The record to look at, and a day some days back.
    crm = world.crm
    record_id = "4471"  # one of the 1,500 CRM accounts, as busy as any other
    all_time_count = AuditEvent.objects.for_record(crm, record_id).count()
    day = timezone.localdate() - timedelta(days=3)
    day_count = AuditEvent.objects.for_record(crm, record_id).on(day).count()

    runs = args.runs
    rows: list[tuple[str, float, float, str, str]] = []  # what, median, max, target, note

    one_day = AuditEvent.objects.for_record(crm, record_id).on(day).order_by("occurred_at", "id")
    # All time, one page: the timeline reads TIMELINE_PAGE events at a time, after a keyset cursor.
    all_time = AuditEvent.objects.for_record(crm, record_id).order_by("occurred_at", "id")[:TIMELINE_PAGE]
    for label, queryset, key in (
        (f"timeline query, crm {record_id}, one day ({day_count} ev)", one_day, "timeline_query_day_ms"),
        (
            f"timeline query, crm {record_id}, all time, a page ({TIMELINE_PAGE} of {all_time_count})",
            all_time,
            "timeline_query_all_ms",
        ),
    ):
        run, sql, params = sql_timer(queryset)
        med, worst = median_ms(run, runs)
        figures[key] = med
        rows.append((label, med, worst, "≤ 5 ms", explain_top(sql, params)))

    User = get_user_model()
    admin_user = User.objects.create_superuser("audit-bench", "audit-bench@gatehouse.example", None)
    client = Client()
    client.force_login(admin_user)

    def page(url: str):
        def run():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            response.content  # noqa: B018 - rendered

        return run

    timeline = reverse("admin:audit_timeline", args=[crm.slug, record_id])
    changelist = reverse("admin:audit_auditevent_changelist")
    middle = (
        AuditEvent.objects.for_record(crm, record_id)
        .order_by("occurred_at", "id")
        .values_list("id", flat=True)[all_time_count // 2]
    )
    pages = [
        ("admin timeline page, one day", f"{timeline}?day={day.isoformat()}", "timeline_page_day_ms", "≤ 150 ms"),
        ("admin timeline page, all time, first page", timeline, "timeline_page_all_ms", "≤ 150 ms"),
        (
            "admin timeline page, all time, a middle page",
            f"{timeline}?after={middle}",
            "timeline_page_mid_ms",
            "≤ 150 ms",
        ),
        ("audit changelist, first page", changelist, "changelist_first_ms", "≤ 150 ms"),
        (
            "audit changelist, system + day",
            f"{changelist}?system__id__exact={crm.pk}&day={day.isoformat()}",
            "changelist_system_day_ms",
            "≤ 150 ms",
        ),
        ("audit changelist, record search", f"{changelist}?q={record_id}", "changelist_search_ms", "≤ 150 ms"),
        ("audit changelist, page 50", f"{changelist}?p=50", "changelist_page50_ms", "≤ 150 ms"),
    ]
    count_queries = []
    from django.test.utils import CaptureQueriesContext

    for label, url, key, target in pages:
        med, worst = median_ms(page(url), runs)
        with CaptureQueriesContext(connection) as captured:
            page(url)()
        counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
        full = [sql for sql in counts if "LIMIT" not in sql.upper()]
        if "changelist" in key:
            count_queries.extend(full)
        note = f"{len(captured.captured_queries)} queries"
        if "changelist" in key:
            note += f", {len(full)} unbounded count(*)"
        figures[key] = med
        rows.append((label, med, worst, target, note))
    figures["changelist_full_counts"] = len(count_queries)

    # CSV export: the admin's own streamed response, consumed as a server would.
    def export(queryset) -> tuple[int, float, float, int]:
        response = export_response(queryset, kind="csv")
        written = lines = 0
        with RssSampler() as rss:
            started = time.perf_counter()
            for chunk in response.streaming_content:
                written += len(chunk)
                lines += chunk.count(b"\n")
            elapsed = time.perf_counter() - started
        return lines - 1, elapsed, rss.growth_mb, written

    export_rows = min(args.export_rows, args.events)
    small_rows = max(export_rows // 10, 1)
    export(AuditEvent.objects.filter(id__lte=1000))  # warm
    small = export(AuditEvent.objects.filter(id__lte=small_rows))
    big = export(AuditEvent.objects.filter(id__lte=export_rows))
    # Python heap peak (tracemalloc) at two sizes 10× apart: a streamed export's peak must not grow with the rows.
    traced = {}
    for n in (min(20_000, args.events), min(200_000, args.events)):
        response = export_response(AuditEvent.objects.filter(id__lte=n), kind="csv")
        tracemalloc.start()
        for _chunk in response.streaming_content:
            pass
        traced[n] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    via_admin_started = time.perf_counter()
    response = client.get(reverse("admin:audit_export_csv") + f"?system__id__exact={crm.pk}&day={day.isoformat()}")
    admin_lines = sum(chunk.count(b"\n") for chunk in response.streaming_content) - 1
    via_admin = time.perf_counter() - via_admin_started
    figures.update(
        export_rows_per_s=big[0] / big[1],
        export_rss_growth_mb=big[2],
        export_small_rss_growth_mb=small[2],
        export_admin_rows_per_s=admin_lines / via_admin,
        **{f"export_heap_peak_mb_{n}": peak for n, peak in traced.items()},
    )

    print(
        f"Record crm {record_id}: {all_time_count} events all time, {day_count} on {day}; "
        f"medians of {runs} runs (after one warm-up)\n"
    )
    print(f"  {'what':<58} {'median':>9} {'max':>9}  {'target':<9} verdict  notes")
    for label, med, worst, target, note in rows:
        bound = float(target.split()[1])
        verdict = "ok" if med <= bound else "MISSED"
        print(f"  {label:<58} {med:7.2f}ms {worst:7.2f}ms  {target:<9} {verdict:<7}  {note}")
    ok_count = "ok" if not count_queries else "MISSED"
    label = "changelist pages: unbounded count(*) queries"
    print(f"  {label:<58} {len(count_queries):>9} {'':>9}  {'0':<9} {ok_count}")
    print()
    print("CSV export (StreamingHttpResponse of the admin export, consumed in-process; RSS growth over the process's")
    print("earlier peak, sampled every 20 ms)")
    for n, elapsed, growth, written in (small, big):
        rate = n / elapsed
        print(
            f"  {n:>9,} rows  {elapsed:6.2f} s  {rate:>9,.0f} rows/s  {written / 1e6:7.1f} MB written  "
            f"peak RSS growth {growth:6.1f} MB"
        )
    verdict = "ok" if figures["export_rows_per_s"] >= 50_000 else "MISSED"
    flat = "flat" if big[2] <= small[2] + 16 else "GROWS"
    print(
        f"  {big[0]:,} rows at {figures['export_rows_per_s']:,.0f} rows/s (target ≥ 50,000): {verdict}; memory "
        f"{big[2]:.1f} MB at {big[0]:,} rows vs {small[2]:.1f} MB at {small[0]:,}: {flat}"
    )
    print(
        f"  through the admin URL (crm + day filter, changelist filters): {admin_lines:,} rows at "
        f"{admin_lines / via_admin:,.0f} rows/s"
    )
    peaks = ", ".join(f"{peak:.1f} MB at {n:,} rows" for n, peak in traced.items())
    print(f"  Python heap peak during the export (tracemalloc): {peaks}")
    figures["wall_s"] = time.perf_counter() - wall
    print(f"\nWhole run {figures['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
