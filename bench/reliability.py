"""The load run of the proof suite: many agents at once against the production process layout, then a reconciliation.

    .venv/bin/python -m bench.reliability --seconds 180 --agents 40 --kill-worker-at 60

PostgreSQL and Redis only. It drops and recreates a database of its own (``--db-name``, default gatehouse_load) and
FLUSHES one Redis database of its own (``--redis-db``, default 12), migrates, seeds the demo inventory against a
sample CRM it starts (with ``--accounts-per-agent`` generated accounts per agent) and runs what production runs
(README, "Deploying to production"): gunicorn with uvicorn workers (``--web-workers``), two Celery workers and beat
(whose outbox sweep republishes lost work); with ``--nodes N``, as N machines would run it: each node its own
gunicorn and Celery worker, in process groups and var/ folders of their own, sharing only PostgreSQL and Redis, the
agents spread over the nodes' web ports, beat once. Then, for ``--seconds``:

  - ``--agents`` service accounts with the collections agent's grants, each with a token of its own, closed loop:
    reads, auto-band proposals (small raises, notes) that the workers execute, one-approver and dual-band raises,
    idempotent replays, status polls, cancellations, and bad inputs whose refusals are the expected answer (invalid
    payload, unknown action and record, malformed JSON, another agent's proposal, a wrong token, a read-only agent
    proposing);
  - an approver signed in to the admin deciding the pending proposals through the decide button's POST (one in ten
    rejected, with a reason), and a reviewer reviewing the dual-band ones after execution;
  - optionally a fault: SIGKILL one worker (its whole process group) mid-run and start it again.

``--only`` narrows the load to some of these operations (``--only read``), to cost one kind on its own.

It prints per operation the rate, p50/p99 latency and unexpected answers (the target is none), executions per second
end to end, approval → executed latency, the CPU time each kind of process used during the load (web, workers,
PostgreSQL's backends for the run's database…) per request and per execution, the most database connections seen at
once. Then it waits (bounded) for the queue to drain, stops Gatehouse's processes and reconciles: every proposal
terminal, none failed, CRM writes equal to executed proposals with no idempotency key applied twice, every 201 one
proposal, no outbox message unpublished, the audit chain verifies, one audit event per transition. Exit status 1 when
an item fails or an answer was unexpected. Processes and the database are removed at
exit, Ctrl-C included (``--keep`` keeps the database and logs to look at).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379"

# What an agent does each turn, and how often (weights).
OPERATIONS: dict[str, int] = {
    "read": 26,
    "propose auto: raise": 16,
    "propose auto: note": 10,
    "propose one-approver": 5,
    "propose dual": 1,
    "replay (Idempotency-Key)": 3,
    "poll own proposal": 10,
    "list own proposals": 3,
    "cancel own pending": 2,
    "bad: invalid payload": 3,
    "bad: unknown action": 2,
    "bad: unknown record": 2,
    "bad: malformed JSON": 2,
    "bad: other agent's proposal": 3,
    "bad: wrong token": 2,
    "bad: read-only agent writes": 2,
}
# The answers that are right for each operation; anything else is an error.
EXPECTED: dict[str, tuple[int, ...]] = {
    "read": (200,),
    "propose auto: raise": (201,),
    "propose auto: note": (201,),
    "propose one-approver": (201,),
    "propose dual": (201,),
    "replay (Idempotency-Key)": (200,),
    "poll own proposal": (200,),
    "list own proposals": (200,),
    "cancel own pending": (200, 409),  # 409: the approver decided first
    "bad: invalid payload": (422,),
    "bad: unknown action": (422,),
    "bad: unknown record": (422,),
    "bad: malformed JSON": (400,),
    "bad: other agent's proposal": (404,),
    "bad: wrong token": (401,),
    "bad: read-only agent writes": (403,),
    "admin: approver's queue page": (200,),
    "admin: approve / reject POST": (302,),
    "admin: review POST": (302,),
}
NON_TERMINAL = ("pending_approval", "escalated", "stale", "approved", "executing", "on_hold", "manual_task")


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


@dataclass
class Figures:
    """Latencies of expected answers and counts of unexpected ones, per operation; shared by every thread."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    unexpected: dict[str, Counter] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    created: int = 0  # 201s: each must be exactly one proposal
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, op: str, status: int, elapsed: float, body: bytes = b"") -> bool:
        ok = status in EXPECTED[op]
        with self.lock:
            if ok:
                self.latencies.setdefault(op, []).append(elapsed)
                if status == 201:
                    self.created += 1
            else:
                self.unexpected.setdefault(op, Counter())[status] += 1
                self.examples.setdefault(f"{op} → {status}", body[:300].decode(errors="replace"))
        return ok

    def wrong(self, op: str, what: str) -> None:
        """An expected status with the wrong content (a replay that is not the first proposal, say)."""
        with self.lock:
            self.unexpected.setdefault(op, Counter())[what] += 1

    @property
    def errors(self) -> int:
        return sum(sum(c.values()) for c in self.unexpected.values())

    @property
    def answers(self) -> int:
        """Every request answered so far, as expected or not."""
        with self.lock:
            return sum(len(v) for v in self.latencies.values()) + self.errors


class Http:
    """One keep-alive connection; a dropped connection is reopened and reported as status 0."""

    def __init__(self, base_url: str) -> None:
        parsed = urlparse(base_url)
        self.host, self.port = parsed.hostname, parsed.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]):
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
            status, replayed = response.status, response.getheader("Idempotent-Replayed")
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            status, data, replayed = 0, f"{type(exc).__name__}: {exc}".encode(), None
        return status, data, replayed, time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


