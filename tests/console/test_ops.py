"""Operations: /healthz, /readyz, /metrics, JSON log lines with the audit trail's request id, progress output."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.test import RequestFactory, override_settings
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from core.logs import JsonFormatter
from core.progress import LINE_EVERY, Progress

LATENCY = "gatehouse_http_request_duration_seconds"


def samples(body: bytes) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, by name and labels: parsing it is the test that it is valid."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[name, frozenset(labels.items())]


# --- /healthz and /readyz ---------------------------------------------------------------------------------------


def test_healthz_answers_without_touching_the_database(client):
    response = client.get("/healthz")  # no django_db mark: a query would raise here
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_is_ok_when_the_database_and_the_broker_answer(client, f):
    f.SystemFactory()
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["broker"]["status"] == "ok"
    assert body["checks"]["circuits"] == {"status": "ok", "systems": 1, "open": 0, "open_systems": []}


@pytest.mark.django_db
def test_readyz_is_503_naming_the_broker_when_redis_does_not_answer(client):
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0"):  # nothing listens on port 1
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"] == {"status": "down", "kind": "redis", "error": "ConnectionError"}
    assert body["checks"]["database"] == {"status": "ok"}
    assert b"127.0.0.1:1" not in response.content  # no address or URL leaves the process


@pytest.mark.django_db
def test_readyz_is_503_when_the_filesystem_brokers_folders_are_gone(client, tmp_path):
    missing = str(tmp_path / "no-such-folder")
    options = {"data_folder_in": missing, "data_folder_out": missing, "control_folder": missing}
    with override_settings(CELERY_BROKER_URL="filesystem://", CELERY_BROKER_TRANSPORT_OPTIONS=options):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {"status": "down", "kind": "filesystem", "error": "FileNotFoundError"}
    assert missing.encode() not in response.content


@pytest.mark.django_db
def test_readyz_is_503_when_the_database_does_not_answer(client, monkeypatch):
    class Unreachable:
        """Stands in for a connection whose server is gone: what psycopg or sqlite3 raise surfaces as this."""

        def cursor(self):
            raise OperationalError("connection to server at 10.1.2.3, port 5432 failed: Connection refused")

    monkeypatch.setattr("console.health.connection", Unreachable())
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == {"status": "down", "error": "OperationalError"}
    assert checks["circuits"] == {"status": "unknown"}
    assert b"10.1.2.3" not in response.content


@pytest.mark.django_db
def test_an_open_circuit_is_degraded_not_unready_and_named_only_to_trusted_callers(client, demo):
    from connectors import limits
    from governance.models import System

    crm = System.objects.get(slug="crm")
    try:
        for _ in range(crm.breaker_threshold):
            limits.record(crm, failed=True, error="answered 500")
        response = client.get("/readyz")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "degraded"
        assert body["checks"]["circuits"] == {"status": "degraded", "systems": 3, "open": 1, "open_systems": ["crm"]}

        remote = client.get("/readyz", REMOTE_ADDR="203.0.113.9").json()["checks"]["circuits"]
        assert remote == {"status": "degraded", "systems": 3, "open": 1}

        found = samples(client.get("/metrics").content)
        assert value(found, "gatehouse_system_circuit_open", system="crm") == 1
        assert value(found, "gatehouse_system_circuit_open", system="crm-staging") == 0
    finally:
        limits.reset(crm)


# --- /metrics ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_count_proposals_by_state_executions_queues_and_sla_breaches(client, demo):
    from approvals.choices import DecisionMode, ProposalStatus
    from approvals.models import OutboxMessage, Proposal
    from audit.choices import Channel, Verb
    from audit.services import audit_record
    from governance.models import ActionType, Agent, System

    crm = System.objects.get(slug="crm")
    now = timezone.now()
    common = {
        "agent": Agent.objects.get(slug="collections-agent"),
        "system": crm,
        "action_type": ActionType.objects.get(system=crm, name="update_credit_limit"),
        "record_id": "4471",
        "payload": {"credit_limit": "5000.00"},
        "channel": "api",
        "mode": DecisionMode.SINGLE,
    }
    late, on_time = now - timedelta(hours=1), now + timedelta(hours=1)
    Proposal.objects.create(status=ProposalStatus.PENDING_APPROVAL, sla_due_at=late, **common)
    Proposal.objects.create(status=ProposalStatus.PENDING_APPROVAL, sla_due_at=on_time, **common)
    escalated = Proposal.objects.create(status=ProposalStatus.ESCALATED, sla_due_at=late, **common)
    audit_record(verb=Verb.ESCALATED, channel=Channel.TASK, proposal_id=escalated.pk, summary="passed its SLA")
    approved = Proposal.objects.create(status=ProposalStatus.APPROVED, **common)
    OutboxMessage.objects.create(proposal=approved)
    OutboxMessage.objects.filter(proposal=approved).update(created_at=now - timedelta(seconds=120))
    Proposal.objects.create(status=ProposalStatus.EXECUTED, executed_at=now, **common)
    Proposal.objects.create(  # a dual approval whose second review is overdue
        status=ProposalStatus.EXECUTED, executed_at=now, review_due_at=late, **{**common, "mode": DecisionMode.DUAL}
    )
    Proposal.objects.create(status=ProposalStatus.REVERSED, executed_at=now - timedelta(hours=2), **common)
    Proposal.objects.create(status=ProposalStatus.FAILED, **common)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    found = samples(response.content)

    by_state = {status: value(found, "gatehouse_proposals", status=status) for status in ProposalStatus.values}
    assert by_state == {
        **dict.fromkeys(ProposalStatus.values, 0.0),
        "pending_approval": 2,
        "escalated": 1,
        "approved": 1,
        "executed": 2,
        "reversed": 1,
        "failed": 1,
    }
    assert value(found, "gatehouse_executions_total", outcome="executed") == 3  # the reversed one ran too
    assert value(found, "gatehouse_executions_total", outcome="failed") == 1
    assert value(found, "gatehouse_sla_breached_proposals", kind="decision") == 2
    assert value(found, "gatehouse_sla_breached_proposals", kind="review") == 1
    assert value(found, "gatehouse_sla_escalations_total") == 1
    assert value(found, "gatehouse_outbox_backlog") == 1
    assert 119 <= value(found, "gatehouse_outbox_oldest_unpublished_age_seconds") < 180
    assert 119 <= value(found, "gatehouse_execution_queue_oldest_age_seconds") < 180
    assert value(found, "gatehouse_database_up") == 1

    OutboxMessage.objects.filter(proposal=approved).update(published_at=now)
    found = samples(client.get("/metrics").content)
    assert value(found, "gatehouse_outbox_backlog") == 0
    assert value(found, "gatehouse_outbox_oldest_unpublished_age_seconds") == 0
    assert value(found, "gatehouse_execution_queue_oldest_age_seconds") >= 119  # published, still not taken up


@pytest.mark.django_db
def test_the_queue_age_is_the_wait_until_a_worker_claims_and_duplicate_deliveries_are_counted(client, demo):
    """The queue-age alert's metric follows one proposal: waiting for a worker (its age), taken up (0), executed (0);
    deliveries after the claim are duplicates, counted at scrape time from the proposal rows."""
    from approvals.choices import DecisionMode, ProposalStatus
    from approvals.execution import proposal_claim, proposal_execute, proposal_record_executed
    from approvals.models import OutboxMessage, Proposal
    from governance.models import ActionType, Agent, System

    crm = System.objects.get(slug="crm")
    approved = Proposal.objects.create(
        agent=Agent.objects.get(slug="collections-agent"),
        system=crm,
        action_type=ActionType.objects.get(system=crm, name="update_credit_limit"),
        record_id="4471",
        payload={"credit_limit": "2300.00"},
        channel="api",
        mode=DecisionMode.AUTO,
        status=ProposalStatus.APPROVED,
    )
    OutboxMessage.objects.create(proposal=approved, published_at=timezone.now())  # in the broker, no worker took it
    OutboxMessage.objects.filter(proposal=approved).update(created_at=timezone.now() - timedelta(seconds=400))

    def scrape() -> tuple[float, float]:
        found = samples(client.get("/metrics").content)
        return (
            value(found, "gatehouse_execution_queue_oldest_age_seconds"),
            value(found, "gatehouse_duplicate_deliveries_total"),
        )

    age, duplicates = scrape()
    assert 399 <= age < 460 and duplicates == 0  # past the README's alert threshold (300 s)

    assert proposal_claim(proposal_id=approved.pk) is not None
    assert scrape() == (0, 0)  # taken up: no longer waiting, whatever the execution then takes
    assert proposal_execute(proposal_id=approved.pk).duplicate  # the broker delivers it again meanwhile
    assert scrape() == (0, 1)
    proposal_record_executed(proposal_id=approved.pk, before={}, after={"credit_limit": "2300.00"}, compensation={})
    assert proposal_execute(proposal_id=approved.pk).duplicate  # and once more after it finished
    assert scrape() == (0, 2)


@pytest.mark.django_db
def test_request_latency_is_observed_by_route_name_never_by_raw_path(client, demo, agent_client):
    def count(route: str, status: str) -> float:
        labels = {"route": route, "method": "GET", "status": status}
        return REGISTRY.get_sample_value(f"{LATENCY}_count", labels) or 0.0

    me, missing, unmatched = count("api-me", "2xx"), count("api-proposal", "4xx"), count("unmatched", "4xx")
    api = agent_client("collections-agent")
    assert api.get("/api/v1/me").status_code == 200
    assert api.get("/api/v1/proposals/00000000-0000-0000-0000-000000000000").status_code == 404
    assert api.get("/api/v1/no-such-path/4471").status_code == 404
    assert count("api-me", "2xx") == me + 1
    assert count("api-proposal", "4xx") == missing + 1
    assert count("unmatched", "4xx") == unmatched + 1

    body = client.get("/metrics").content.decode()
    assert 'route="api-me"' in body
    assert "00000000-0000" not in body and "no-such-path" not in body


def test_the_mcp_endpoint_is_observed_around_the_router(json_lines):
    from console.metrics import with_mcp_metrics

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def ignore(message):
        return None

    def count() -> float:
        return REGISTRY.get_sample_value(f"{LATENCY}_count", {"route": "mcp", "method": "POST", "status": "4xx"}) or 0

    wrapped = with_mcp_metrics(app)
    before = count()
    mcp = {"type": "http", "path": "/mcp", "method": "POST", "headers": [(b"x-request-id", b"mcp-trace-1")]}
    django = {"type": "http", "path": "/admin/", "method": "POST", "headers": []}  # Django's middleware measures it
    # A thread of its own: the browser tests' Playwright keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, wrapped(mcp, None, ignore)).result()
        thread.submit(asyncio.run, wrapped(django, None, ignore)).result()
    assert count() == before + 1
    (line,) = json_lines()
    assert line["route"] == "mcp" and line["status"] == 401 and line["request_id"] == "mcp-trace-1"


@pytest.mark.django_db
def test_metrics_answer_loopback_or_the_token_and_refuse_everyone_else(settings):
    from console.metrics import metrics

    factory = RequestFactory()
    settings.GATEHOUSE_METRICS_TOKEN = ""
    assert metrics(factory.get("/metrics", REMOTE_ADDR="127.0.0.1")).status_code == 200
    assert metrics(factory.get("/metrics", REMOTE_ADDR="::1")).status_code == 200
    assert metrics(factory.get("/metrics", REMOTE_ADDR="10.0.0.8")).status_code == 403
    # A proxy on the same machine relays outside callers from loopback: the forwarding header gives it away.
    relayed = factory.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert metrics(relayed).status_code == 403

    settings.GATEHOUSE_METRICS_TOKEN = "s3cret-scrape-token"
    with_token = factory.get("/metrics", REMOTE_ADDR="10.0.0.8", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert metrics(with_token).status_code == 200
    wrong = factory.get("/metrics", REMOTE_ADDR="10.0.0.8", HTTP_AUTHORIZATION="Bearer s3cret-scrape-tokeX")
    assert metrics(wrong).status_code == 403
    assert metrics(factory.get("/metrics", REMOTE_ADDR="10.0.0.8")).status_code == 403


# --- JSON logs ----------------------------------------------------------------------------------------------------


@pytest.fixture
def json_lines():
    """What some loggers write through the JSON formatter, as parsed lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(name) for name in ("gatehouse.access", "django.request", "tests.ops")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.django_db
