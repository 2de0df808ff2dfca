"""A stand-in for Slack, for tests and demos: the few Web API methods Gatehouse calls, and Slack's side of
interactivity (a person clicking a button, submitting a modal), signed as Slack signs it.

Slack itself cannot be reached from here, so Gatehouse's GATEHOUSE_SLACK_API_URL points at this process instead. It is
not part of Gatehouse: its own process on loopback, keeping its state in memory, answering as Slack's Web API
reference documents each method (HTTP 200 with ``{"ok": true, ...}``, or ``{"ok": false, "error": "<code>"}``).

Run it with::

    python -m sandbox.slack_standin --port 0 --token-file var/slack.token --signing-secret-file var/slack.secret

On startup one line, ``slack-standin listening on http://HOST:PORT``, is printed to stdout.

Web API, ``POST /api/<method>`` with a form or JSON body, the bot token as ``Authorization: Bearer`` (else
``not_authed``; a wrong one ``invalid_auth``):

- ``chat.postMessage`` (channel, text and/or blocks; a user id as channel posts to the DM with them)
- ``chat.update`` (channel, ts, text, blocks; ``message_not_found``)
- ``chat.postEphemeral`` (channel, user, text)
- ``users.lookupByEmail`` (email; ``users_not_found``), ``users.info`` (user; ``user_not_found``)
- ``conversations.open`` (users) -> ``{"channel": {"id": "D…"}}``
- ``views.open`` (trigger_id, view; ``invalid_trigger_id``, ``expired_trigger_id`` after 3 s as Slack's docs say)

Side door (no authentication: loopback only):

- ``GET  /_calls``            every Web API call: method, arguments, whether the token was right, the answer's status
- ``GET  /_messages``         the messages as they are now (channel, ts, text, blocks, how often updated)
- ``GET  /_ephemeral``        the ephemeral messages; ``GET /_views`` the modals opened
- ``POST /_control/reset``    forget calls, messages, views, users and faults
- ``POST /_control/users``    ``{"users": [<user object>, ...]}``: the workspace's members (id, profile.email,
  is_email_confirmed, real_name, deleted, is_bot …), as users.info answers them
- ``POST /_control/fault``    ``{"method": "chat.postMessage", "status": 503, "count": 2}``: the next N calls of the
  method answer that status (``{"ok": false, "error": "service_unavailable"}``; 429 is ``ratelimited`` with
  ``Retry-After``, ``"retry_after": S``); the calls are recorded all the same
- ``POST /_control/click``    ``{"url": <Gatehouse's interactions URL>, "user": "U…", "action": "<action_id>",
  "channel": "C…", "ts": "…"}``: a person clicks that button of that message; Slack's ``block_actions`` payload is
  POSTed to ``url`` as ``payload=<JSON>``, signed with the signing secret: ``X-Slack-Request-Timestamp`` and
  ``X-Slack-Signature: v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")``. Knobs: ``"signature": "bad"`` signs with
  another secret, ``"age": S`` dates the timestamp S seconds back, ``"value": "…"`` sends that button value instead.
  Answers ``{"status", "body", "trigger_id"}``: what Gatehouse answered.
- ``POST /_control/submit``   ``{"url", "user", "view_id", "values": {"<block_id>": "text"}}``: the person submits a
  modal opened by views.open; ``view_submission`` payload, signed the same way; answers ``{"status", "body"}``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

NAME = "slack-standin"
TEAM = {"id": "T0GATEHOUSE", "domain": "gatehouse-example"}
APP_ID = "A0GATEHOUSE"
TRIGGER_LIFETIME = 3.0  # seconds, as Slack's docs say of a trigger_id
JSON = dict[str, Any]


class Slack:
    """The workspace's state and the Web API's answers; one lock, since the server answers on many threads."""

    def __init__(self, token: str, signing_secret: str) -> None:
        self.token, self.signing_secret = token, signing_secret
        self.lock = threading.Lock()
        self.numbers = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        self.calls: list[JSON] = []
        self.messages: dict[tuple[str, str], JSON] = {}
        self.ephemeral: list[JSON] = []
        self.views: dict[str, JSON] = {}
        self.triggers: dict[str, float] = {}
        self.users: dict[str, JSON] = {}
        self.faults: dict[str, JSON] = {}

    def ts(self) -> str:
        return f"{int(time.time())}.{next(self.numbers):06d}"

    # --- Web API ------------------------------------------------------------------------------------------------

    def api(self, method: str, args: JSON, authorization: str) -> tuple[int, JSON, dict[str, str]]:
        with self.lock:
            sent = authorization.removeprefix("Bearer ").strip() if authorization else str(args.get("token", ""))
            authorized = bool(sent) and hmac.compare_digest(sent, self.token)
            call: JSON = {"method": method, "args": {k: v for k, v in args.items() if k != "token"}}
            call["authorized"] = authorized
            self.calls.append(call)
            status, answer, headers = self._answer(method, args, sent, authorized)
            call["status"], call["ok"] = status, answer.get("ok", False)
            return status, answer, headers

    def _answer(self, method: str, args: JSON, sent: str, authorized: bool) -> tuple[int, JSON, dict[str, str]]:
        fault = self.faults.get(method)
        if fault and fault["count"] > 0:
            fault["count"] -= 1
            status = int(fault.get("status", 503))
            if status == 429:
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(fault.get("retry_after", 1))}
            return status, {"ok": False, "error": fault.get("error", "service_unavailable")}, {}
        if not sent:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if not authorized:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None:
            return 404, {"ok": False, "error": "unknown_method"}, {}
        return 200, handler(args), {}

    def m_chat_postMessage(self, args: JSON) -> JSON:
        channel = str(args.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if channel.startswith(("U", "W")):
            if channel not in self.users:
                return {"ok": False, "error": "channel_not_found"}
            channel = "D" + channel[1:]
        message = {"type": "message", "channel": channel, "ts": self.ts(), "text": args.get("text", "")}
        message |= {"blocks": _blocks(args.get("blocks")), "bot_id": "B0GATEHOUSE", "app_id": APP_ID, "updates": 0}
        self.messages[(channel, message["ts"])] = message
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": _shown(message)}

    def m_chat_update(self, args: JSON) -> JSON:
        message = self.messages.get((str(args.get("channel", "")), str(args.get("ts", ""))))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if "text" in args:
            message["text"] = args["text"]
        if "blocks" in args:
            message["blocks"] = _blocks(args["blocks"])
        message["updates"] += 1
        return {"ok": True, "channel": message["channel"], "ts": message["ts"], "text": message["text"]}

    def m_chat_postEphemeral(self, args: JSON) -> JSON:
        if not args.get("channel") or not args.get("user"):
            return {"ok": False, "error": "channel_not_found" if not args.get("channel") else "user_not_in_channel"}
        entry = {"channel": args["channel"], "user": args["user"], "text": args.get("text", ""), "ts": self.ts()}
        self.ephemeral.append(entry)
        return {"ok": True, "message_ts": entry["ts"]}

    def m_users_lookupByEmail(self, args: JSON) -> JSON:
        email = str(args.get("email", "")).lower()
        for user in self.users.values():
            if str((user.get("profile") or {}).get("email", "")).lower() == email and email:
                return {"ok": True, "user": user}
        return {"ok": False, "error": "users_not_found"}

    def m_users_info(self, args: JSON) -> JSON:
        user = self.users.get(str(args.get("user", "")))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def m_conversations_open(self, args: JSON) -> JSON:
        users = [user for user in str(args.get("users", "")).split(",") if user]
        if len(users) != 1 or users[0] not in self.users:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": "D" + users[0][1:]}}

    def m_views_open(self, args: JSON) -> JSON:
        issued = self.triggers.pop(str(args.get("trigger_id", "")), None)
        if issued is None:
            return {"ok": False, "error": "invalid_trigger_id"}
        if time.monotonic() - issued > TRIGGER_LIFETIME:
            return {"ok": False, "error": "expired_trigger_id"}
        view = args.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not isinstance(view, dict) or view.get("type") != "modal":
            return {"ok": False, "error": "invalid_arguments"}
        shown = {**view, "id": f"V{next(self.numbers):08d}", "team_id": TEAM["id"], "app_id": APP_ID}
        self.views[shown["id"]] = shown
        return {"ok": True, "view": shown}

    # --- A person's clicks, as Slack sends them -----------------------------------------------------------------

    def click(self, body: JSON) -> JSON:
        with self.lock:
            message = self.messages.get((str(body.get("channel", "")), str(body.get("ts", ""))))
            if message is None:
                return {"error": "no such message"}
            button = next(
                (
                    element
                    for block in message["blocks"]
                    if block.get("type") == "actions"
                    for element in block.get("elements", [])
                    if element.get("action_id") == body.get("action")
                ),
                None,
            )
            if button is None and "value" not in body:
                return {"error": "the message has no such button"}
            button = button or {"type": "button", "action_id": body["action"], "text": {"type": "plain_text"}}
            trigger = f"{next(self.numbers)}.{secrets.token_hex(8)}"
            self.triggers[trigger] = time.monotonic()
            user = self._user_ref(str(body.get("user", "")))
            action = {
                "type": "button",
                "action_id": button["action_id"],
                "block_id": "decision",
                "text": button.get("text"),
                "value": body.get("value", button.get("value")),
                "style": button.get("style"),
                "action_ts": f"{time.time():.6f}",
            }
            payload = {
                "type": "block_actions",
                "user": user,
                "api_app_id": APP_ID,
                "token": "deprecated-verification-token",
                "container": {
                    "type": "message",
                    "message_ts": message["ts"],
                    "channel_id": message["channel"],
                    "is_ephemeral": False,
                },
                "trigger_id": trigger,
                "team": TEAM,
                "enterprise": None,
                "is_enterprise_install": False,
                "channel": {"id": message["channel"], "name": "approvals"},
                "message": _shown(message),
                "state": {"values": {}},
                "response_url": f"https://hooks.slack.invalid/actions/{TEAM['id']}/{trigger}",
                "actions": [action],
            }
        return {**self.send(body, payload), "trigger_id": trigger}

    def submit(self, body: JSON) -> JSON:
        with self.lock:
            view = self.views.get(str(body.get("view_id", "")))
            if view is None:
                return {"error": "no such view"}
            values: JSON = {}
            for block in view.get("blocks", []):
                if block.get("type") == "input" and block.get("block_id") in (body.get("values") or {}):
                    element = block.get("element") or {}
                    typed = body["values"][block["block_id"]]
                    values[block["block_id"]] = {
                        element.get("action_id"): {"type": element.get("type"), "value": typed}
                    }
            payload = {
                "type": "view_submission",
                "team": TEAM,
                "user": self._user_ref(str(body.get("user", ""))),
                "api_app_id": APP_ID,
                "token": "deprecated-verification-token",
                "trigger_id": f"{next(self.numbers)}.{secrets.token_hex(8)}",
                "view": {**view, "state": {"values": values}, "hash": secrets.token_hex(6)},
                "response_urls": [],
                "is_enterprise_install": False,
                "enterprise": None,
            }
        answer = self.send(body, payload)
        with self.lock:
            errors = answer["body"] and '"errors"' in answer["body"]
            if answer["status"] == 200 and not errors:
                self.views.pop(view["id"], None)  # the modal closes
        return answer

    def _user_ref(self, user_id: str) -> JSON:
        user = self.users.get(user_id, {})
        return {"id": user_id, "username": user.get("name", ""), "name": user.get("name", ""), "team_id": TEAM["id"]}

    def send(self, body: JSON, payload: JSON) -> JSON:
        """POST the payload to Gatehouse as Slack does: a form, signed with the app's signing secret."""
        raw = urlencode({"payload": json.dumps(payload)}).encode()
        timestamp = str(int(time.time()) - int(body.get("age", 0)))
        secret = self.signing_secret if body.get("signature") != "bad" else "not-" + self.signing_secret
        digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()
        url = str(body["url"])
        if not url.startswith(("http://", "https://")):
            return {"status": 0, "body": "not an http(s) URL"}
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            url,
            data=raw,
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": f"v0={digest}",
                "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return {"status": response.status, "body": response.read().decode("utf-8", "replace")}
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, "body": exc.read().decode("utf-8", "replace")}

    def control(self, path: str, body: JSON) -> tuple[int, JSON]:
        if path == "/_control/click":
            return 200, self.click(body)
        if path == "/_control/submit":
            return 200, self.submit(body)
        with self.lock:
            if path == "/_control/reset":
                self.reset()
                return 200, {"ok": True}
            if path == "/_control/users":
                self.users = {str(user["id"]): user for user in body.get("users", [])}
                return 200, {"users": len(self.users)}
            if path == "/_control/fault":
                self.faults[str(body["method"])] = {**body, "count": int(body.get("count", 1))}
                return 200, {"ok": True}
        return 404, {"error": "no such control"}

    def read(self, path: str) -> tuple[int, Any]:
        with self.lock:
            if path == "/_calls":
                return 200, self.calls
            if path == "/_messages":
                return 200, list(self.messages.values())
            if path == "/_ephemeral":
                return 200, self.ephemeral
            if path == "/_views":
                return 200, list(self.views.values())
            if path == "/_health":
                return 200, {"ok": True}
        return 404, {"error": "not found"}


