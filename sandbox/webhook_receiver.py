"""A webhook receiver, for tests and demos: verifies each delivery's Standard Webhooks signature with the
`standardwebhooks` library (as a receiver of Gatehouse's webhooks would), records what came, and fails on request.

Not part of Gatehouse: its own process on loopback, keeping its state in memory. Run it with::

    python -m sandbox.webhook_receiver --port 0 --secret-file var/webhook.secret

On startup one line, ``webhook-receiver listening on http://HOST:PORT``, is printed to stdout. The secret file holds
the subscription's ``whsec_…`` secret (or set it later through the side door).

Deliveries: ``POST`` to any path not under ``/_``. A delivery whose signature does not verify (wrong secret, altered
body, missing headers, a timestamp more than five minutes off) is answered 401 and recorded with ``verified: false``.
A verified one is answered 204, or as the fault in force says.

Side door (no authentication: loopback only):

- ``GET  /_received``         every delivery: ``id`` (webhook-id), ``timestamp``, ``at`` (when it came, Unix time),
  ``verified``, ``error``, ``answered`` (the status sent back), ``first`` (true the first time this id was
  accepted), ``payload`` (the JSON body), ``path``
- ``POST /_control/fail``     ``{"status": 500, "count": 3}``: the next N verified deliveries get that status; without
  ``count`` every one until ``/_control/recover``
- ``POST /_control/slow``     ``{"delay": 10, "count": 1}``: answer only after that many seconds (a timeout)
- ``POST /_control/recover``  back to answering 204
- ``POST /_control/secret``   ``{"secret": "whsec_…"}``: verify with this secret from now on
- ``POST /_control/reset``    forget deliveries and faults
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook

NAME = "webhook-receiver"
JSON = dict[str, Any]


class Receiver:
    """What came and the fault in force; one lock, since the server answers on many threads."""

    def __init__(self, secret: str) -> None:
        self.lock = threading.Lock()
        self.secret = secret
        self.reset()

    def reset(self) -> None:
        self.received: list[JSON] = []
        self.accepted: set[str] = set()
        self.fault: JSON = {}

    def _take_fault(self) -> JSON:
        fault = dict(self.fault)
        if fault and fault.get("count") is not None:
            self.fault["count"] -= 1
            if self.fault["count"] <= 0:
                self.fault = {}
        return fault

    def deliver(self, path: str, headers: dict[str, str], raw: bytes) -> int:
        with self.lock:
            secret = self.secret
        record: JSON = {"id": headers.get("webhook-id"), "timestamp": headers.get("webhook-timestamp"), "path": path}
        record["at"] = time.time()
        try:
            record["payload"] = Webhook(secret).verify(raw, headers)
            record["verified"], record["error"] = True, ""
        except Exception as exc:  # any failure to verify (the library raises ValueError on a malformed header too)
            record["verified"], record["error"] = False, f"{type(exc).__name__}: {exc}"
            try:
                record["payload"] = json.loads(raw)
            except ValueError:
                record["payload"] = None
        fault: JSON = {}
        if record["verified"]:
            with self.lock:
                fault = self._take_fault()
        if fault.get("delay"):
            time.sleep(float(fault["delay"]))
        status = 401 if not record["verified"] else int(fault.get("status", 204))
        with self.lock:
            record["answered"] = status
            record["first"] = 200 <= status < 300 and record["id"] not in self.accepted
            if 200 <= status < 300:
                self.accepted.add(str(record["id"]))
            self.received.append(record)
        return status

    def control(self, path: str, body: JSON) -> tuple[int, JSON]:
        with self.lock:
            if path == "/_control/reset":
                self.reset()
            elif path == "/_control/fail":
                self.fault = {"status": int(body.get("status", 500)), "count": body.get("count")}
            elif path == "/_control/slow":
                self.fault = {"delay": float(body.get("delay", 10)), "count": body.get("count")}
            elif path == "/_control/recover":
                self.fault = {}
            elif path == "/_control/secret":
                self.secret = str(body["secret"])
            else:
                return 404, {"error": "no such control"}
            return 200, {"ok": True, "fault": self.fault}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server

    def do_GET(self) -> None:
        receiver = self.server.receiver
        if self.path == "/_received":
            with receiver.lock:
                self._reply(200, list(receiver.received))
        elif self.path == "/_health":
            self._reply(200, {"ok": True})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if 0 < length <= 1_000_000 else b""
        if self.path.startswith("/_control/"):
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._reply(400, {"error": "not JSON"})
                return
            self._reply(*self.server.receiver.control(self.path, body))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        status = self.server.receiver.deliver(self.path, headers, raw)
        self._reply(status, {"ok": 200 <= status < 300} if status != 204 else None)

    def _reply(self, status: int, answer: Any) -> None:
        payload = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{NAME} {format % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        self.receiver = receiver
        super().__init__(address, Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.webhook_receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--secret-file", type=Path, required=True, help="the subscription's whsec_ secret")
    args = parser.parse_args(argv)
    server = Server((args.host, args.port), Receiver(args.secret_file.read_text().strip()))
    host, port = server.server_address[:2]
    print(f"{NAME} listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
