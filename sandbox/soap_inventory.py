"""Sample legacy inventory: a SOAP 1.1 service with its own WSDL, standing in for an old system in demos and tests.

Like the sample CRM it is deliberately *not* part of Gatehouse: its own process on loopback with its own SQLite
store, written with the standard library only (http.server, xml.etree), so Gatehouse's `soap` connector talks to
it exactly as it would to a real WSDL service: document/literal, faults, a token, idempotent writes, outages.

Run it with::

    python -m sandbox.soap_inventory --host 127.0.0.1 --port 8200 \
        --store var/sandbox/inventory.sqlite3 --token-file var/sandbox/inventory.token

``--port 0`` picks a free port. On startup exactly one line, ``sandbox-inventory listening on http://HOST:PORT``, is
printed to stdout; the WSDL is at ``http://HOST:PORT/inventory?wsdl``. Request logs go to stderr.

SOAP operations (POST ``/inventory``, namespace ``urn:gatehouse:sandbox:inventory``; every call needs
``Authorization: Bearer <token>`` or ``X-Api-Key: <token>``, otherwise a ``soap:Client.Authentication`` fault):

- ``GetItem(sku)``                          -> ``item`` (sku, name, quantity, warehouse, version, updatedAt)
- ``ListItems(warehouse?)``                 -> ``item*``
- ``SetQuantity(sku, quantity, requestId?)`` -> sku, before, after, version, replayed. A repeated ``requestId`` gets
  the first answer back, unapplied, with ``replayed`` true; reusing one for another sku or quantity is a client fault
- ``Ping()``                                -> ``ok``

Faults follow SOAP 1.1: HTTP 500 with ``soap:Client`` (the request is wrong: unknown sku -> faultstring
``Item not found: SKU`` with an ``ItemNotFound`` detail; bad quantity; bad token) or ``soap:Server`` (the
inventory could not process it now; resending later may succeed).

Test-harness side door, JSON, NO AUTHENTICATION (loopback only); like the CRM's, never slowed or failed by the mode:

- ``GET  /_health``         ``{"ok": true}``
- ``GET  /_stats``          ``{"writes_total", "writes_by_key", "requests_total"}`` (writes by requestId)
- ``GET  /_control/mode``   the current mode
- ``POST /_control/mode``   ``{"mode": "normal"}`` | ``{"mode": "slow", "delay": 0.5}`` | ``{"mode": "fault"}`` (a
  ``soap:Server`` fault) | ``{"mode": "error", "status": 503}`` (a gateway's plain-text error, no SOAP) |
  ``{"mode": "echo", "status": 500}`` (a debug fault whose faultstring echoes the credential headers received:
  ``soap:Server`` for a 5xx status, ``soap:Client`` for a 4xx one, sent as HTTP 500 as SOAP 1.1 does), optionally
  with ``"count": N`` so only the next N SOAP requests are affected
- ``POST /_control/documents`` ``{"schema_location": "http://127.0.0.2:8201/inventory.xsd", "guarded": true}``: the
  WSDL imports its types from that address instead of holding them (``null``: inline again; every inventory serves
  its types at ``GET /inventory.xsd``), and with ``guarded`` the WSDL and the types answer 401 without the token.
  Its ``service_location`` (an http(s) address or ``null``, its own) is where the WSDL says the service is: a WSDL
  naming a service elsewhere, to which a client would send its credential. ``/_stats`` counts the document requests
  under ``documents``, by document and by whether they carried a
  credential header (``Authorization`` or ``X-Api-Key``, valid or not)
- ``POST /_control/reset``  wipe and reseed the items, clear request ids and stats, mode normal
- ``POST /_control/set``    ``{"sku": "WID-100", "fields": {"quantity": 7}}``: edit an item directly, as a
  warehouse clerk would (bumps the version, not counted as a write)
"""

from __future__ import annotations

import hmac
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from sandbox import serving
from sandbox.serving import JSON, now_iso
from sandbox.soap_documents import NS, build_schema, build_wsdl

