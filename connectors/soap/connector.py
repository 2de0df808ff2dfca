"""The `soap` connector: a thin wrapper over a WSDL service (zeep), its operations mapped to reads and actions.

The settings and each action's `operation` are described in connectors/soap/config.py. Failures are sorted as the
executor needs them: SOAP 1.1 says a `Server` fault may succeed if resent later, so it is transient like a
timeout, a refused connection, 429 or a gateway's 5xx; a `Client` fault is the request's own fault and permanent,
and a "not found" one means the record does not exist. An error names the operation and the fault code or status;
the fault string and detail go to the log line of its reference (connectors/errors.py).

The vaulted credential goes only to the service's own origin - scheme, host and port of the address the WSDL gives
for the port, or of "endpoint" when set - never to another host a WSDL imports a document from, nor to a WSDL served
by a host that is not the service's (`_load` says how the WSDL's own host is treated).
"""

from __future__ import annotations

import base64
import datetime
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import requests
import zeep
from django.core.exceptions import ValidationError
from lxml import etree
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault
from zeep.exceptions import TransportError as ZeepTransportError
from zeep.helpers import serialize_object
from zeep.proxy import ServiceProxy
from zeep.transports import Transport

from connectors.base import Connector, ConnectorError, Health, PermanentError, RecordNotFound, Result, TransientError
from connectors.errors import LOGGED_CHARS, downstream_error
from connectors.hosts import host_refusal
from connectors.soap.config import SoapAction, SoapConfig, SoapResource
from governance.choices import Compensation

# A fault code is named in the error as the fault's status only when it looks like one (a QName such as
# soap:Client.Authentication); anything else a system put there is only logged.
_FAULT_CODE = re.compile(r"[A-Za-z_][\w.-]{0,63}(:[A-Za-z_][\w.-]{0,63})?")

Origin = tuple[str, str, int]  # scheme, host, port: where a request goes, as far as a credential is concerned


def _port(parts) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def origin(url: str | None) -> Origin | None:
    """The origin of an http(s) address (default ports filled in); None for anything else."""
    parts = urlsplit(url or "")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


class _CredentialSession(requests.Session):
    """A requests session that adds the credential it is lent only to requests for one origin, the service's.

    Checked on every send, redirects included: requests copies a header such as X-Api-Key to wherever a redirect
    points (it drops only Authorization, and only when the host changes).
    """

    def __init__(self) -> None:
        super().__init__()
        self.headers["User-Agent"] = f"Gatehouse-soap/1 zeep/{zeep.__version__}"
        self.credential: dict[str, str] = {}
        self.service_origin: Origin | None = None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        refusal = host_refusal(parts.hostname or "", _port(parts))
        if refusal:  # a redirect (or a WSDL) leading into the private network
            raise _RefusedDocument(request.url, f"it leads to a host it may not: {refusal}")
        for name in self.credential:
            request.headers.pop(name, None)
        if self.credential and self.service_origin is not None and origin(request.url) == self.service_origin:
            request.headers.update(self.credential)
        return super().send(request, **kwargs)


class _RefusedDocument(requests.RequestException):
    """The WSDL refers to a document that is not http(s), or on a host Gatehouse may not connect to: an import must
    not make us read our own disk, nor reach into the private network on the WSDL host's say-so."""


class _Transport(Transport):
    """zeep's transport with one requests session per thread (a Session is not thread-safe) that loads only http(s)
    documents and carries a credential only while one is lent, to the service's origin alone; it notes each
    answer's HTTP status so a fault without a code can be told apart from a gateway's 5xx."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        self._local = threading.local()
        super().__init__(timeout=timeout, operation_timeout=timeout)
        self.forget_session()  # zeep's __init__ set up this thread's session with a file:// adapter: start afresh

    def forget_session(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
        self._local.session = None

    @contextmanager
    def lending(self, credential: dict[str, str], to: Origin | None) -> Iterator[None]:
        """This thread's requests to the origin `to` carry `credential` until the block ends; no other request does."""
        session = self.session
        session.credential, session.service_origin = dict(credential), to
        try:
            yield
        finally:
            session.credential, session.service_origin = {}, None

    def load(self, url):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise _RefusedDocument(url, "it refers to a document that is not http(s)")
        refusal = host_refusal(parts.hostname or "", _port(parts))
        if refusal:
            raise _RefusedDocument(url, f"it refers to a document on a host it may not: {refusal}")
        return super().load(url)

    @property
    def session(self) -> _CredentialSession:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = _CredentialSession()
        return session

    @session.setter
    def session(self, value: requests.Session) -> None:
        """zeep's __init__ assigns a shared session; sessions are made per thread instead."""
        if value is not getattr(self._local, "session", None):
            value.close()

    def post(self, address, message, headers):
        self._local.status = None
        response = super().post(address, message, headers)
        self._local.status = response.status_code
        return response

    @property
    def last_status(self) -> int | None:
        return getattr(self._local, "status", None)