@dataclass
class Shared:
    """What agents learn about each other: some proposal ids, for the "another agent's proposal" attempt."""

    proposals: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, agent: int, proposal_id: str) -> None:
        with self.lock:
            if len(self.proposals) < 5000:
                self.proposals.append((agent, proposal_id))
            else:
                self.proposals[random.randrange(5000)] = (agent, proposal_id)

    def other_than(self, agent: int, rng: random.Random) -> str | None:
        with self.lock:
            for _ in range(5):
                if not self.proposals:
                    return None
                owner, proposal_id = self.proposals[rng.randrange(len(self.proposals))]
                if owner != agent:
                    return proposal_id
        return None


class Agent(threading.Thread):
    """One service account, closed loop: each turn one operation drawn by weight, until the stop time."""

    def __init__(
        self, number, *, web, token, readonly_token, accounts, figures, shared, stop_at, seed, operations
    ) -> None:
        super().__init__(name=f"agent-{number}", daemon=True)
        self.number, self.token, self.readonly_token = number, token, readonly_token
        self.accounts = accounts  # all but the last take auto raises and notes; the last takes the human bands
        self.figures, self.shared, self.stop_at = figures, shared, stop_at
        self.http = Http(web)
        self.rng = random.Random(seed)
        self.mine: list[str] = []
        self.pending: list[str] = []
        self.names, self.weights = list(operations), list(operations.values())

    def run(self) -> None:
        try:
            while time.monotonic() < self.stop_at:
                op = self.rng.choices(self.names, self.weights)[0]
                try:
                    self.turn(op)
                except Exception as exc:  # an answer the agent cannot use is an error of the run, not its end
                    self.figures.wrong(op, f"{type(exc).__name__}: {exc}"[:80])
        finally:
            self.http.close()

    def _headers(self, token: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}", "Content-Type": "application/json", **extra}

    def read(self, account: str) -> Decimal | None:
        status, data, _, elapsed = self.http.call(
            "GET", f"/api/v1/systems/crm/accounts/{account}", None, self._headers()
        )
        if self.figures.note("read", status, elapsed, data):
            return Decimal(json.loads(data)["data"]["credit_limit"])
        return None

    def propose(self, op: str, body: dict, *, token: str | None = None, key: str | None = None, raw=None):
        headers = self._headers(token, **({"Idempotency-Key": key} if key else {}))
        payload = raw if raw is not None else json.dumps(body).encode()
        status, data, replayed, elapsed = self.http.call("POST", "/api/v1/proposals", payload, headers)
        self.figures.note(op, status, elapsed, data)
        return status, data, replayed

    def _created(self, data: bytes, *, pending: bool = False) -> str:
        proposal_id = json.loads(data)["id"]
        self.mine.append(proposal_id)
        if pending:
            self.pending.append(proposal_id)
        self.shared.add(self.number, proposal_id)
        return proposal_id

    def _raise(self, op: str, account: str, low: int, high: int) -> None:
        current = self.read(account)
        if current is None:
            return
        body = {
            "system": "crm",
            "action": "update_credit_limit",
            "record_id": account,
            "payload": {"credit_limit": f"{current + self.rng.randint(low, high):.2f}"},
            "reason": "load run: payment history supports it",
        }
        status, data, _ = self.propose(op, body)
        if status == 201:
            self._created(data, pending=not op.startswith("propose auto"))

    def turn(self, op: str) -> None:
        rng, own, human = self.rng, self.accounts[:-1], self.accounts[-1]
        if op == "read":
            self.read(rng.choice(self.accounts))
        elif op == "propose auto: raise":
            self._raise(op, rng.choice(own), 1, 400)
        elif op == "propose auto: note":
            body = {
                "system": "crm",
                "action": "add_note",
                "record_id": rng.choice(own),
                "payload": {"text": f"Called about the overdue invoice ({uuid.uuid4().hex[:8]})."},
            }
            status, data, _ = self.propose(op, body)
            if status == 201:
                self._created(data)
        elif op == "propose one-approver":
            self._raise(op, human, 1000, 3000)
        elif op == "propose dual":
            self._raise(op, human, 6000, 9000)
        elif op == "replay (Idempotency-Key)":
            key = uuid.uuid4().hex
            body = {
                "system": "crm",
                "action": "add_note",
                "record_id": rng.choice(own),
                "payload": {"text": "Sent a reminder; this request may be retried."},
            }
            status, first, _ = self.propose("propose auto: note", body, key=key)
            if status != 201:
                return
            self._created(first)
            status, again, replayed = self.propose(op, body, key=key)
            if status == 200 and (replayed != "true" or json.loads(again)["id"] != json.loads(first)["id"]):
                self.figures.wrong(op, "replay answered another proposal")
        elif op == "poll own proposal":
            if self.mine:
                proposal_id = rng.choice(self.mine[-50:])
                status, data, _, elapsed = self.http.call(
                    "GET", f"/api/v1/proposals/{proposal_id}", None, self._headers()
                )
                self.figures.note(op, status, elapsed, data)
        elif op == "list own proposals":
            status, data, _, elapsed = self.http.call("GET", "/api/v1/proposals?limit=20", None, self._headers())
            self.figures.note(op, status, elapsed, data)
        elif op == "cancel own pending":
            if self.pending:
                proposal_id = self.pending.pop(rng.randrange(len(self.pending)))
                status, data, _, elapsed = self.http.call(
                    "POST", f"/api/v1/proposals/{proposal_id}/cancel", b"", self._headers()
                )
                self.figures.note(op, status, elapsed, data)
        elif op == "bad: invalid payload":
            body = {"system": "crm", "action": "update_credit_limit", "record_id": rng.choice(own)}
            self.propose(op, {**body, "payload": {"credit_limit": "a lot"}})
        elif op == "bad: unknown action":
            self.propose(op, {"system": "crm", "action": "wire_money", "record_id": rng.choice(own), "payload": {}})
        elif op == "bad: unknown record":
            body = {"system": "crm", "action": "add_note", "record_id": "999999", "payload": {"text": "hello"}}
            self.propose(op, body)
        elif op == "bad: malformed JSON":
            self.propose(op, {}, raw=b'{"system": "crm", "action": ')
        elif op == "bad: other agent's proposal":
            other = self.shared.other_than(self.number, rng)
            if other:
                status, data, _, elapsed = self.http.call("GET", f"/api/v1/proposals/{other}", None, self._headers())
                self.figures.note(op, status, elapsed, data)
        elif op == "bad: wrong token":
            status, data, _, elapsed = self.http.call(
                "GET", f"/api/v1/systems/crm/accounts/{human}", None, self._headers("gh_" + secrets.token_urlsafe(24))
            )
            self.figures.note(op, status, elapsed, data)
        elif op == "bad: read-only agent writes":
            body = {"system": "crm", "action": "add_note", "record_id": human, "payload": {"text": "not mine to add"}}
            self.propose(op, body, token=self.readonly_token)