NAME = "sandbox-inventory"
DESCRIPTION = "Sample legacy inventory (a SOAP 1.1 service) for Gatehouse demos and tests."
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
ENDPOINT = "/inventory"
SCHEMA_PATH = "/inventory.xsd"
CREDENTIAL_HEADERS = ("authorization", "x-api-key")
MAX_QUANTITY = 1_000_000_000
SKU_RE = re.compile(r"[A-Z0-9][A-Z0-9-]{0,31}")
MAX_REQUEST_ID_CHARS = 255

SEED_ITEMS: tuple[JSON, ...] = (
    {"sku": "WID-100", "name": "Widget, small", "quantity": 120, "warehouse": "RTM-1"},
    {"sku": "WID-200", "name": "Widget, large", "quantity": 40, "warehouse": "RTM-1"},
    {"sku": "GSK-310", "name": "Gasket kit", "quantity": 0, "warehouse": "ANR-2"},
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    sku TEXT PRIMARY KEY, name TEXT NOT NULL, quantity INTEGER NOT NULL, warehouse TEXT NOT NULL,
    version INTEGER NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, sku TEXT NOT NULL, quantity INTEGER NOT NULL, answer TEXT NOT NULL
);
"""


class SoapFault(Exception):
    """Answered as a SOAP 1.1 fault (HTTP 500); raising inside a transaction rolls it back."""

    def __init__(self, code: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail


class ControlError(Exception):
    """A side-door request the sandbox refuses, answered as JSON."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/xml; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, body: JSON) -> Reply:
    return Reply(status, json.dumps(body).encode(), "application/json")


def envelope(body_xml: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:inv="{NS}">'
        f"<soap:Body>{body_xml}</soap:Body></soap:Envelope>"
    ).encode()


def fault_reply(fault: SoapFault) -> Reply:
    detail = f"<detail>{fault.detail}</detail>" if fault.detail else ""
    body = (
        f"<soap:Fault><faultcode>soap:{escape(fault.code)}</faultcode>"
        f"<faultstring>{escape(fault.message)}</faultstring>{detail}</soap:Fault>"
    )
    return Reply(500, envelope(body))


def element(name: str, value: Any) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<inv:{name}>{escape(str(value))}</inv:{name}>"


def item_xml(tag: str, item: JSON) -> str:
    inner = "".join(
        element(name, item[key])
        for name, key in (
            ("sku", "sku"),
            ("name", "name"),
            ("quantity", "quantity"),
            ("warehouse", "warehouse"),
            ("version", "version"),
            ("updatedAt", "updated_at"),
        )
    )
    return f"<inv:{tag}>{inner}</inv:{tag}>"


class Store(serving.SqliteStore):
    """The inventory's own SQLite file. Callers must hold ``lock`` for every use of ``conn``."""

    schema = SCHEMA
    seeded_table = "items"

    def reset(self) -> None:
        with self.conn:
            for table in ("items", "requests", "counters"):
                self.conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            self._seed()

    def _seed(self) -> None:
        stamp = now_iso()
        for item in SEED_ITEMS:
            self.conn.execute(
                "INSERT INTO items (sku, name, quantity, warehouse, version, updated_at) VALUES (?, ?, ?, ?, 1, ?)",
                (item["sku"], item["name"], item["quantity"], item["warehouse"], stamp),
            )

    def item(self, sku: str) -> JSON:
        row = self.conn.execute("SELECT * FROM items WHERE sku = ?", (sku,)).fetchone()
        if row is None:
            raise SoapFault(
                "Client", f"Item not found: {sku}", f"<inv:ItemNotFound>{element('sku', sku)}</inv:ItemNotFound>"
            )
        return dict(row)

    def items(self, warehouse: str | None) -> list[JSON]:
        if warehouse:
            rows = self.conn.execute("SELECT * FROM items WHERE warehouse = ? ORDER BY sku", (warehouse,))
        else:
            rows = self.conn.execute("SELECT * FROM items ORDER BY sku")
        return [dict(row) for row in rows.fetchall()]

    def set_quantity(self, sku: str, quantity: int) -> None:
        self.conn.execute(
            "UPDATE items SET quantity = ?, version = version + 1, updated_at = ? WHERE sku = ?",
            (quantity, now_iso(), sku),
        )


