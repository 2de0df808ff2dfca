"""Prometheus metrics at `/metrics` (the official prometheus_client), for loopback callers or the metrics token.

Two kinds, chosen for being right however many processes run:

- Request latency is measured where it happens, in each web process (`RequestMetricsMiddleware` for Django, and
  `with_mcp_metrics` for the MCP endpoint beside it). Labels stay few: the route's *name* (never the raw path, which
  holds record ids), the method, the status class. With several web processes on a machine, set
  PROMETHEUS_MULTIPROC_DIR (an empty folder, wiped at each start) so that any of them answers for all.
- Everything about the work — proposals by state, executions by outcome, duplicate deliveries, the outbox and
  execution queue, SLA breaches, circuit breakers — is read from the database (and the rate store) when Prometheus
  scrapes, by `GatehouseCollector`, in a handful of aggregate queries. Workers run on other processes and machines;
  counting what they did from the rows they wrote needs no shared memory, survives restarts, and never double-counts.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from approvals.choices import AWAITING_DECISION, ProposalStatus
from approvals.models import OutboxMessage, Proposal
from audit.choices import Verb
from audit.models import AuditEvent
from connectors.limits import OPEN_STATES, circuit_states
from core.request_context import new_request_id

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("gatehouse.access")

REQUEST_LATENCY = Histogram(
    "gatehouse_http_request_duration_seconds",
    "Time to answer an HTTP request (to the first byte of a streamed export), by route name, method, status class.",
    ["route", "method", "status"],
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Probes and scrapes every few seconds: measured, but logged at DEBUG so they do not drown the access log.
QUIET_ROUTES = frozenset({"healthz", "readyz", "metrics"})
MCP_ROUTE = "mcp"


def method_label(method: str | None) -> str:
    return method if method in _METHODS else "other"


def route_label(request: HttpRequest) -> str:
    """The URL pattern's name (`api-proposal`, `admin:approvals_proposal_change`), a bounded set of values."""
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return match.view_name or match.route or "unnamed"
    if request.path.startswith(settings.STATIC_URL):
        return "static"  # answered by WhiteNoise before URL resolution
    return "unmatched"