class Person(threading.Thread):
    """A person signed in to the admin, deciding with the proposal page's buttons (their POST)."""

    def __init__(self, *, web, username, password, role, figures, stop: threading.Event, seed) -> None:
        super().__init__(name=username, daemon=True)
        import httpx

        self.web, self.username, self.password, self.role = web, username, password, role
        self.figures, self.stop = figures, stop
        # An idle keep-alive connection is dropped before gunicorn's keep-alive (2 s) closes it from its side: sent on
        # a connection the server is closing, a POST is reset unanswered (the first 3-minute run saw one), which a
        # browser retries on a fresh connection and httpx does not.
        limits = httpx.Limits(keepalive_expiry=1.0)
        self.client = httpx.Client(base_url=web, follow_redirects=False, timeout=60, limits=limits)
        self.rng = random.Random(seed)
        self.decided = 0
        self.failure: str | None = None

    def sign_in(self) -> None:
        page = self.client.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        response = self.client.post(
            "/admin/login/",
            data={
                "username": self.username,
                "password": self.password,
                "csrfmiddlewaretoken": token.group(1) if token else "",
                "next": "/admin/",
            },
        )
        if response.status_code != 302 or "sessionid" not in self.client.cookies:
            raise RuntimeError(f"{self.username} could not sign in: {response.status_code}")

    def _post(self, op: str, proposal_id, data: dict) -> None:
        started = time.perf_counter()
        try:
            response = self.client.post(
                f"/admin/approvals/proposal/{proposal_id}/decide/",
                data={**data, "csrfmiddlewaretoken": self.client.cookies.get("csrftoken", "")},
            )
            status, body = response.status_code, response.content
        except Exception as exc:
            status, body = 0, f"{type(exc).__name__}: {exc}".encode()
        self.figures.note(op, status, time.perf_counter() - started, body)
        self.decided += 1

    def waiting(self) -> list:
        from approvals.models import Proposal

        if self.role == "approver":
            # Stale: the record changed before the write, so it waits for a person again (approvals/freshness.py).
            queue = Proposal.objects.filter(
                status__in=("pending_approval", "escalated", "stale"), decided_by__isnull=True
            )
        else:
            queue = Proposal.objects.filter(
                mode="dual", status="executed", decided_by__isnull=False, reviewed_by__isnull=True
            )
        return list(queue.order_by("created_at").values_list("pk", flat=True)[:25])

    def more_to_come(self) -> bool:
        """The reviewer stays while approved dual-band proposals are still on their way to execution."""
        from approvals.models import Proposal

        return self.role == "reviewer" and Proposal.objects.filter(mode="dual", status__in=NON_TERMINAL).exists()

    def run(self) -> None:
        from django.db import connection

        try:
            self.sign_in()
            while True:
                if self.role == "approver":
                    started = time.perf_counter()
                    page = self.client.get("/admin/approvals/proposal/?queue=mine")
                    self.figures.note(
                        "admin: approver's queue page", page.status_code, time.perf_counter() - started, page.content
                    )
                found = self.waiting()
                for proposal_id in found:
                    if self.role == "reviewer":
                        self._post("admin: review POST", proposal_id, {"step": "review", "reason": ""})
                    elif self.rng.random() < 0.1:
                        self._post(
                            "admin: approve / reject POST",
                            proposal_id,
                            {"step": "reject", "reason": "Not with two invoices still open."},
                        )
                    else:
                        self._post("admin: approve / reject POST", proposal_id, {"step": "approve", "reason": ""})
                if not found:
                    if self.stop.is_set() and not self.more_to_come():
                        return
                    time.sleep(0.5)
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.client.close()
            connection.close()


# --- Set-up ---------------------------------------------------------------------------------------------------------


def _prepare_environment(args) -> None:
    """A database and a Redis database of the run's own; this process and its children point at them."""
    import psycopg
    import redis

    os.environ["DJANGO_SETTINGS_MODULE"] = "gatehouse.settings"
    os.environ.setdefault("GATEHOUSE_ENV", "development")  # a load run on this machine: generated secrets, loopback
    os.environ["GATEHOUSE_VAR_DIR"] = str(args.workdir / "var")
    os.environ["DATABASE_URL"] = args.pg
    os.environ["GATEHOUSE_DB_NAME"] = args.db_name
    os.environ["REDIS_URL"] = f"{args.redis.rstrip('/')}/{args.redis_db}"
    os.environ.update(_gatehouse_env(args))
    with psycopg.connect(args.pg, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db_name}"')
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()


def _gatehouse_env(args) -> dict[str, str]:
    """The settings every process of the run shares (and the report prints)."""
    return {
        "GATEHOUSE_DEBUG": "false",
        "GATEHOUSE_LOG_LEVEL": "WARNING",
        "GATEHOUSE_TASK_SOFT_TIME_LIMIT": str(args.task_time_limit - 5),
        "GATEHOUSE_TASK_TIME_LIMIT": str(args.task_time_limit),
        "GATEHOUSE_AUDIT_DIGEST_KEY": args.digest_key,
    }


