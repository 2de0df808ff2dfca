"""An OTLP/HTTP trace receiver, for tests and demos: what a collector (Jaeger, Tempo, the OpenTelemetry Collector)
would be to Gatehouse's exporter, reduced to keeping the spans it is sent and handing them back as JSON.

Not part of Gatehouse: its own process on loopback, keeping the spans in memory. Gatehouse's processes point at it
with the standard variable, ``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT``. Run it with::

    python -m sandbox.otlp_receiver --port 0

On startup one line, ``otlp-receiver listening on http://HOST:PORT``, is printed to stdout.

- ``POST /v1/traces``  an ``ExportTraceServiceRequest`` as protobuf (``Content-Type: application/x-protobuf``,
  optionally ``Content-Encoding: gzip``), as the OTLP/HTTP specification says; answers an empty
  ``ExportTraceServiceResponse``. JSON-encoded OTLP is refused (415): Gatehouse's exporter sends protobuf.
- ``GET  /spans``      every span received so far, oldest first, one JSON object each: ``service``, ``trace_id``,
  ``span_id``, ``parent_span_id`` (hex; blank for a root), ``name``, ``kind`` (``SERVER``, ``CLIENT`` …),
  ``attributes`` (a flat object), ``links`` (``[{"trace_id", "span_id"}]``), ``status`` and the start and end times
  in nanoseconds. ``GET /spans?trace_id=…`` only that trace's.
- ``POST /_control/reset``  forget every span.
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

NAME = "otlp-receiver"
MAX_BODY_BYTES = 20_000_000
JSON = dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def spans_of(request: ExportTraceServiceRequest) -> list[JSON]:
    """The request's spans, flattened: each carries its resource's service name."""
    found = []
    for resource_spans in request.resource_spans:
        resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    {
                        "service": resource.get("service.name", ""),
                        "resource": resource,
                        "scope": scope_spans.scope.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        "attributes": {item.key: _value(item.value) for item in span.attributes},
                        "links": [
                            {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()} for link in span.links
                        ],
                        "status": Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                    }
                )
    return found


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[JSON] = []

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received = spans_of(request)
        with self.lock:
            self.spans.extend(received)

    def listed(self, trace_id: str | None) -> list[JSON]:
        with self.lock:
            return [span for span in self.spans if trace_id is None or span["trace_id"] == trace_id]

    def reset(self) -> None:
        with self.lock:
            self.spans.clear()


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"  # the exporter keeps its connection open between batches

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY_BYTES:
            self._answer(413, "text/plain", b"too large", close=True)
            return
        body = self.rfile.read(length)
        path = urlsplit(self.path).path
        if path == "/_control/reset":
            self.server.receiver.reset()
            self._answer(200, "application/json", b"{}")
            return
        if path != "/v1/traces":
            self._answer(404, "text/plain", b"not found")
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/x-protobuf":
            self._answer(415, "text/plain", b"only application/x-protobuf")
            return
        try:
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            self.server.receiver.take(body)
        except (DecodeError, OSError, EOFError) as exc:
            self._answer(400, "text/plain", f"not an ExportTraceServiceRequest: {exc}".encode())
            return
        self._answer(200, "application/x-protobuf", ExportTraceServiceResponse().SerializeToString())

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/spans":
            self._answer(404, "text/plain", b"not found")
            return
        trace_id = parse_qs(parts.query).get("trace_id", [None])[0]
        self._answer(200, "application/json", json.dumps(self.server.receiver.listed(trace_id)).encode())

    def _answer(self, status: int, content_type: str, payload: bytes, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        sys.stderr.write(f"{NAME} {self.command} {self.path} {code}\n")

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{NAME} {format % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        self.receiver = Receiver()
        super().__init__(address, Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.otlp_receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback only: it keeps whatever it is sent")
    parser.add_argument("--port", type=int, default=4318, help="0 picks a free port (4318 is OTLP/HTTP's own)")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the receiver listens on loopback only")
    server = Server((args.host, args.port))
    host, port = server.server_address[:2]
    print(f"{NAME} listening on http://{host}:{port}", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