def test_the_log_line_of_a_request_carries_the_request_id_of_its_audit_event(demo, agent_client, json_lines):
    from audit.choices import Verb
    from audit.models import AuditEvent

    response = agent_client("reporting-agent").post(  # it may not write: refused, and the refusal audited
        "/api/v1/proposals",
        data={"system": "crm", "action": "update_credit_limit", "record_id": "4471", "payload": {}, "reason": "x"},
        content_type="application/json",
        HTTP_X_REQUEST_ID="ops-trace-4471",
    )
    assert response.status_code == 403
    event = AuditEvent.objects.filter(verb=Verb.DENIED).latest("id")
    lines = json_lines()
    (line,) = [entry for entry in lines if entry.get("route") == "api-proposals"]
    assert line["request_id"] == event.request_id == "ops-trace-4471"
    # Django's own "Forbidden" line comes after the middleware let go of the id: it is taken from the request.
    (django_line,) = [entry for entry in lines if entry["logger"] == "django.request"]
    assert django_line["request_id"] == "ops-trace-4471" and django_line["status_code"] == 403
    assert line["logger"] == "gatehouse.access" and line["level"] == "INFO"
    # The message rounds the duration to 0.1 ms, the field keeps more digits: compare the shape, then the value.
    duration = re.fullmatch(r"POST /api/v1/proposals 403 (\d+\.\d) ms", line["message"])
    assert duration and abs(float(duration.group(1)) - line["duration_ms"]) <= 0.051
    assert line["method"] == "POST" and line["status"] == 403 and line["path"] == "/api/v1/proposals"
    assert line["timestamp"].endswith("+00:00")
    assert "task_id" not in line