class RequestMetricsMiddleware:
    """Observes each Django request's latency, and writes one access line (`gatehouse.access`) with its request id.

    Placed right after RequestIdMiddleware, so the access line still carries the request id.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        route = route_label(request)
        REQUEST_LATENCY.labels(route, method_label(request.method), f"{response.status_code // 100}xx").observe(elapsed)
        access_logger.log(
            logging.DEBUG if route in QUIET_ROUTES else logging.INFO,
            "%s %s %s %.1f ms",
            request.method,
            request.path,
            response.status_code,
            elapsed * 1000,
            extra={
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )
        return response


def with_mcp_metrics(app: Any, path: str = "/mcp") -> Callable[..., Any]:
    """An ASGI wrapper observing the latency of the MCP endpoint, which Django's middleware never sees."""

    async def application(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http" or not (scope["path"] == path or scope["path"].startswith(path + "/")):
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before it answers

        async def observed_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - started
            method = scope.get("method")
            REQUEST_LATENCY.labels(MCP_ROUTE, method_label(method), f"{status // 100}xx").observe(elapsed)
            access_logger.info(
                "%s %s %s %.1f ms",
                method,
                scope["path"],
                status,
                elapsed * 1000,
                # The MCP handlers keep the caller's X-Request-ID (else they make one per call, in the audit trail).
                extra={
                    "request_id": _caller_request_id(scope),
                    "method": method,
                    "path": scope["path"],
                    "route": MCP_ROUTE,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )

    return application


def _caller_request_id(scope: dict[str, Any]) -> str | None:

    for name, raw in scope.get("headers") or ():
        if name == b"x-request-id":
            incoming = raw.decode("latin-1")
            return incoming if new_request_id(incoming) == incoming else None
    return None


# --- Computed at scrape time from the database ------------------------------------------------------------------


class GatehouseCollector(Collector):
    """The state of the work, from a few aggregate queries per scrape (no per-row work in Python).

    The proposals query reads the whole table once (one GROUP BY status with conditional counts); the outbox queries
    use its (published_at, created_at) index; the escalation count the audit trail's (verb, occurred_at) index.
    """

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("gatehouse_database_up", "1 when the database answered this scrape's queries.")
        try:
            metrics = list(_database_metrics(timezone.now()))
        except Exception:
            logger.exception("metrics: the database queries failed")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics
        yield from _circuit_metrics()


def _database_metrics(now: datetime) -> Iterator[Metric]:
    """Every metric read from the database, in the order a scrape shows them."""
    rows = _proposals_by_status(now)
    yield from _proposal_metrics(rows)
    yield from _sla_metrics(rows)
    yield from _queue_metrics(now)


def _proposals_by_status(now: datetime) -> dict[str, dict[str, Any]]:
    """One GROUP BY status over the proposals, with the conditional counts the metrics below need."""
    return {
        row["status"]: row
        for row in Proposal.objects.order_by()
        .values("status")
        .annotate(
            count=Count("pk"),
            ran=Count("executed_at"),  # executed at some point, whatever came after (reviewed, reversed…)
            late_decision=Count("pk", filter=Q(sla_due_at__lt=now, decided_by__isnull=True)),
            late_review=Count("pk", filter=Q(review_due_at__lt=now, reviewed_at__isnull=True)),
            duplicates=Sum("duplicate_deliveries"),
        )
    }


def _total(rows: dict[str, dict[str, Any]], field: str, statuses: Iterable[str]) -> int:
    return sum(rows[status][field] for status in statuses if status in rows)


def _proposal_metrics(rows: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """Proposals by state, executions by outcome, duplicate deliveries."""
    by_state = GaugeMetricFamily("gatehouse_proposals", "Proposals by current state.", labels=["status"])
    for status in ProposalStatus.values:
        by_state.add_metric([status], rows[status]["count"] if status in rows else 0)
    yield by_state

    executions = CounterMetricFamily(
        "gatehouse_executions",
        "Executions by outcome: executed (the system was written, including writes later reversed), failed "
        "(gave up after retries or a permanent error).",
        labels=["outcome"],
    )
    executions.add_metric(["executed"], _total(rows, "ran", rows))
    executions.add_metric(["failed"], _total(rows, "count", [ProposalStatus.FAILED]))
    yield executions

    yield CounterMetricFamily(
        "gatehouse_duplicate_deliveries",
        "Execution task deliveries suppressed as duplicates: the proposal was already executing under a live claim, "
        "or finished (the broker delivered again past its visibility timeout, or the sweeper published again).",
        value=_total(rows, "duplicates", rows),
    )


def _sla_metrics(rows: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """Proposals past their SLA now, and escalations since the start (from the audit trail)."""
    breaches = GaugeMetricFamily(
        "gatehouse_sla_breached_proposals",
        "Proposals past their SLA now: decision (still undecided past sla_due_at, escalated or not yet), "
        "review (a dual approval's second review not done past review_due_at).",
        labels=["kind"],
    )
    breaches.add_metric(["decision"], _total(rows, "late_decision", AWAITING_DECISION))
    closed = {
        ProposalStatus.REJECTED,
        ProposalStatus.CANCELLED,
        ProposalStatus.EXPIRED,
        ProposalStatus.FAILED,
        ProposalStatus.REVERSED,
    }
    breaches.add_metric(["review"], _total(rows, "late_review", [status for status in rows if status not in closed]))
    yield breaches

    escalations = CounterMetricFamily(
        "gatehouse_sla_escalations", "Proposals escalated for passing their SLA undecided, since the start."
    )
    escalations.add_metric([], AuditEvent.objects.filter(verb=Verb.ESCALATED, proposal_id__isnull=False).count())
    yield escalations


def _queue_metrics(now: datetime) -> Iterator[Metric]:
    """The outbox and the execution queue: what waits to be handed to the broker, and for a worker."""
    unpublished = OutboxMessage.objects.filter(published_at__isnull=True).aggregate(
        count=Count("pk"), oldest=Min("created_at")
    )
    yield GaugeMetricFamily(
        "gatehouse_outbox_backlog",
        "Approved executions not yet handed to the broker (the sweeper retries them every 10 s).",
        value=unpublished["count"],
    )
    yield GaugeMetricFamily(
        "gatehouse_outbox_oldest_unpublished_age_seconds",
        "Age of the oldest outbox message not yet handed to the broker; 0 when there is none.",
        value=_age(now, unpublished["oldest"]),
    )
    waiting = OutboxMessage.objects.filter(proposal__status=ProposalStatus.APPROVED).aggregate(oldest=Min("created_at"))
    yield GaugeMetricFamily(
        "gatehouse_execution_queue_oldest_age_seconds",
        "How long the oldest approved proposal has waited for a worker to take it up; 0 when none waits.",
        value=_age(now, waiting["oldest"]),
    )


def _age(now, then) -> float:
    return max(0.0, (now - then).total_seconds()) if then else 0.0


def _circuit_metrics() -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "gatehouse_system_circuit_open",
        "1 while a system's circuit breaker is open (Gatehouse does not call it), 0 when closed; absent when the "
        "rate store does not answer.",
        labels=["system"],
    )
    try:
        states = circuit_states()
    except Exception:
        logger.exception("metrics: could not read the circuit breakers")
        states = {}
    for slug, state in states.items():
        if state != "unknown":
            family.add_metric([slug], 1 if state in OPEN_STATES else 0)
    yield family


# --- The endpoint -----------------------------------------------------------------------------------------------


def exposition() -> bytes:
    """This process's metrics (or, in multiprocess mode, every web process's on this machine), then the database's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        measured = generate_latest(registry)
    else:
        measured = generate_latest(REGISTRY)
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(GatehouseCollector())
    return measured + generate_latest(scraped)


_FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def trusted_caller(request: HttpRequest) -> bool:
    """The metrics token (GATEHOUSE_METRICS_TOKEN) as a bearer token, or a loopback caller that no proxy relayed.

    A proxy on the same machine makes every outside request look like loopback: a forwarding header marks those.
    """
    token = settings.GATEHOUSE_METRICS_TOKEN
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
            return True
    if any(header in request.META for header in _FORWARDED):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not trusted_caller(request):
        return HttpResponse("Forbidden: /metrics answers loopback callers or the metrics token.\n", status=403)
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
