"""OpenTelemetry traces, on only when the standard environment asks for them; off, nothing is imported or installed.

On when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, unless OTEL_SDK_DISABLED is true or
OTEL_TRACES_EXPORTER is `none`. Then each process gets a TracerProvider exporting in batches over OTLP/HTTP (protobuf),
with the SDK reading its own variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER,
OTEL_BSP_*, OTEL_EXPORTER_OTLP_HEADERS, …), and the Django, Celery, psycopg and httpx instrumentations; Gatehouse's own
steps (core.tracing.span) record from then on.

Who calls `tracing_start`, once per process, after any fork: the web (gatehouse/asgi.py, gatehouse/wsgi.py, imported
by each gunicorn or uvicorn worker), `manage.py` (commands, runserver), and in gatehouse/celery.py each prefork pool
process (`worker_process_init`), a worker with another pool (`worker_init`) and beat (`beat_init`). Django's
instrumentation puts its middleware into settings.MIDDLEWARE, so the web starts tracing before Django loads it; the
MCP endpoint, which is not Django's, gets its server spans from the ASGI middleware (`traced_asgi`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from core import tracing

_TRUE = ("true", "1", "yes", "on")
_PROTOCOL = "http/protobuf"  # the one exporter installed (opentelemetry-exporter-otlp-proto-http)
# Probes and scrapes come every few seconds and say nothing about a proposal: no trace for them unless the operator
# names the excluded URLs (OTEL_PYTHON_DJANGO_EXCLUDED_URLS) itself.
_EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"

_started = False


def tracing_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard variables ask for traces; a protocol or exporter Gatehouse cannot serve stops the start
    (ImproperlyConfigured) instead of tracing nothing, silently."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter == "none":
        return False
    if not (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    if exporter != "otlp":
        raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER={exporter}: Gatehouse exports traces over OTLP only.")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol:
            if protocol != _PROTOCOL:
                raise ImproperlyConfigured(f"{name}={protocol}: Gatehouse exports traces over {_PROTOCOL} only.")
            break
    return True


def tracing_start(process: str) -> bool:
    """Set up tracing in this process if the environment asks for it (once; later calls return what the first did).

    `process` (web, worker, beat, command) is the default service name's suffix (`gatehouse-web`) and the
    `gatehouse.process` resource attribute; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over both."""
    global _started
    if _started or not tracing_wanted():
        return _started
    # Imported here: with tracing off, no process pays for the SDK, the exporter or the instrumentations.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    defaults = {"service.name": f"gatehouse-{process}", "gatehouse.process": process}
    resource = Resource.create(defaults).merge(OTELResourceDetector().detect())  # the environment's names win
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint, headers, timeout: OTEL_*
    trace.set_tracer_provider(provider)

    excluded = os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
    DjangoInstrumentor().instrument(excluded_urls=None if excluded else _EXCLUDED_URLS)
    CeleryInstrumentor().instrument()
    PsycopgInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()
    tracing.tracing_enable(trace.get_tracer("gatehouse"))
    _started = True
    _know_tasks()
    return True


def traced_asgi(app: Any) -> Any:
    """With tracing on, an ASGI app wrapped in OpenTelemetry's ASGI middleware, which makes each request a server span
    (continuing a `traceparent` the client sent); off, the app itself. For /mcp, which Django's middleware never
    sees."""
    if not _started:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app)


def tracing_apps_ready() -> None:
    """Called when Django's apps are ready (gatehouse/apps.py): see `_know_tasks`."""
    if _started:
        _know_tasks()


def _know_tasks() -> None:
    """Celery's instrumentation closes its publish span (`apply_async/<task>`) properly only for a task this process
    knows by name. The web and the commands queue tasks by name (core.tasks.queue_task) without importing the modules
    that define them; the span is then left to the garbage collector, which ends it at once, before the message is
    even sent. With tracing on, every process imports the task modules, so the span covers the publish."""
    from django.apps import apps

    if not apps.models_ready:
        return  # before Django's setup: GatehouseConfig.ready() calls again
    from celery import current_app  # Gatehouse's app (gatehouse/celery.py, which imports this module)

    current_app.autodiscover_tasks(force=True)
