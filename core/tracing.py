"""Spans around Gatehouse's own steps, and the current trace's ids for the audit trail and the log lines.

All of it does nothing until the shell turns tracing on (gatehouse/tracing.py, from the standard OTEL_* variables):
while off, `span()` hands back one shared object that does nothing and the ids are blank, so the hot path pays a test
of one module global (issue 18 counts milliseconds). The spans' own attributes are named `gatehouse.<name>`.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None


def tracing_enable(tracer: trace.Tracer | None) -> None:
    """Called once by the shell when the environment asks for traces; from then on `span()` records (None: off
    again, for tests)."""
    global _tracer
    _tracer = tracer


def tracing_on() -> bool:
    return _tracer is not None


class Step:
    """One step of the trace, entered with `with`; `step.set(decision="auto")` adds attributes once they are known.

    This class is the step while tracing is off: it does nothing."""

    def __enter__(self) -> Step:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set(self, **attributes: Any) -> None:
        return None


_OFF = Step()


class _Recorded(Step):
    def __init__(self, manager: Any) -> None:
        self._manager = manager
        self._span: trace.Span | None = None

    def __enter__(self) -> Step:
        self._span = self._manager.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._manager.__exit__(*exc)

    def set(self, **attributes: Any) -> None:
        if self._span is not None:
            self._span.set_attributes(_named(attributes))


def span(name: str, *, parent: str = "", **attributes: Any) -> Step:
    """A span named `name` around a `with` block, child of the current span, with `gatehouse.<key>` attributes.

    `parent`: a W3C traceparent stored earlier (a proposal's, taken when the agent's request decided it). When the
    current span belongs to another trace (a person's approval hours later, the outbox sweeper), the span continues the
    stored trace instead and links to the current span, so one proposal's work stays in one trace and the request
    that set it going is one click away. In the stored trace already, or with nothing stored, it is the current span's
    child as usual."""
    if _tracer is None:
        return _OFF
    context, links = _continued(parent) if parent else (None, None)
    return _Recorded(_tracer.start_as_current_span(name, context=context, links=links, attributes=_named(attributes)))


def _continued(traceparent: str) -> tuple[Any, list[trace.Link] | None]:
    stored_context = _PROPAGATOR.extract({"traceparent": traceparent})
    stored = trace.get_current_span(stored_context).get_span_context()
    current = trace.get_current_span().get_span_context()
    if not stored.is_valid or (current.is_valid and current.trace_id == stored.trace_id):
        return None, None
    return stored_context, [trace.Link(current)] if current.is_valid else None


def _named(attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        f"gatehouse.{key}": value if isinstance(value, str | bool | int | float) else str(value)
        for key, value in attributes.items()
        if value is not None
    }


def current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span as 32 and 16 hex digits; blank while tracing is off or outside a span."""
    if _tracer is None:
        return "", ""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def current_trace_id() -> str:
    return current_ids()[0]


def current_traceparent() -> str:
    """The W3C traceparent of the current span (`00-<trace id>-<span id>-<flags>`), to continue the trace later; blank
    while tracing is off or outside a span."""
    if _tracer is None:
        return ""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")