def test_a_log_line_in_a_celery_task_carries_the_task_id(json_lines):
    from gatehouse.celery import app

    @app.task(name="tests.ops.log_inside_a_task", bind=True)
    def log_inside_a_task(self) -> str:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("tests.ops").exception("inside %s", "a task", extra={"proposal_id": "p-1"})
        return self.request.id

    task_id = log_inside_a_task.apply().get()
    (line,) = json_lines()
    assert line["task_id"] == task_id and line["task_name"] == "tests.ops.log_inside_a_task"
    assert line["message"] == "inside a task" and line["level"] == "ERROR" and line["request_id"] is None
    assert line["proposal_id"] == "p-1"
    assert "ValueError: boom" in line["exc_info"]


# --- Progress -----------------------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_draws_one_redrawn_bar_on_a_terminal():
    out, clock = Terminal(), Clock()
    with Progress(out, total=200, label="verify_audit", unit="events", clock=clock) as progress:
        progress.update(50)
        clock.now += 1
        progress.update(100)
        progress.update(150)  # within the redraw interval: not drawn
        clock.now += 2
        progress.update(200)
    text = out.getvalue()
    frames = text.split("\r")[1:]
    assert len(frames) == 4  # 50, 100, 200, and the final frame
    assert frames[0].startswith("[#######-----------------------] verify_audit: 50/200 events (25%)")
    assert frames[1].startswith("[###############---------------] verify_audit: 100/200 events (50%), 1 s")
    assert frames[-1] == "[##############################] verify_audit: 200/200 events (100%), 3 s\x1b[K\n"
    assert text.count("\n") == 1