@dataclass(frozen=True)
class _Service:
    client: zeep.Client
    proxy: ServiceProxy
    origin: Origin  # the service's own address: the only origin the credential goes to


_clients: dict[tuple, _Service] = {}
_clients_lock = threading.Lock()


def _load(config: SoapConfig, transport: _Transport, credential: dict[str, str]) -> tuple[zeep.Client, Origin | None]:
    """Parse the WSDL; the credential goes only to the service's origin. Returns the client and the origin that was
    lent the credential (None: nobody).

    With "endpoint" set the service's origin is known before anything is loaded: documents there (the WSDL too, when
    the service publishes it at its own address) get the credential, documents elsewhere do not. Without it the
    service's address is in the WSDL itself, so the WSDL is loaded without the credential first. Only when the WSDL's
    own host refuses that (401 or 403: it guards its WSDL like its operations) is it loaded again with the credential
    lent to that host, presumed to be the service's; the caller then checks that against the address the WSDL gives
    and refuses a mismatch. An import from any other host never gets the credential.
    """
    endpoint = origin(config.endpoint) if config.endpoint else None
    with transport.lending(credential, endpoint):
        try:
            return zeep.Client(config.wsdl_url, transport=transport), endpoint
        except requests.HTTPError as exc:
            refused = exc.response
            guarded = refused is not None and refused.status_code in (401, 403)
            at_wsdl_host = refused is not None and origin(refused.url) == origin(config.wsdl_url)
            if endpoint is not None or not credential or not guarded or not at_wsdl_host:
                raise
    presumed = origin(config.wsdl_url)
    with transport.lending(credential, presumed):
        return zeep.Client(config.wsdl_url, transport=transport), presumed


def _loaded(connector: SoapConnector, transport: _Transport) -> tuple[zeep.Client, Origin | None]:
    """`_load`, its failures sorted for the executor and worded by `downstream_error`."""
    attempted = "loading the WSDL"
    try:
        return _load(connector.config, transport, connector.auth_headers())
    except _RefusedDocument as exc:
        url, why = exc.args
        raise downstream_error(connector, PermanentError, attempted, f"refused: {why}", said=url) from None
    except requests.Timeout as exc:
        raise downstream_error(connector, TransientError, attempted, "timed out", said=exc) from None
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else 0
        error = TransientError if code == 429 or code >= 500 else PermanentError
        raise downstream_error(connector, error, attempted, f"answered {code}", said=exc) from None
    except requests.RequestException as exc:
        raise downstream_error(
            connector, TransientError, attempted, f"failed: {type(exc).__name__}", said=exc
        ) from None
    except (ZeepError, etree.LxmlError, ValueError) as exc:
        raise downstream_error(connector, PermanentError, attempted, "failed: not a usable WSDL", said=exc) from None
    finally:
        transport.forget_session()


def _service(connector: SoapConnector) -> _Service:
    """One client per process and WSDL: parsing a WSDL costs far more than a call. Built outside the lock, so a
    slow WSDL delays only the systems that need it; a failed load is not cached, the next call tries again."""
    config = connector.config
    where_from = (config.wsdl_url, config.service, config.port, config.endpoint)
    key = (os.getpid(), *where_from, config.timeout, config.connect_timeout)
    cached = _clients.get(key)
    if cached is not None:
        return cached
    transport = _Transport((config.connect_timeout, config.timeout))
    client, lent_to = _loaded(connector, transport)
    services = client.wsdl.services
    try:
        service = services[config.service] if config.service else next(iter(services.values()))
        port = service.ports[config.port] if config.port else next(iter(service.ports.values()))
    except (KeyError, StopIteration):
        found = {name: list(s.ports) for name, s in services.items()}
        status = f"failed: no service {config.service or '(any)'} with port {config.port or '(any)'} in it"
        raise downstream_error(connector, PermanentError, "loading the WSDL", status, said=found) from None
    address = config.endpoint or port.binding_options.get("address")
    service_origin = origin(address)
    if service_origin is None:
        status = f'failed: it gives no http(s) address for port {config.port or "(the first)"}; set "endpoint"'
        raise downstream_error(connector, PermanentError, "loading the WSDL", status, said=address) from None
    refusal = host_refusal(service_origin[1], service_origin[2])
    if refusal:  # the WSDL names its service's address, and the credential goes there
        raise downstream_error(connector, PermanentError, "loading the WSDL", f"refused: {refusal}", said=address)
    if lent_to is not None and lent_to != service_origin:
        # The WSDL's host asked for the credential as the service's, and the WSDL says the service is elsewhere.
        status = 'failed: it names a service on another host than its own; set "endpoint" to the service\'s address'
        raise downstream_error(connector, PermanentError, "loading the WSDL", status, said=address) from None
    bound = client.create_service(port.binding.name.text, address)
    with _clients_lock:
        return _clients.setdefault(key, _Service(client, bound, service_origin))