def _drop_database(args) -> None:
    """The run's database, and what its processes left in its Redis database (queue, rate limits, breakers)."""
    import psycopg
    import redis

    with psycopg.connect(args.pg, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
    redis.Redis.from_url(f"{args.redis.rstrip('/')}/{args.redis_db}").flushdb()


def _seed(stack, args) -> dict:
    """The demo inventory, generated CRM accounts, and the load's agents with the collections agent's grants."""
    from django.conf import settings

    from console.demo import seed_demo
    from governance.models import Agent as AgentModel
    from governance.models import ScopeGrant
    from governance.services import agent_token_issue
    from sandbox.testing import crm_control

    crm_token = secrets.token_urlsafe(24)
    token_file = Path(settings.VAR_DIR) / "sandbox" / "crm.token"  # seed_demo vaults the CRM's token from here
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(crm_token)
    crm_url = stack.crm("crm", crm_token)
    per_agent = args.accounts_per_agent
    accounts = crm_control(crm_url, "/_control/accounts", {"count": args.agents * per_agent})["accounts"]
    report = seed_demo(crm_url=crm_url, crm_staging_url="http://127.0.0.1:9")
    collections = AgentModel.objects.get(slug="collections-agent")
    grants = list(ScopeGrant.objects.filter(agent=collections))
    tokens = []
    for n in range(1, args.agents + 1):
        agent, _ = AgentModel.objects.get_or_create(
            slug=f"load-agent-{n:03d}",
            defaults={"name": f"Load agent {n}", "description": "bench/reliability.py", "owner": collections.owner},
        )
        for grant in grants:
            grant.pk, grant.agent = None, agent
            grant.save()
        tokens.append(agent_token_issue(agent=agent, channel="command", label="bench/reliability.py")[1])
    readonly = agent_token_issue(agent=AgentModel.objects.get(slug="reporting-agent"), channel="command")[1]
    return {
        "crm_url": crm_url,
        "tokens": tokens,
        "readonly_token": readonly,
        "accounts": [accounts[n * per_agent : (n + 1) * per_agent] for n in range(args.agents)],
        "passwords": report.passwords,
    }


def _node_env(args, node: int) -> dict[str, str]:
    """A node's processes: the run's settings; with --nodes, a var/ folder of the node's own (a machine's disk)."""
    env = _gatehouse_env(args)
    if args.nodes > 1:
        env["GATEHOUSE_VAR_DIR"] = str(args.workdir / f"node-{node}" / "var")
    return env


def web_names(args) -> list[str]:
    return ["web"] if args.nodes == 1 else [f"web-{node}" for node in range(1, args.nodes + 1)]


def worker_nodes(args) -> dict[str, int]:
    """Each Celery worker and its node: two on the one node, or one on each node of --nodes."""
    if args.nodes == 1:
        return {"worker-1": 1, "worker-2": 1}
    return {f"worker-{node}": node for node in range(1, args.nodes + 1)}


def start_worker(stack, args, name: str) -> None:
    stack.worker(name, concurrency=args.worker_concurrency, **_node_env(args, worker_nodes(args)[name]))


def _start_gatehouse(stack, args) -> list[str]:
    """What production runs, per node: gunicorn (uvicorn workers) and Celery; beat once, on the first node.

    Each process is a process group of its own (tests/stack.py); nodes share nothing but PostgreSQL and Redis.
    Returns each node's web address.
    """
    from tests.stack import BIN, free_port

    webs = []
    for node, name in enumerate(web_names(args), start=1):
        port = free_port()
        env = stack.env(**_node_env(args, node), GATEHOUSE_DB_POOL_SIZE=str(args.db_pool))
        argv = [str(BIN / "gunicorn"), "gatehouse.asgi:application", "-k", "uvicorn.workers.UvicornWorker"]
        argv += ["-w", str(args.web_workers), "-b", f"127.0.0.1:{port}", "--log-level", "info"]
        web = stack.start(name, argv, "Booting worker", env=env)
        deadline = time.monotonic() + 60
        while web.output().count("Application startup complete") < args.web_workers:
            if time.monotonic() > deadline or not web.alive():
                raise RuntimeError(f"gunicorn did not start its workers:\n{web.output()[-3000:]}")
            time.sleep(0.1)
        webs.append(f"http://127.0.0.1:{port}")
    for name in worker_nodes(args):
        start_worker(stack, args, name)
    stack.start(
        "beat",
        [str(BIN / "celery"), "-A", "gatehouse", "beat", "--loglevel", "INFO"],
        "beat: Starting",
        env=stack.env(**_node_env(args, 1)),
    )
    return webs


def process_kinds(stack, args) -> dict[str, list[int]]:
    """The pids of each kind of process now, for the CPU meter: each process started and everything below it."""
    from bench.profiling import descendants, postgres_backends

    def tree(names) -> list[int]:
        roots = [stack.processes[name].popen.pid for name in names if name in stack.processes]
        return [pid for root in roots for pid in descendants(root)]

    return {
        "web": tree(web_names(args)),
        "workers": tree(worker_nodes(args)),
        "beat": tree(["beat"]),
        "CRM": tree(["crm"]),
        "PostgreSQL": postgres_backends(args.db_name),
        "load generator": [os.getpid()],
    }


def sample_connections(args, stop: threading.Event, peak: list[int]) -> None:
    """The most connections to the run's database seen at once (each second, until stop), less the one asking."""
    import psycopg

    with psycopg.connect(args.pg, dbname=args.db_name, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [args.db_name]).fetchone()
            peak[0] = max(peak[0], (row[0] if row else 1) - 1)
            if stop.wait(1.0):
                return


# --- The run --------------------------------------------------------------------------------------------------------


def _fault(stack, args, at: float, log: list[str]) -> None:
    time.sleep(at)
    worker = stack.processes.get("worker-1")
    if worker is None:
        return
    from django.db import connection

    from approvals.models import Proposal

    in_flight = Proposal.objects.filter(status="executing").count()
    connection.close()
    stack.kill("worker-1")
    log.append(f"{at:.0f} s: SIGKILL worker-1 (pid {worker.popen.pid} and its pool; {in_flight} executing at the time)")
    time.sleep(args.restart_after)
    started = time.monotonic()
    start_worker(stack, args, "worker-1")
    log.append(f"{at + args.restart_after:.0f} s: worker-1 started again (ready in {time.monotonic() - started:.1f} s)")


def _drain(args, people: list[Person], stop_people: threading.Event) -> tuple[float, dict[str, int]]:
    """The people decide what is left; then wait until nothing is in flight, or the bound."""
    from django.db import connection
    from django.db.models import Count

    from approvals.models import Proposal

    stop_people.set()
    started = time.monotonic()
    deadline = started + args.drain_timeout
    for person in people:
        person.join(timeout=max(0.0, deadline - time.monotonic()))
    left: dict[str, int] = {}
    while time.monotonic() < deadline:
        left = dict(
            Proposal.objects.filter(status__in=NON_TERMINAL).values_list("status").annotate(n=Count("id")).order_by()
        )
        if not left and not any(person.is_alive() for person in people):
            break
        time.sleep(0.5)
    connection.close()
    return time.monotonic() - started, left


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def report_load(figures: Figures, seconds: float) -> None:
    print(f"  {'operation':<30} {'n':>7} {'rate/s':>8} {'p50 ms':>8} {'p99 ms':>8}  unexpected")
    total = 0
    for op in EXPECTED:
        lat = figures.latencies.get(op, [])
        bad = figures.unexpected.get(op, Counter())
        if not lat and not bad:
            continue
        total += len(lat) + sum(bad.values())
        unexpected = ", ".join(f"{status}×{n}" for status, n in sorted(bad.items(), key=str)) or "0"
        p50 = statistics.median(lat) if lat else float("nan")
        print(
            f"  {op:<30} {len(lat):>7} {len(lat) / seconds:>8.1f} {_ms(p50)} {_ms(_percentile(lat, 99))}  {unexpected}"
        )
    every = [x for values in figures.latencies.values() for x in values]
    print(
        f"  {'all requests':<30} {total:>7} {total / seconds:>8.1f} {_ms(statistics.median(every) if every else 0)} "
        f"{_ms(_percentile(every, 99))}  {figures.errors}"
    )
    for what, body in list(figures.examples.items())[:8]:
        print(f"    e.g. {what}: {body}")


def report_cost(cpu: dict[str, float], requests: int, executions: int, seconds: float, after: float) -> dict:
    """CPU seconds per kind of process during the load, and per request or execution: the capacity model's inputs."""
    print(
        f"\nCPU used during the load's last {seconds:.0f} s (from {after:.0f} s in; user + system, from /proc; "
        f"{os.cpu_count()} cores shared by everything)"
    )
    per = {"web": ("request", requests), "PostgreSQL": ("request", requests), "workers": ("execution", executions)}
    costs: dict[str, float] = {}
    for kind, used in cpu.items():
        line = f"  {kind:<15} {used:7.1f} s = {used / seconds:4.2f} cores"
        if kind in per and per[kind][1]:
            what, n = per[kind]
            costs[f"{kind}_cpu_ms_per_{what}"] = used * 1000 / n
            line += f"; {used * 1000 / n:6.2f} ms per {what} ({n} {what}s) = {n / used:5.0f} {what}s per core-second"
        print(line)
        costs[f"{kind}_cpu_seconds"] = used
    return costs


def execution_figures(run_started, run_ended) -> dict[str, float]:
    """From the database's own timestamps: end-to-end executions and the human bands' approval → executed."""
    from approvals.models import Proposal

    auto = list(
        Proposal.objects.filter(mode="auto", status="executed").values_list("created_at", "executed_at", named=True)
    )
    decided = list(
        Proposal.objects.filter(mode__in=("single", "dual"), status="executed", decided_at__isnull=False).values_list(
            "decided_at", "executed_at"
        )
    )
    retried = Proposal.objects.filter(status="executed", attempts__gt=1).count()
    in_window = sum(1 for row in auto if run_started <= row.executed_at <= run_ended)
    seconds = (run_ended - run_started).total_seconds()
    auto_lat = [(row.executed_at - row.created_at).total_seconds() for row in auto]
    human_lat = [(executed - approved).total_seconds() for approved, executed in decided]
    return {
        "auto_executed": len(auto),
        "auto_rate_in_window": in_window / seconds,
        "auto_post_to_executed_p50_s": statistics.median(auto_lat) if auto_lat else float("nan"),
        "auto_post_to_executed_p99_s": _percentile(auto_lat, 99),
        "approved_executed": len(decided),
        "approval_to_executed_p50_s": statistics.median(human_lat) if human_lat else float("nan"),
        "approval_to_executed_p99_s": _percentile(human_lat, 99),
        "executed_on_a_later_attempt": retried,
    }


def reconcile(crm_url: str, figures: Figures, left: dict[str, int]) -> list[tuple[str, bool, str]]:
    from django.db.models import Count

    from approvals.models import OutboxMessage, Proposal
    from audit.integrity import verify_chain
    from audit.models import AuditEvent
    from sandbox.testing import crm_control

    items: list[tuple[str, bool, str]] = []
    by_status = dict(Proposal.objects.values_list("status").annotate(n=Count("id")).order_by())
    total = sum(by_status.values())
    stuck = list(Proposal.objects.filter(status__in=NON_TERMINAL).values_list("pk", "status", "mode", "attempts")[:10])
    detail = ", ".join(f"{status} {n}" for status, n in sorted(by_status.items()))
    if stuck:
        detail += "; not terminal: " + "; ".join(
            f"{pk} {status} ({mode}, {tries} attempts)" for pk, status, mode, tries in stuck
        )
    items.append((f"every proposal in a terminal state ({total} proposals)", not stuck, detail))
    failed = list(Proposal.objects.filter(status="failed").values_list("pk", "failure_reason")[:5])
    items.append(
        ("no proposal failed", not failed, "; ".join(f"{pk}: {why[:120]}" for pk, why in failed) or "0 failed")
    )
    items.append(
        (
            "every 201 answer is exactly one proposal",
            figures.created == total,
            f"{figures.created} answered 201, {total} in the database",
        )
    )

    stats = crm_control(crm_url, "/_stats")
    executed = {str(pk) for pk in Proposal.objects.filter(status="executed").values_list("pk", flat=True)}
    by_key = stats["writes_by_key"]
    twice = sorted(key for key, n in by_key.items() if n > 1)
    missing, extra = executed - set(by_key), set(by_key) - executed
    ok = stats["writes_total"] == len(executed) and not twice and not missing and not extra
    detail = f"{stats['writes_total']} CRM writes, {len(executed)} executed proposals, {len(twice)} keys applied twice"
    if missing or extra:
        detail += f", {len(missing)} executed without a write, {len(extra)} writes without an executed proposal"
    items.append(("CRM writes == executed proposals, none applied twice", ok, detail))

    unpublished = OutboxMessage.objects.filter(published_at__isnull=True).count()
    outbox = OutboxMessage.objects.count()
    items.append(("no outbox message left unpublished", unpublished == 0, f"{unpublished} of {outbox} unpublished"))

    started = time.perf_counter()
    chain = verify_chain()
    items.append(
        (
            "audit chain verifies",
            chain.ok,
            f"{chain.checked} events in {time.perf_counter() - started:.1f} s"
            + ("" if chain.ok else f": {chain.reason}"),
        )
    )

    # One event per transition, read from each proposal's own events in order (transition_problem below).
    events: dict = {}
    for proposal_id, verb, actor_type in (
        AuditEvent.objects.filter(proposal_id__isnull=False)
        .order_by("id")
        .values_list("proposal_id", "verb", "actor_type")
    ):
        events.setdefault(proposal_id, []).append((verb, actor_type))
    wrong = []
    for pk, status, reviewed in Proposal.objects.values_list("pk", "status", "reviewed_by"):
        problem = transition_problem(events.get(pk, []), status, reviewed is not None)
        if problem:
            wrong.append(f"{pk} ({status}): {problem}")
    detail = f"{sum(len(e) for e in events.values())} proposal events for {total} proposals"
    if wrong:
        detail += f"; {len(wrong)} wrong: " + "; ".join(wrong[:5])
    items.append(("one audit event per proposal transition", not wrong, detail))
    items.append(("no unexpected answer during the load", figures.errors == 0, f"{figures.errors} unexpected"))
    if left:
        items.append(("queue drained within the bound", False, f"left: {left}"))
    return items


def transition_problem(events: list[tuple[str, str]], status: str, reviewed: bool) -> str:
    """What is wrong with one proposal's audit events (verb, actor type; in order) for where it ended ("" if nothing).

    Each transition has one event: proposed once; each decision that counted (auto_approved, approved) starts one
    execution (executing), which ends in executed or failed, or in stale when the record changed before the write
    (back to a person, who decides again); rejected, cancelled, executed, failed once if that is where it ended; a
    review once if reviewed. A `refreshed` event is a decision taken again on the record as it is: by the worker (auto
    still auto, then written) or at a person's approval that therefore did not count. Nothing is written on a decision
    that did not count: an executed proposal's last decision comes after its last stale or person's refreshed event.
    """
    verbs = Counter(verb for verb, _ in events)
    decisions = verbs["auto_approved"] + verbs["approved"]
    ends_in_execution = status in ("executing", "executed", "failed")
    want = {
        "proposed": 1,
        "auto_approved": min(verbs["auto_approved"], 1),  # at most once, as the first decision
        "executing": verbs["stale"] + ends_in_execution,
        "rejected": int(status == "rejected"),
        "cancelled": int(status == "cancelled"),
        "executed": int(status == "executed"),
        "failed": int(status == "failed"),
        "reviewed": int(reviewed),
    }
    problems = [f"{verb} ×{verbs[verb]} (expected {n})" for verb, n in want.items() if verbs[verb] != n]
    problems += [
        f"{verb} ×{n} (not a transition of this run)"
        for verb, n in verbs.items()
        if verb not in (*want, "approved", "stale", "refreshed")
    ]
    if decisions != verbs["executing"] + (status == "approved"):
        problems.append(f"{decisions} decisions that counted for {verbs['executing']} executions begun")
    order = [verb if (verb, who) != ("refreshed", "human") else "refreshed by a person" for verb, who in events]
    if "auto_approved" in order and "approved" in order and order.index("approved") < order.index("auto_approved"):
        problems.append("auto_approved after a person's approval")
    if status == "executed":
        last_decision = max((i for i, verb in enumerate(order) if verb in ("auto_approved", "approved")), default=-1)
        undone = [i for i, verb in enumerate(order) if verb in ("stale", "refreshed by a person")]
        if undone and undone[-1] > last_decision:
            problems.append("written on a decision that did not count")
    return "; ".join(problems)


def _versions() -> str:
    import django
    import redis
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0].split()[0]
    info = redis.Redis.from_url(os.environ["REDIS_URL"]).info("server")
    return (
        f"PostgreSQL {pg}, Redis {info['redis_version']}, Python {platform.python_version()}, "
        f"Django {django.get_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="Length of the load (default 180).")
    parser.add_argument("--agents", type=int, default=40, help="Agents, one closed-loop client each (default 40).")
    parser.add_argument("--accounts-per-agent", type=int, default=5, help="CRM accounts each agent works on.")
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="Run as this many machines would: each node its own gunicorn and Celery worker (own process groups and "
        "var/ folder), the agents spread over the nodes' web ports, beat once (default 1: one gunicorn, two workers).",
    )
    parser.add_argument(
        "--only",
        help="Comma-separated operations to draw (of the load's list, e.g. 'read' or 'propose auto: note'): a load of "
        "one kind, to cost it (the CPU figures) on its own.",
    )
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn (uvicorn) worker processes per node.")
    parser.add_argument(
        "--cost-after",
        type=float,
        default=10.0,
        help="Seconds into the load when the CPU figures start counting (the processes' first requests import and "
        "warm up; default 10).",
    )
    parser.add_argument("--db-pool", type=int, default=10, help="GATEHOUSE_DB_POOL_SIZE of each web process.")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="Pool size of each Celery worker.")
    parser.add_argument(
        "--kill-worker-at",
        type=float,
        default=None,
        help="SIGKILL worker-1 this many seconds into the load, then start it again (default: a third of the way; "
        "0: no fault).",
    )
    parser.add_argument("--restart-after", type=float, default=5.0, help="Seconds before the killed worker restarts.")
    parser.add_argument(
        "--task-time-limit",
        type=int,
        default=20,
        help="GATEHOUSE_TASK_TIME_LIMIT (soft: 5 less). A killed worker's claim is taken over after it + 5 s.",
    )
    parser.add_argument("--drain-timeout", type=float, default=150.0, help="Bound on the wait for the queue to drain.")
    parser.add_argument("--pg", default=os.environ.get("DATABASE_URL", DEFAULT_PG), help="PostgreSQL server URL.")
    parser.add_argument("--db-name", default="gatehouse_load", help="Database to drop, create and drop again.")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server URL, without a database number.")
    parser.add_argument("--redis-db", type=int, default=12, help="Redis database number (FLUSHED at the start).")
    parser.add_argument("--seed", type=int, default=7, help="Random seed of the agents' choices.")
    parser.add_argument("--keep", action="store_true", help="Keep the database and the processes' logs.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = parser.parse_args()
    if args.agents < 2:
        parser.error("--agents must be at least 2")
    if args.task_time_limit < 7:
        parser.error("--task-time-limit must be at least 7")
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    if not 0 <= args.cost_after < args.seconds:
        parser.error("--cost-after must be less than --seconds")
    operations = OPERATIONS
    if args.only:
        names = [name.strip() for name in args.only.split(",")]
        unknown = [name for name in names if name not in OPERATIONS]
        if unknown:
            parser.error(f"--only: unknown operation {unknown[0]!r}; one of: {', '.join(OPERATIONS)}")
        operations = {name: OPERATIONS[name] for name in names}
    # A load of some operations only has people in it when it proposes what waits for them: their polling of the
    # admin would otherwise be much of the cost of, say, reads.
    with_people = not args.only or bool({"propose one-approver", "propose dual"} & set(operations))
    kill_at = args.seconds / 3 if args.kill_worker_at is None else args.kill_worker_at
    args.workdir = Path(tempfile.mkdtemp(prefix="gatehouse-reliability-"))
    args.digest_key = secrets.token_hex(32)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    wall = time.monotonic()
    sys.path.insert(0, str(ROOT))
    figures = Figures()
    results: dict = {}
    failed = True
    stack = None
    try:
        _prepare_environment(args)
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connection
        from django.utils import timezone

        from approvals.models import Proposal
        from bench.profiling import CpuMeter
        from gatehouse.celery import app as celery_app
        from tests.stack import Stack

        call_command("migrate", verbosity=0)
        stack = Stack(args.workdir)
        stack.queue = "gatehouse-load"
        celery_app.conf.task_default_queue = stack.queue
        seeded = _seed(stack, args)
        webs = _start_gatehouse(stack, args)
        connection.close()  # the run's threads open their own
        lease = args.task_time_limit + 5
        print(f"Gatehouse reliability run — {_versions()}")
        print(
            f"  machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start; everything below "
            "runs on it, the load generator included"
        )
        gunicorn = f"gunicorn -k uvicorn.workers.UvicornWorker -w {args.web_workers}"
        celery = f"Celery worker (prefork, concurrency {args.worker_concurrency})"
        beat = f"beat (outbox sweep every {settings.CELERY_BEAT_SCHEDULE['outbox-sweep']['schedule']:.0f} s)"
        if args.nodes == 1:
            print(f"  processes: sample CRM; {gunicorn}; 2 × {celery}; {beat}")
        else:
            print(
                f"  processes: sample CRM; {args.nodes} nodes, each its own {gunicorn} and {celery}, in process groups "
                f"and var/ folders of their own, sharing PostgreSQL and Redis; the agents spread over the nodes' web "
                f"ports; {beat} on node 1"
            )
        print(
            f"  settings: DEBUG off, {args.db_pool} database connections pooled per web process, agent rate "
            f"{settings.GATEHOUSE_AGENT_RATE} per agent, task time limit "
            f"{args.task_time_limit} s (execution lease {lease} s), republish after "
            f"{settings.GATEHOUSE_OUTBOX_REPUBLISH_AFTER.total_seconds():.0f} s, database {args.db_name}, Redis db "
            f"{args.redis_db}"
        )
        print(
            f"  load: {args.agents} agents × {args.accounts_per_agent} accounts, {args.seconds:.0f} s closed loop"
            + (f" of {', '.join(operations)} only" if args.only else "")
            + ("; an approver and a reviewer in the admin" if with_people else "")
            + "; fault: "
            + (f"SIGKILL worker-1 at {kill_at:.0f} s, restart {args.restart_after:.0f} s later" if kill_at else "none")
        )
        print(flush=True)

        stop_people = threading.Event()
        people = [
            Person(
                web=webs[n % len(webs)],
                username=name,
                password=seeded["passwords"][name],
                role=name,
                figures=figures,
                stop=stop_people,
                seed=args.seed + n,
            )
            for n, name in enumerate(("approver", "reviewer"))
            if with_people
        ]
        shared = Shared()
        run_started = timezone.now()
        started = time.monotonic()
        stop_at = started + args.seconds
        agents = [
            Agent(
                n,
                web=webs[n % len(webs)],
                token=seeded["tokens"][n],
                readonly_token=seeded["readonly_token"],
                accounts=seeded["accounts"][n],
                figures=figures,
                shared=shared,
                stop_at=stop_at,
                seed=args.seed * 1000 + n,
                operations=operations,
            )
            for n in range(args.agents)
        ]
        meter = CpuMeter(lambda: process_kinds(stack, args))
        cost_from: dict = {}

        def start_costing() -> None:
            cost_from.update(at=timezone.now(), requests=figures.answers)
            meter.start()

        costing = threading.Timer(args.cost_after, start_costing)
        peak_connections, sampling = [0], threading.Event()
        sampler = threading.Thread(target=sample_connections, args=(args, sampling, peak_connections), daemon=True)
        sampler.start()
        for thread in [*people, *agents, costing]:
            thread.start()
        fault_log: list[str] = []
        if kill_at and kill_at < args.seconds:
            threading.Thread(target=_fault, args=(stack, args, kill_at, fault_log), daemon=True).start()
        while any(agent.is_alive() for agent in agents):
            time.sleep(min(10.0, max(0.2, stop_at - time.monotonic())))
            if time.monotonic() < stop_at:
                done = sum(len(v) for v in figures.latencies.values())
                print(
                    f"  … {time.monotonic() - started:4.0f} s  {done:>7} answers  {figures.errors} unexpected",
                    flush=True,
                )
        load_seconds = time.monotonic() - started
        run_ended = timezone.now()
        costing.join()
        cpu = meter.stop()
        cost_seconds = (run_ended - cost_from["at"]).total_seconds()
        cost_requests = figures.answers - cost_from["requests"]
        cost_executions = Proposal.objects.filter(executed_at__range=(cost_from["at"], run_ended)).count()
        connection.close()
        sampling.set()
        sampler.join()
        drain_seconds, left = _drain(args, people, stop_people)
        for name in [*web_names(args), "beat", *worker_nodes(args)]:
            stack.stop(name)

        print(f"\nLoad: {load_seconds:.0f} s, {args.agents} agents; answers as expected, and unexpected (errors)")
        report_load(figures, load_seconds)
        for person in people:
            if person.failure:
                print(f"  {person.username} stopped: {person.failure}")
        results = execution_figures(run_started, run_ended)
        print("\nExecutions (database timestamps)")
        print(
            f"  auto band, POST → executed in the CRM: {results['auto_executed']} executed, "
            f"{results['auto_rate_in_window']:.1f}/s during the load; p50 {results['auto_post_to_executed_p50_s']:.2f} "
            f"s, p99 {results['auto_post_to_executed_p99_s']:.2f} s"
        )
        print(
            f"  one-approver and dual bands, approval → executed: {results['approved_executed']} executed; p50 "
            f"{results['approval_to_executed_p50_s']:.2f} s, p99 {results['approval_to_executed_p99_s']:.2f} s "
            "(target p50 < 1 s)"
        )
        for line in fault_log:
            print(f"  fault: {line}")
        print(
            f"  executed on a later attempt (claim taken over after a worker died, or a retry): "
            f"{results['executed_on_a_later_attempt']}"
        )
        print(f"  drained in {drain_seconds:.1f} s after the load (bound {args.drain_timeout:.0f} s)")
        requests = figures.answers
        results.update(report_cost(cpu, cost_requests, cost_executions, cost_seconds, args.cost_after))
        results["peak_database_connections"] = peak_connections[0]
        print(
            f"  database connections to {args.db_name}, at most {peak_connections[0]} (sampled each second): "
            f"{len(web_names(args))} gunicorn × {args.web_workers} workers, each a pool of up to {args.db_pool}; "
            f"{len(worker_nodes(args))} Celery workers × (1 + {args.worker_concurrency} pool processes); beat"
        )

        print("\nReconciliation")
        items = reconcile(seeded["crm_url"], figures, left)
        for what, ok, detail in items:
            print(f"  {'PASS' if ok else 'FAIL'}  {what}: {detail}")
        failed = not all(ok for _, ok, _ in items)
        results.update(
            seconds=load_seconds,
            agents=args.agents,
            nodes=args.nodes,
            operations=list(operations),
            requests=requests,
            unexpected=figures.errors,
            reconciliation_passed=not failed,
            per_operation={
                op: {
                    "n": len(lat),
                    "p50_ms": statistics.median(lat) * 1000,
                    "p99_ms": _percentile(lat, 99) * 1000,
                    "unexpected": sum(figures.unexpected.get(op, Counter()).values()),
                }
                for op, lat in figures.latencies.items()
            },
        )
        print(f"\n{'PASS' if not failed else 'FAIL'} — whole run {time.monotonic() - wall:.0f} s")
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the processes", file=sys.stderr)
    finally:
        if stack is not None:
            stack.stop_all()
        if "django" in sys.modules and sys.modules["django"].apps.apps.ready:
            from django.db import connections

            connections.close_all()
        if args.keep:
            print(f"kept: database {args.db_name}, logs in {args.workdir}", file=sys.stderr)
        else:
            _drop_database(args)
            import shutil

            shutil.rmtree(args.workdir, ignore_errors=True)
    if args.json and results:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
