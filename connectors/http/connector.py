"""The `http` connector: a REST/JSON system behind a scoped service credential, with timeouts on every call.

Each action's `operation` maps it to a request:
  {"method": "PATCH", "path": "/accounts/{record_id}", "fields": ["credit_limit"]}  - update fields; undo restores them
  {"method": "POST", "path": "/accounts/{record_id}/notes", "created": "note"}      - create; undo deletes what was made
  {"method": "POST", "path": "/accounts/{record_id}/statements"}                    - fire and forget; no undo
"""

from __future__ import annotations

import http.client
import json as json_module
import logging
import os
import re
import select
import socket
import threading
import urllib.request
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from django.utils import timezone

from connectors.base import Connector, Health, PermanentError, RecordChanged, RecordNotFound, Result, TransientError
from connectors.errors import LOGGED_CHARS, downstream_error
from connectors.http.config import HttpConfig
from core.tracing import tracing_on

_clients: dict[tuple, httpx.Client] = {}
_clients_lock = threading.Lock()
_httpx_log = logging.getLogger("httpx")


def _client(config: HttpConfig) -> httpx.Client:
    """One pooled client per base URL and timeouts: a new TCP connection per call would double a read's cost."""
    key = (config.base_url, config.timeout, config.connect_timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            timeout = httpx.Timeout(config.timeout, connect=config.connect_timeout)
            client = _clients[key] = httpx.Client(base_url=config.base_url, timeout=timeout, follow_redirects=False)
        return client


class _Response:
    """What `_request` needs of a response, from either transport."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Any, content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    def json(self) -> Any:
        return json_module.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class _PlainHttp:
    """A lean keep-alive transport (http.client) for plain-HTTP systems with no proxy configured.

    httpx costs about twice the Python time of the call itself on a loopback read; this does the same request with
    the same timeouts (connect, then read/write), no redirects, and failures named as httpx names them, so callers
    see the same errors. One connection per thread and process; an idle connection the server has closed is
    noticed before reuse (as httpcore does), so a request is never sent twice.
    """

    def __init__(self, config: HttpConfig, host: str, port: int, base_path: str) -> None:
        self.host, self.port, self.base_path = host, port, base_path
        self.timeout, self.connect_timeout = config.timeout, config.connect_timeout
        self.host_header = host if port == 80 else f"{host}:{port}"
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        held = getattr(self._local, "held", None)
        if held is not None:
            pid, conn = held
            if pid == os.getpid() and conn.sock is not None and not _readable(conn.sock):
                return conn
            if pid == os.getpid():
                conn.close()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        conn.sock.settimeout(self.timeout)
        self._local.held = (os.getpid(), conn)
        return conn

    def request(self, method: str, path: str, *, json: Any = None, headers: dict[str, str]) -> _Response:
        body = None
        all_headers = {"Host": self.host_header, "Accept-Encoding": "identity", "User-Agent": _USER_AGENT}
        all_headers.update(headers)
        if json is not None:
            body = json_module.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            all_headers["Content-Type"] = "application/json"
        if body is not None or method in ("POST", "PUT", "PATCH"):
            all_headers["Content-Length"] = str(len(body or b""))
        conn = self._connection()
        try:
            try:
                conn.request(method, self.base_path + path.lstrip("/"), body=body, headers=all_headers)
            except TimeoutError as exc:
                raise httpx.WriteTimeout(str(exc)) from exc
            except OSError as exc:
                raise httpx.WriteError(str(exc)) from exc
            try:
                response = conn.getresponse()
                content = response.read()
            except TimeoutError as exc:
                raise httpx.ReadTimeout(str(exc)) from exc
            except http.client.HTTPException as exc:  # e.g. RemoteDisconnected: no response at all
                raise httpx.RemoteProtocolError(str(exc)) from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc)) from exc
        except httpx.TransportError:
            conn.close()
            self._local.held = None
            raise
        if response.will_close:
            conn.close()
            self._local.held = None
        if _httpx_log.isEnabledFor(logging.INFO):  # the line httpx logs, so logs read as before
            url = f"http://{self.host_header}{self.base_path}{path.lstrip('/')}"
            _httpx_log.info('HTTP Request: %s %s "HTTP/1.1 %d %s"', method, url, response.status, response.reason)
        return _Response(response.status, response.headers, content)


def _readable(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed (or spoken to) by the server: do not reuse it."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


_USER_AGENT = f"python-httpx/{httpx.__version__}"  # what the system saw before, so its logs and filters still match
_SAFE_PATH = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$")
_plain: dict[tuple, _PlainHttp | None] = {}


def _plain_transport(config: HttpConfig) -> _PlainHttp | None:
    """The lean transport when it would send what httpx sends: plain http, a bare address, no proxy configured.

    Never while tracing is on: httpx's instrumentation then records each call as a client span and passes the trace
    on to the system (the `traceparent` header), which this transport does not."""
    if tracing_on():
        return None
    key = (config.base_url, config.timeout, config.connect_timeout)
    if key in _plain:
        return _plain[key]
    url = urlsplit(config.base_url)
    proxies = urllib.request.getproxies()
    transport = None
    if (
        url.scheme == "http"
        and url.hostname
        and not (url.username or url.password or url.query or url.fragment)
        and _SAFE_PATH.match(url.path)
        and not any(proxies.get(scheme) for scheme in ("http", "all"))
    ):
        transport = _PlainHttp(config, url.hostname, url.port or 80, url.path.rstrip("/") + "/")
    with _clients_lock:
        _plain[key] = transport
    return transport


def _retry_after(response: httpx.Response | _Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - timezone.now()).total_seconds())
        except (TypeError, ValueError):
            return None


# Gatehouse's own reading of a 409 (the connector contract: RecordChanged), not the system's words.
_CONFLICT = "version_conflict, the record changed since it was read"


def _said(response: httpx.Response | _Response) -> str:
    """What the system answered, for the log line only: status, headers and the start of the body."""
    headers = "; ".join(f"{name}: {value}" for name, value in response.headers.items())
    return f"HTTP {response.status_code}; {headers}; body: {response.text[:LOGGED_CHARS]}"


class HttpConnector(Connector):
    def __init__(self, system, secret: str | None, vaulted=None) -> None:
        super().__init__(system, secret, vaulted)
        self.config = HttpConfig.parse(system.connector_config)

    def _headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", **self.auth_headers()}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _request(self, method: str, path: str, *, json: Any = None, idempotency_key: str | None = None) -> Any:
        attempted = f"{method} {path}"
        plain = _plain_transport(self.config) if _SAFE_PATH.match(path) else None
        response: Any  # httpx's response, or the lean transport's with the same few attributes
        try:
            if plain is not None:
                response = plain.request(method, path, json=json, headers=self._headers(idempotency_key))
            else:
                response = _client(self.config).request(method, path, json=json, headers=self._headers(idempotency_key))
        except httpx.TimeoutException as exc:
            raise downstream_error(self, TransientError, attempted, "timed out", said=exc) from None
        except httpx.TransportError as exc:
            raise downstream_error(self, TransientError, attempted, f"failed: {type(exc).__name__}", said=exc) from None
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = _retry_after(response)
            raise downstream_error(
                self, TransientError, attempted, f"answered {status}", said=_said(response), retry_after=retry_after
            ) from None
        if status == 404:
            raise downstream_error(
                self, RecordNotFound, attempted, "answered 404", said=_said(response), meaning="not found"
            ) from None
        if status == 409:  # the system refused a conditional write: the record moved on since it was read
            raise downstream_error(
                self, RecordChanged, attempted, "refused with 409", said=_said(response), meaning=_CONFLICT
            ) from None
        if status >= 400:
            raise downstream_error(
                self, PermanentError, attempted, f"refused with {status}", said=_said(response)
            ) from None
        try:
            return response.json() if response.content else {}
        except ValueError:
            raise downstream_error(
                self, PermanentError, attempted, f"answered {status}", said=_said(response), meaning="not JSON"
            ) from None

    @staticmethod
    def _path(template: str, record_id: str, **extra: str) -> str:
        values = {"record_id": quote(str(record_id), safe=""), **{k: quote(str(v), safe="") for k, v in extra.items()}}
        return template.format(**values)

    def read(self, resource: str, record_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        record = self._request("GET", self._path(f"/{quote(resource, safe='')}/{{record_id}}", record_id))
        if not isinstance(record, dict):
            raise PermanentError(f"{self.system.slug}: a record must be a JSON object")
        return {name: record.get(name) for name in fields} if fields is not None else record

    def execute(
        self, action, record_id: str, payload: dict[str, Any], idempotency_key: str, *, expected=None
    ) -> Result:
        operation = action.operation or {}
        method = operation.get("method", "POST").upper()
        path = self._path(operation.get("path", ""), record_id)
        fields = operation.get("fields")
        if fields:
            body = {name: payload[name] for name in fields if name in payload}
            current = expected if isinstance(expected, dict) else self.read(action.resource.name, record_id)
            sent = self._conditional(body, expected)
            response = self._request(method, path, json=sent, idempotency_key=idempotency_key)
            # The system's own account of "before" wins when it gives one: on a replayed key our read above
            # already sees the new value, the system's stored answer does not.
            before = response.get("before") if isinstance(response, dict) and "before" in response else None
            if before is None:
                before = {name: current.get(name) for name in body}
            record = response.get("record", response) if isinstance(response, dict) else {}
            after = {name: record.get(name, body[name]) for name in body}
            compensation = {"method": method, "path": path, "body": {name: before.get(name) for name in body}}
            return Result(before=before, after=after, compensation=compensation)
        response = self._request(method, path, json=payload, idempotency_key=idempotency_key)
        created_key = operation.get("created")
        compensation = {}
        after = {}
        if created_key and isinstance(response, dict) and isinstance(response.get(created_key), dict):
            created = response[created_key]
            after = {created_key: created}
            if "id" in created:
                compensation = {"method": "DELETE", "path": f"{path}/{quote(str(created['id']), safe='')}"}
        elif isinstance(response, dict):
            after = {key: value for key, value in response.items() if key != "record"}
        return Result(before={}, after=after, compensation=compensation)

    def _conditional(self, body: Any, expected: Any) -> Any:
        """`body` made conditional on the version of `expected`, the record as the caller read it, where the system
        versions its records: it answers 409 (RecordChanged) if the record moved on since."""
        version = self.config.version_field
        if version and isinstance(body, dict) and isinstance(expected, dict) and expected.get(version) is not None:
            return {**body, self.config.expected_version_field: expected[version]}
        return body

    def compensate(
        self, action, record_id: str, compensation: dict[str, Any], idempotency_key: str, *, expected=None
    ) -> Result:
        if not compensation:
            return super().compensate(action, record_id, compensation, idempotency_key)
        body = compensation.get("body")
        sent = self._conditional(body, expected)
        self._request(compensation["method"], compensation["path"], json=sent, idempotency_key=idempotency_key)
        return Result(after=body if isinstance(body, dict) else {})

    def health(self) -> Health:
        try:
            self._request("GET", self.config.health_path)
        except (TransientError, PermanentError) as exc:
            return Health(False, str(exc))
        return Health(True)