def _plain(value: Any) -> Any:
    """JSON-safe values: what zeep parses (Decimal, datetime, bytes) is stored in proposals and audit rows."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, etree._Element):
        return etree.tostring(value, encoding="unicode")
    return str(value)


_MISSING = object()


def _dig(data: Any, path: str, default: Any = _MISSING) -> Any:
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif default is not _MISSING:
            return default
        else:
            raise KeyError(path)
    return data


class SoapConnector(Connector):
    def __init__(self, system, secret: str | None, vaulted=None) -> None:
        super().__init__(system, secret, vaulted)
        self.config = SoapConfig.parse(system.connector_config)  # connector_for turns a ValidationError into one

    def _call(self, operation: str, params: dict[str, Any]) -> Any:
        """Call one operation; its answer as plain JSON-safe values, or a connector error saying what went wrong."""
        soap = _service(self)
        try:
            method = soap.proxy[operation]
        except AttributeError:
            raise PermanentError(f"{self.system.slug}: {operation}: the WSDL has no such operation") from None
        transport = soap.client.transport
        try:
            # Per call and per thread: the client is shared by every system with this WSDL.
            with transport.lending(self.auth_headers(), soap.origin):
                answer = method(**params)
        except Fault as exc:
            raise self._fault_error(exc, operation, transport.last_status) from None
        except _RefusedDocument as exc:
            url, why = exc.args
            raise downstream_error(self, PermanentError, operation, f"refused: {why}", said=url) from None
        except requests.Timeout as exc:
            raise downstream_error(self, TransientError, operation, "timed out", said=exc) from None
        except requests.RequestException as exc:
            raise downstream_error(self, TransientError, operation, f"failed: {type(exc).__name__}", said=exc) from None
        except ZeepTransportError as exc:
            error = TransientError if exc.status_code == 429 or exc.status_code >= 500 else PermanentError
            status = f"answered {exc.status_code} without a SOAP envelope"
            said = f"{exc.message}; body: {exc.content!r}"
            raise downstream_error(self, error, operation, status, said=said) from None
        except TypeError as exc:  # a parameter the operation does not take
            status = "failed: the parameters do not match the WSDL"
            raise downstream_error(self, PermanentError, operation, status, said=exc) from None
        except ZeepError as exc:  # a missing parameter, or an answer that does not match the WSDL
            raise downstream_error(self, PermanentError, operation, f"failed: {type(exc).__name__}", said=exc) from None
        return _plain(serialize_object(answer, dict))

    def _fault_error(self, fault: Fault, operation: str, status: int | None) -> ConnectorError:
        """A fault sorted by its code: the code is named, the fault string and detail are only logged."""
        code = fault.code or ""
        kind = code.rpartition(":")[2].split(".")[0].lower()
        words = [fault.message or "", code]
        detail = ""
        if isinstance(fault.detail, etree._Element):
            words += [etree.QName(node).localname for node in fault.detail.iter() if isinstance(node.tag, str)]
            detail = etree.tostring(fault.detail, encoding="unicode")
        said = f"HTTP {status}; faultcode {code}; faultstring {fault.message}; detail {detail}"
        named = (
            f"fault {code}" if _FAULT_CODE.fullmatch(code) else "a fault" + (" with an unreadable code" if code else "")
        )
        if kind in ("server", "receiver") or (not code and status is not None and (status == 429 or status >= 500)):
            return downstream_error(self, TransientError, operation, f"answered {named}", said=said)
        text = " ".join(words).lower()
        if any(marker in text for marker in self.config.not_found_faults):
            return downstream_error(
                self, RecordNotFound, operation, f"answered {named}", said=said, meaning="not found"
            )
        return downstream_error(self, PermanentError, operation, f"answered {named}", said=said)

    def _resource(self, resource: str) -> SoapResource:
        try:
            return self.config.resources[resource]
        except KeyError:
            raise PermanentError(
                f"{self.system.slug}: resource {resource!r} is not mapped to a SOAP operation in the connector settings"
            ) from None

    def read(self, resource: str, record_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        mapping = self._resource(resource)
        answer = self._call(mapping.operation, {mapping.id_param: record_id})
        where = f"{self.system.slug}: {mapping.operation}"
        record = answer
        if mapping.result:
            try:
                record = _dig(answer, mapping.result)
            except KeyError:
                raise PermanentError(f"{where}: the answer has no {mapping.result}") from None
        if record is None or record == {}:  # some services answer "nothing" rather than fault on an unknown id
            raise RecordNotFound(f"{where}: no record {record_id}")
        if not isinstance(record, dict):
            raise PermanentError(f'{where}: the answer is not a record (set "result" to the path of the record)')
        if mapping.fields is not None:
            record = {name: _dig(record, path, None) for name, path in mapping.fields.items()}
        return {name: record.get(name) for name in fields} if fields is not None else record

    def _action(self, action) -> SoapAction:
        try:
            return SoapAction.parse(action.operation)
        except ValidationError as exc:  # the action was saved without full_clean()
            raise PermanentError(f"{action}: operation: {' '.join(exc.messages)}") from None

    def execute(
        self, action, record_id: str, payload: dict[str, Any], idempotency_key: str, *, expected=None
    ) -> Result:

        spec = self._action(action)
        fields = [name for name in spec.params.values() if name in payload]
        params: dict[str, Any] = {spec.id_param: record_id}
        params.update({param: payload[name] for param, name in spec.params.items() if name in payload})
        if spec.idempotency_param:
            params[spec.idempotency_param] = idempotency_key
        restores = action.compensation == Compensation.RESTORE_FIELDS
        # What the worker just read and judged (approvals/freshness.py), not a second read it never judged.
        current: dict[str, Any] = {}
        if restores:
            current = expected if isinstance(expected, dict) else self.read(action.resource.name, record_id)
        answer = self._call(spec.operation, params)
        before = {name: current.get(name) for name in fields} if restores else {}
        after = {name: payload[name] for name in fields}
        # The system's own account wins: on a replayed request our read above already saw the new value.
        for target, mapping in ((before, spec.before), (after, spec.after)):
            for name, path in mapping.items():
                if name in fields:
                    target[name] = _dig(answer, path, target.get(name))
        compensation: dict[str, Any] = {}
        if restores:
            compensation = {
                "operation": spec.operation,
                "params": {
                    spec.id_param: record_id,
                    **{param: before[name] for param, name in spec.params.items() if name in before},
                },
                "idempotency_param": spec.idempotency_param,
                "restores": before,
            }
        return Result(before=before, after=after, compensation=compensation)

    def compensate(
        self, action, record_id: str, compensation: dict[str, Any], idempotency_key: str, *, expected=None
    ) -> Result:
        if not compensation:
            return super().compensate(action, record_id, compensation, idempotency_key)
        params = dict(compensation["params"])
        if compensation.get("idempotency_param"):
            params[compensation["idempotency_param"]] = idempotency_key
        self._call(compensation["operation"], params)
        return Result(after=dict(compensation.get("restores") or {}))

    def health(self) -> Health:
        try:
            if self.config.health_operation:
                self._call(self.config.health_operation, {})
            else:
                self._fetch_wsdl()
        except (TransientError, PermanentError) as exc:
            return Health(False, str(exc))
        return Health(True)

    def _fetch_wsdl(self) -> None:
        """Fetch the WSDL as a sign of life: with the credential only when it is on the service's own origin."""
        soap = _service(self)
        wsdl_url = self.config.wsdl_url
        credential = self.auth_headers() if origin(wsdl_url) == soap.origin else {}
        timeout = (self.config.connect_timeout, self.config.timeout)
        attempted = "health: fetching the WSDL"
        try:
            response = requests.get(wsdl_url, headers=credential, timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise downstream_error(self, TransientError, attempted, f"failed: {type(exc).__name__}", said=exc) from None
        if response.status_code != 200:
            said = f"HTTP {response.status_code}; body: {response.text[:LOGGED_CHARS]}"
            error = TransientError if response.status_code == 429 or response.status_code >= 500 else PermanentError
            raise downstream_error(self, error, attempted, f"answered {response.status_code}", said=said) from None