def parse_mode(body: JSON) -> serving.Mode:
    """A ``/_control/mode`` body; a missing ``mode`` means normal, a null one is refused."""
    try:
        return serving.parse_mode(body.get("mode", "normal"), body, names=("normal", "slow", "fault", "error", "echo"))
    except serving.ModeError as exc:
        raise ControlError(422, str(exc)) from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def parse_call(raw: bytes) -> tuple[str, dict[str, str]]:
    """The operation named by the Body's first element and its child elements' text, by local name."""
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise SoapFault("Client", "DTDs are not accepted")
    try:
        root = ET.fromstring(raw)  # noqa: S314 - DTDs refused above; loopback test service
    except ET.ParseError as exc:
        raise SoapFault("Client", f"Malformed XML: {exc}") from exc
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapFault("VersionMismatch", "Expected a SOAP 1.1 Envelope")
    body = root.find(f"{{{SOAP_ENV}}}Body")
    if body is None or len(body) == 0:
        raise SoapFault("Client", "The Envelope has no Body element")
    call = body[0]
    if not call.tag.startswith(f"{{{NS}}}"):
        raise SoapFault("Client", f"Unknown operation {call.tag}")
    return _local(call.tag), {_local(child.tag): (child.text or "").strip() for child in call}


class Inventory(serving.Service[Reply]):
    """Request handling, independent of the HTTP plumbing."""

    store: Store

    def __init__(self, store: Store, token: str) -> None:
        super().__init__(store)
        self._token = token.encode()
        self.location = ""  # set once the server knows its port
        self.schema_location: str | None = None  # where the WSDL imports its types from (None: inline)
        self.guarded = False  # the WSDL and the types need the token
        self.service_location: str | None = None  # where the WSDL says the service is (None: here)

    def listening(self, base_url: str) -> None:
        self.location = f"{base_url}{ENDPOINT}"

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Answer one request. ``headers`` keys are lower-case."""
        parts = urlsplit(target)
        try:
            if parts.path.startswith("/_"):
                return self._side_door(method, parts.path, raw)
        except ControlError as exc:
            return json_reply(exc.status, {"error": str(exc)})
        if method == "GET" and parts.path == SCHEMA_PATH:
            return self._document("schema", headers, build_schema)
        if parts.path != ENDPOINT:
            return Reply(404, b"not found\n", "text/plain")
        if method == "GET":
            if parts.query.lower() in ("wsdl", "wsdl="):
                return self._document(
                    "wsdl", headers, lambda: build_wsdl(self.service_location or self.location, self.schema_location)
                )
            return Reply(405, b"POST a SOAP envelope, or GET ?wsdl\n", "text/plain", {"Allow": "GET, POST"})
        if method != "POST":
            return Reply(405, b"POST a SOAP envelope, or GET ?wsdl\n", "text/plain", {"Allow": "GET, POST"})
        try:
            return self._soap(headers, raw)
        except SoapFault as exc:
            return fault_reply(exc)

    def _document(self, name: str, headers: dict[str, str], build: Callable[[], str]) -> Reply:
        """The WSDL or the types, counted by whether the request carried a credential; 401 without one when guarded."""
        carried = any(headers.get(header) for header in CREDENTIAL_HEADERS)
        with self.store.lock, self.store.conn:
            self.store.bump(f"{name}_{'with' if carried else 'without'}_credential")
        if self.guarded and not self._authorised(headers):
            return Reply(401, b"unauthorized: send the inventory token\n", "text/plain")
        return Reply(200, build().encode())

    def _soap(self, headers: dict[str, str], raw: bytes) -> Reply:
        with self.store.lock, self.store.conn:
            self.store.bump("requests_total")
        fault = self.faults.take()
        if fault.name == "slow":
            time.sleep(fault.delay)
        elif fault.name == "fault":
            raise SoapFault("Server", "Inventory backend unavailable; try again later")
        elif fault.name == "error":
            return Reply(fault.status, f"{fault.status} upstream unavailable\n".encode(), "text/plain")
        elif fault.name == "echo":
            received = "; ".join(f"{name}: {headers[name]}" for name in CREDENTIAL_HEADERS if name in headers)
            raise SoapFault(
                "Server" if fault.status >= 500 else "Client", f"Debug: request refused; received {received}"
            )
        if not self._authorised(headers):
            raise SoapFault("Client.Authentication", "Unauthorized: send the inventory token")
        operation, params = parse_call(raw)
        handler = getattr(self, f"op_{operation}", None)
        if handler is None:
            raise SoapFault("Client", f"Unknown operation {operation}")
        with self.store.lock, self.store.conn:  # one transaction; a SoapFault rolls it back
            body = handler(params)
        return Reply(200, envelope(body))

    def _authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, supplied = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            supplied = headers.get("x-api-key", "")
        return bool(supplied) and hmac.compare_digest(supplied.strip().encode(), self._token)

    @staticmethod
    def _sku(params: dict[str, str]) -> str:
        sku = params.get("sku", "")
        if not SKU_RE.fullmatch(sku):
            raise SoapFault("Client", "sku must be 1-32 upper-case letters, digits or hyphens")
        return sku

    # -- operations (called with the store lock held, inside a transaction) --

    def op_Ping(self, params: dict[str, str]) -> str:  # named after the SOAP operation
        return f"<inv:PingResponse>{element('ok', True)}</inv:PingResponse>"

    def op_GetItem(self, params: dict[str, str]) -> str:
        return f"<inv:GetItemResponse>{item_xml('item', self.store.item(self._sku(params)))}</inv:GetItemResponse>"

    def op_ListItems(self, params: dict[str, str]) -> str:
        items = "".join(item_xml("item", item) for item in self.store.items(params.get("warehouse") or None))
        return f"<inv:ListItemsResponse>{items}</inv:ListItemsResponse>"

    def op_SetQuantity(self, params: dict[str, str]) -> str:
        sku = self._sku(params)
        try:
            quantity = int(params.get("quantity", ""))
        except ValueError:
            raise SoapFault("Client", "quantity must be a whole number") from None
        if not 0 <= quantity <= MAX_QUANTITY:
            raise SoapFault("Client", f"quantity must be between 0 and {MAX_QUANTITY}")
        request_id = params.get("requestId", "")
        if len(request_id) > MAX_REQUEST_ID_CHARS:
            raise SoapFault("Client", "requestId is too long")
        conn = self.store.conn
        if request_id:
            stored = conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
            if stored is not None:
                if (stored["sku"], stored["quantity"]) != (sku, quantity):
                    raise SoapFault("Client", f"requestId {request_id} was already used for another change")
                answer = json.loads(stored["answer"])
                return self._set_quantity_xml({**answer, "replayed": True})
        before = self.store.item(sku)
        self.store.set_quantity(sku, quantity)
        after = self.store.item(sku)
        answer = {"sku": sku, "before": before["quantity"], "after": quantity, "version": after["version"]}
        self.store.bump("writes_total")
        if request_id:
            conn.execute(
                "INSERT INTO requests (request_id, sku, quantity, answer) VALUES (?, ?, ?, ?)",
                (request_id, sku, quantity, json.dumps(answer)),
            )
        return self._set_quantity_xml({**answer, "replayed": False})

    @staticmethod
    def _set_quantity_xml(answer: JSON) -> str:
        inner = "".join(element(name, answer[name]) for name in ("sku", "before", "after", "version", "replayed"))
        return f"<inv:SetQuantityResponse>{inner}</inv:SetQuantityResponse>"

    # -- side door (no auth) --

    def _side_door(self, method: str, path: str, raw: bytes) -> Reply:
        routes = {
            ("GET", "/_health"): lambda body: {"ok": True},
            ("GET", "/_stats"): self._stats,
            ("GET", "/_control/mode"): lambda body: self.faults.describe(),
            ("POST", "/_control/mode"): self._set_mode,
            ("POST", "/_control/reset"): self._reset,
            ("POST", "/_control/set"): self._set_item,
            ("POST", "/_control/documents"): self._set_documents,
        }
        handler = routes.get((method, path))
        if handler is None:
            raise ControlError(404, "not found")
        try:
            body = serving.json_object(raw) if method == "POST" else {}
        except serving.BadBody as exc:
            raise ControlError(400, str(exc)) from exc
        return json_reply(200, handler(body))

    def _stats(self, body: JSON) -> JSON:
        with self.store.lock:
            rows = self.store.conn.execute("SELECT request_id FROM requests ORDER BY request_id").fetchall()
            return {
                "writes_total": self.store.counter("writes_total"),
                "writes_by_key": {row["request_id"]: 1 for row in rows},
                "requests_total": self.store.counter("requests_total"),
                "documents": {
                    name: {
                        "with_credential": self.store.counter(f"{name}_with_credential"),
                        "without_credential": self.store.counter(f"{name}_without_credential"),
                    }
                    for name in ("wsdl", "schema")
                },
            }

    def _set_mode(self, body: JSON) -> JSON:
        return self.faults.set(parse_mode(body))

    def _set_documents(self, body: JSON) -> JSON:
        location, guarded = body.get("schema_location"), body.get("guarded", False)
        service = body.get("service_location")
        for name, value in (("schema_location", location), ("service_location", service)):
            if value is not None and (not isinstance(value, str) or not value.startswith(("http://", "https://"))):
                raise ControlError(422, f"{name} must be an http(s) address or null")
        if not isinstance(guarded, bool):
            raise ControlError(422, "guarded must be true or false")
        self.schema_location, self.guarded, self.service_location = location, guarded, service
        return {"schema_location": location, "guarded": guarded, "service_location": service}

    def _reset(self, body: JSON) -> JSON:
        with self.store.lock:
            self.store.reset()
        self.faults.clear()
        self.schema_location, self.guarded, self.service_location = None, False, None
        return {"reset": True, "items": [item["sku"] for item in SEED_ITEMS]}

    def _set_item(self, body: JSON) -> JSON:
        sku, fields = body.get("sku"), body.get("fields", {})
        if not isinstance(sku, str) or not isinstance(fields, dict) or set(fields) - {"quantity"}:
            raise ControlError(422, 'send {"sku": ..., "fields": {"quantity": N}}')
        quantity = fields.get("quantity")
        if type(quantity) is not int or not 0 <= quantity <= MAX_QUANTITY:
            raise ControlError(422, "quantity must be a whole number >= 0")
        with self.store.lock, self.store.conn:
            try:
                self.store.item(sku)
            except SoapFault as exc:
                raise ControlError(404, exc.message) from None
            self.store.set_quantity(sku, quantity)
            item = self.store.item(sku)
        return item


class RequestHandler(serving.ServiceHandler[Reply]):
    """SOAP XML on the wire; the side door's JSON and the plain-text refusals come ready-encoded."""

    server_version = f"{NAME}/1"
    service_name = NAME

    def refuse_body(self, problem: serving.BodyProblem) -> Reply:
        return Reply(400, b"send a Content-Length of at most 1 MB\n", "text/plain")

    def internal_error(self) -> Reply:
        return fault_reply(SoapFault("Server", "internal error"))

    def send_reply(self, reply: Reply, *, close: bool = False) -> None:
        self.write_answer(reply.status, reply.content_type, reply.body, reply.headers, close=close)


def main(argv: list[str] | None = None) -> int:
    return serving.serve(
        argv,
        prog="python -m sandbox.soap_inventory",
        description=DESCRIPTION,
        default_port=8200,
        default_store=Path("var/sandbox/inventory.sqlite3"),
        token_noun="token",
        open_service=lambda path, token: Inventory(Store(path), token),
        handler=RequestHandler,
    )


if __name__ == "__main__":
    raise SystemExit(main())
