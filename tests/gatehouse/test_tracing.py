"""Tracing's switch and what it leaves behind: off by default (no provider, blank trace ids, hashes as before); on, the
trace id in the audit event (hashed, also by PostgreSQL's append) and in the JSON log line, and a proposal's later
work continuing the trace that decided it. The end-to-end traces are in tests/approvals/test_tracing.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from audit.integrity import verify_chain
from audit.models import AuditEvent
from audit.services import audit_record
from core import tracing
from core.logs import JsonFormatter
from gatehouse.tracing import tracing_wanted
from governance.choices import Role
from tests.stack import ROOT

ENDPOINT = "http://127.0.0.1:4318"


@pytest.fixture
def recorded():
    """Gatehouse's spans recorded in memory by a provider of the test's own (the global one stays untouched)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.tracing_enable(provider.get_tracer("test"))
    yield exporter
    tracing.tracing_enable(None)


def test_a_process_started_without_otel_variables_sets_up_nothing():
    """manage.py runs tracing_start like every process; with no OTEL_* variable there is no provider, not even the
    SDK imported, and an audit event written there has no trace id."""
    script = (
        "import sys\n"
        "from opentelemetry import trace\n"
        "from core import tracing\n"
        "from audit.models import AuditEvent\n"
        "with tracing.span('x') as step: step.set(a=1)\n"
        "print(type(trace.get_tracer_provider()).__name__, tracing.tracing_on(), tracing.current_traceparent() == '',\n"
        "      'opentelemetry.sdk' in sys.modules, 'opentelemetry.instrumentation' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["GATEHOUSE_ENV"] = "development"
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["ProxyTracerProvider", "False", "True", "False", "False"]


@pytest.mark.django_db
def test_off_an_event_has_no_trace_id_and_hashes_as_events_did_before_trace_ids(f):
    event = audit_record(verb="read", actor=f.AgentFactory(), channel="api", summary="Read 4471.", record_id="4471")
    assert event.trace_id == "" and "trace_id" not in event.chained_content()
    assert tracing.span("gatehouse.anything") is tracing.span("gatehouse.other")  # the one shared do-nothing step
    # The same event, built by hand, hashes to what the code before trace ids computed for it (audit/models.py at
    # 1a02472): old events keep verifying, and the PostgreSQL append function needs no change.
    known = AuditEvent(
        occurred_at=datetime(2026, 12, 2, 9, 30, tzinfo=UTC),
        verb="executed",
        actor_type="gatehouse",
        actor="gatehouse",
        channel="task",
        resource="accounts",
        record_id="4471",
        proposal_id=uuid.UUID("6f1c8a52-7e0b-4c1e-9f4a-1d2b3c4d5e6f"),
        input={},
        decision={"mode": "auto"},
        state_before={"credit_limit": "2000.00"},
        state_after={"credit_limit": "2100.00"},
        outcome="ok",
        request_id="r-1",
        summary="Executed update_credit_limit on account 4471.",
        prev_hash="0" * 64,
    )
    assert known.compute_hash() == "4a61a83e3d9f8f21b8e8c18bbb59a17468a2d93a90d35c109b1bc59f6ae0cd7b"


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{ENDPOINT}/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, True),
        ({"OTEL_SERVICE_NAME": "gatehouse"}, False),  # naming the service is not asking for export
    ],
)
def test_the_standard_variables_turn_tracing_on(environ, wanted):
    assert tracing_wanted(environ) is wanted


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "zipkin"},
    ],
)
def test_an_exporter_gatehouse_cannot_serve_stops_the_start_instead_of_tracing_nothing(environ):
    with pytest.raises(ImproperlyConfigured):
        tracing_wanted(environ)


@pytest.mark.django_db
def test_on_the_event_holds_the_trace_id_and_the_chain_covers_it(recorded, f):
    agent = f.AgentFactory()
    with tracing.span("gatehouse.test", agent=agent.slug) as step:
        step.set(proposal_id=uuid.UUID(int=7))
        traced = audit_record(verb="read", actor=agent, channel="api", summary="Read 4471.", record_id="4471")
    untraced = audit_record(verb="read", actor=agent, channel="api", summary="Read 4472.", record_id="4472")

    (span,) = recorded.get_finished_spans()
    assert traced.trace_id == format(span.context.trace_id, "032x") and untraced.trace_id == ""
    assert dict(span.attributes) == {"gatehouse.agent": agent.slug, "gatehouse.proposal_id": str(uuid.UUID(int=7))}
    stored = AuditEvent.objects.get(pk=traced.pk)
    assert stored.hash == stored.compute_hash()  # on PostgreSQL the database hashed it (audit_chain_next)
    stored.trace_id = "0" * 32
    assert stored.compute_hash() != stored.hash  # a trace id changed afterwards breaks the chain
    assert verify_chain().ok


@pytest.mark.django_db
def test_the_auditors_event_page_shows_the_trace_id(recorded, client, f):
    with tracing.span("gatehouse.test"):
        event = audit_record(verb="read", actor=f.AgentFactory(), channel="api", summary="Read 4471.")
    client.force_login(f.UserFactory(username="casey", roles=[Role.AUDITORS]))
    page = client.get(reverse("admin:audit_auditevent_change", args=[event.pk])).content.decode()
    assert "Trace ID" in page and event.trace_id and event.trace_id in page


def test_on_a_json_log_line_carries_the_trace_and_span_ids(recorded):
    record = logging.LogRecord("gatehouse", logging.INFO, __file__, 0, "executing", (), None)
    assert "trace_id" not in json.loads(JsonFormatter().format(record))
    with tracing.span("gatehouse.test"):
        trace_id, span_id = tracing.current_ids()
        line = json.loads(JsonFormatter().format(record))
    assert (line["trace_id"], line["span_id"]) == (trace_id, span_id) and len(trace_id) == 32 and len(span_id) == 16


def test_work_published_from_another_trace_continues_the_stored_one_and_links_back(recorded):
    with tracing.span("agent request"):
        stored = tracing.current_traceparent()
        with tracing.span("publish at once", parent=stored):  # the same trace: an ordinary child, no link
            pass
    with tracing.span("approver request"), tracing.span("publish later", parent=stored):
        pass
    with tracing.span("publish with nothing stored", parent=""):
        pass
    spans = {span.name: span for span in recorded.get_finished_spans()}
    agent, approver = spans["agent request"], spans["approver request"]
    at_once, later = spans["publish at once"], spans["publish later"]
    assert at_once.parent.span_id == agent.context.span_id and not at_once.links
    assert later.context.trace_id == agent.context.trace_id and later.parent.span_id == agent.context.span_id
    assert [link.context.span_id for link in later.links] == [approver.context.span_id]
    assert spans["publish with nothing stored"].parent is None