def test_progress_prints_a_plain_line_now_and_then_elsewhere():
    out, clock = io.StringIO(), Clock()
    with Progress(out, total=None, label="reversal 7", unit="steps", clock=clock) as progress:
        progress.update(1)
    assert out.getvalue() == ""  # a short run says nothing: its result says enough

    with Progress(out, total=10, label="export_audit", unit="events", clock=clock) as progress:
        progress.update(3)
        clock.now += LINE_EVERY
        progress.update(4)
        clock.now += 1
        progress.update(9)  # too soon for another line: the closing line tells it
    clock.now += LINE_EVERY
    with Progress(out, total=10, label="export_audit", unit="events", clock=clock) as progress:
        clock.now += LINE_EVERY
        progress.update(10)  # already told: no closing line repeats it
    assert out.getvalue().splitlines() == [
        "export_audit: 4/10 events (40%), 10 s",
        "export_audit: 9/10 events (90%), 11 s",
        "export_audit: 10/10 events (100%), 10 s",
    ]
    assert "\r" not in out.getvalue()


@pytest.mark.django_db
def test_verify_audit_shows_its_progress_on_stderr_and_keeps_stdout_for_the_result(f):
    from audit.choices import Channel, Verb
    from audit.services import audit_record

    for number in range(3):
        audit_record(verb=Verb.READ, channel=Channel.COMMAND, summary=f"read {number}")
    out, err = io.StringIO(), Terminal()
    call_command("verify_audit", stdout=out, stderr=err)
    assert out.getvalue() == "Audit chain intact: 3 event(s).\n"
    assert err.getvalue().endswith("verify_audit: 3/3 events (100%), 0 s\x1b[K\n")
    assert "\x1b[31" not in err.getvalue()  # not in the red a command's stderr uses for errors

    quiet = io.StringIO()
    call_command("verify_audit", stdout=io.StringIO(), stderr=quiet)
    assert quiet.getvalue() == ""  # not a terminal, and short