def _blocks(value: Any) -> list[JSON]:
    blocks = json.loads(value) if isinstance(value, str) else value
    return blocks if isinstance(blocks, list) else []


def _shown(message: JSON) -> JSON:
    return {key: value for key, value in message.items() if key not in ("updates", "channel")}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        status, answer = self.server.slack.read(self.path)
        self._reply(status, answer)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if 0 < length <= 1_000_000 else b""
        if self.path.startswith("/api/"):
            status, answer, headers = self.server.slack.api(
                self.path.removeprefix("/api/").split("?")[0],
                _arguments(raw, self.headers.get("Content-Type", "")),
                self.headers.get("Authorization", ""),
            )
            self._reply(status, answer, headers)
        elif self.path.startswith("/_control/"):
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._reply(400, {"error": "not JSON"})
                return
            status, answer = self.server.slack.control(self.path, body)
            self._reply(status, answer)
        else:
            self._reply(404, {"ok": False, "error": "unknown_method"})

    def _reply(self, status: int, answer: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{NAME} {format % args}\n")


def _arguments(raw: bytes, content_type: str) -> JSON:
    """A Web API call's arguments: a JSON body, or a form (each field's first value)."""
    if content_type.startswith("application/json"):
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    return {key: values[0] for key, values in parse_qs(raw.decode("utf-8", "replace")).items()}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], slack: Slack) -> None:
        self.slack = slack
        super().__init__(address, Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.slack_standin", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token-file", type=Path, required=True, help="the bot token Gatehouse must send")
    parser.add_argument("--signing-secret-file", type=Path, required=True, help="the app's signing secret")
    args = parser.parse_args(argv)
    slack = Slack(args.token_file.read_text().strip(), args.signing_secret_file.read_text().strip())
    server = Server((args.host, args.port), slack)
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
