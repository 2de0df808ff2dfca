"""A loopback HTTP proxy that adds a bearer token to every request, for MCP tools that cannot send one.

The MCP conformance suite's client (`@modelcontextprotocol/conformance`) connects without any Authorization header;
Gatehouse's /mcp answers such a request 401. Put this in between:

    TOKEN=… .venv/bin/python -m sandbox.bearer_proxy http://127.0.0.1:8000 --port 8765

and point the suite at http://127.0.0.1:8765/mcp. The token is read from the environment variable TOKEN (never from
the command line, where `ps` shows it). Everything else passes through as it came, the Host and Origin headers too
(the suite's dns-rebinding scenario sends wrong ones on purpose), and each answer is streamed back as it arrives (an
MCP answer may be an event stream).
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def bearer_proxy(upstream: str, token: str, port: int = 0) -> ThreadingHTTPServer:
    """A proxy on 127.0.0.1:`port` (0: any free port) to `upstream`, serving from a daemon thread; shut it down."""
    target = urlsplit(upstream)

    class Forward(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=600)
            try:
                connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP | {"authorization"}:
                        connection.putheader(name, value)
                connection.putheader("Authorization", f"Bearer {token}")
                connection.endheaders(body)
                answer = connection.getresponse()
                self.send_response(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Connection", "close")  # the answer ends when the connection does
                self.end_headers()
                while chunk := answer.read1(65536):  # an event stream, event by event
                    self.wfile.write(chunk)
                    self.wfile.flush()
            finally:
                connection.close()

        do_GET = do_POST = do_DELETE = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("upstream", help="Where to forward to, e.g. http://127.0.0.1:8000")
    parser.add_argument("--port", type=int, default=8765, help="Port on 127.0.0.1 to listen on (default 8765).")
    args = parser.parse_args()
    token = os.environ.get("TOKEN", "")
    if not token:
        print("bearer_proxy: set TOKEN to the bearer token to add", file=sys.stderr)
        return 2
    server = bearer_proxy(args.upstream, token, args.port)
    print(f"bearer_proxy listening on http://127.0.0.1:{server.server_address[1]} -> {args.upstream}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
