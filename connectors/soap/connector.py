"""The `soap` connector: a thin wrapper over a WSDL service (zeep), its operations mapped to reads and actions.

The settings and each action's `operation` are described in connectors/soap/config.py. Failures are sorted as the
executor needs them: SOAP 1.1 says a `Server` fault may succeed if resent later, so it is transient like a
timeout, a refused connection, 429 or a gateway's 5xx; a `Client` fault is the request's own fault and permanent,
and a "not found" one means the record does not exist.
"""

from __future__ import annotations

import base64
import datetime
import os
import threading
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

from connectors.base import Connector, Health, PermanentError, RecordNotFound, Result, TransientError
from connectors.soap.config import SoapAction, SoapConfig, SoapResource
from governance.choices import Compensation


class _Transport(Transport):
    """zeep's transport with one requests session per thread (a Session is not thread-safe) that loads only http(s)
    documents, noting each answer's HTTP status so a fault without a code can be told apart from a gateway's 5xx."""

    def __init__(self, timeout: tuple[float, float], headers: dict[str, str]) -> None:
        self._local = threading.local()
        super().__init__(timeout=timeout, operation_timeout=timeout)
        # zeep's __init__ set up this thread's session with a file:// adapter: start afresh, carrying the credential
        # while the WSDL loads (some services guard it like their operations).
        self.forget_session()
        self.session.headers.update(headers)

    def forget_session(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
        self._local.session = None

    def load(self, url):
        if urlsplit(url).scheme not in ("http", "https"):  # an import must not make us read our own disk
            raise PermanentError(f"the WSDL refers to {url}: only http(s) documents are loaded")
        return super().load(url)

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["User-Agent"] = f"Gatehouse-soap/1 zeep/{zeep.__version__}"
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


_clients: dict[tuple, tuple[zeep.Client, ServiceProxy]] = {}
_clients_lock = threading.Lock()


def _service(config: SoapConfig, where: str, headers: dict[str, str]) -> tuple[zeep.Client, ServiceProxy]:
    """One client per process and WSDL: parsing a WSDL costs far more than a call. Built outside the lock, so a
    slow WSDL delays only the systems that need it; a failed load is not cached, the next call tries again."""
    where_from = (config.wsdl_url, config.service, config.port, config.endpoint)
    key = (os.getpid(), *where_from, config.timeout, config.connect_timeout)
    cached = _clients.get(key)
    if cached is not None:
        return cached
    transport = _Transport((config.connect_timeout, config.timeout), headers)
    try:
        client = zeep.Client(config.wsdl_url, transport=transport)
    except requests.Timeout as exc:
        raise TransientError(f"{where}: loading the WSDL timed out") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        message = f"{where}: loading the WSDL answered {status}"
        if status == 429 or status >= 500:
            raise TransientError(message) from exc
        raise PermanentError(message) from exc
    except requests.RequestException as exc:
        raise TransientError(f"{where}: loading the WSDL failed: {type(exc).__name__}") from exc
    except (ZeepError, etree.LxmlError, ValueError) as exc:
        raise PermanentError(f"{where}: {config.wsdl_url} is not a usable WSDL: {exc}") from exc
    finally:
        transport.forget_session()  # calls carry their own system's credential, never this one
    services = client.wsdl.services
    try:
        service = services[config.service] if config.service else next(iter(services.values()))
        port = service.ports[config.port] if config.port else next(iter(service.ports.values()))
    except (KeyError, StopIteration):
        found = {name: list(s.ports) for name, s in services.items()}
        raise PermanentError(
            f"{where}: the WSDL has no service {config.service or '(any)'} with port {config.port or '(any)'}; "
            f"it has {found}"
        ) from None
    address = config.endpoint or port.binding_options.get("address")
    if not address:
        raise PermanentError(f'{where}: the WSDL gives no address for port {port.name}; set "endpoint"')
    bound = client.create_service(port.binding.name.text, address)
    with _clients_lock:
        return _clients.setdefault(key, (client, bound))


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
    def __init__(self, system, secret: str | None) -> None:
        super().__init__(system, secret)
        self.config = SoapConfig.parse(system.connector_config)  # connector_for turns a ValidationError into one

    def _call(self, operation: str, params: dict[str, Any]) -> Any:
        """Call one operation; its answer as plain JSON-safe values, or a connector error saying what went wrong."""
        where = f"{self.system.slug}: {operation}"
        client, service = _service(self.config, where, self.auth_headers())
        try:
            method = service[operation]
        except AttributeError:
            raise PermanentError(f"{where}: the WSDL has no such operation") from None
        try:
            # Per call and per thread: the client is shared by every system with this WSDL.
            with client.settings(extra_http_headers=self.auth_headers()):
                answer = method(**params)
        except Fault as exc:
            raise self._fault_error(exc, where, client.transport.last_status) from exc
        except requests.Timeout as exc:
            raise TransientError(f"{where} timed out") from exc
        except requests.RequestException as exc:
            raise TransientError(f"{where} failed: {type(exc).__name__}") from exc
        except ZeepTransportError as exc:
            message = f"{where} answered {exc.status_code} without a SOAP envelope"
            if exc.status_code == 429 or exc.status_code >= 500:
                raise TransientError(message) from exc
            raise PermanentError(message) from exc
        except TypeError as exc:  # a parameter the operation does not take
            raise PermanentError(f"{where}: the parameters do not match the WSDL: {exc}") from exc
        except ZeepError as exc:  # a missing parameter, or an answer that does not match the WSDL
            raise PermanentError(f"{where}: {type(exc).__name__}: {exc.message or exc}") from exc
        return _plain(serialize_object(answer, dict))

    def _fault_error(self, fault: Fault, where: str, status: int | None) -> Exception:
        code = fault.code or ""
        kind = code.rpartition(":")[2].split(".")[0].lower()
        message = f"{where}: {fault.message or 'fault'}" + (f" ({code})" if code else "")
        if kind in ("server", "receiver") or (not code and status is not None and (status == 429 or status >= 500)):
            return TransientError(message)
        words = [fault.message or "", code]
        if isinstance(fault.detail, etree._Element):
            words += [etree.QName(node).localname for node in fault.detail.iter() if isinstance(node.tag, str)]
        text = " ".join(words).lower()
        if any(marker in text for marker in self.config.not_found_faults):
            return RecordNotFound(message)
        return PermanentError(message)

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

    def execute(self, action, record_id: str, payload: dict[str, Any], idempotency_key: str) -> Result:

        spec = self._action(action)
        fields = [name for name in spec.params.values() if name in payload]
        params: dict[str, Any] = {spec.id_param: record_id}
        params.update({param: payload[name] for param, name in spec.params.items() if name in payload})
        if spec.idempotency_param:
            params[spec.idempotency_param] = idempotency_key
        restores = action.compensation == Compensation.RESTORE_FIELDS
        current = self.read(action.resource.name, record_id) if restores else {}
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
        where = f"{self.system.slug}: health"
        try:
            if self.config.health_operation:
                self._call(self.config.health_operation, {})
            else:
                timeout = (self.config.connect_timeout, self.config.timeout)
                response = requests.get(
                    self.config.wsdl_url, headers=self.auth_headers(), timeout=timeout, allow_redirects=False
                )
                if response.status_code != 200:
                    return Health(False, f"{where}: the WSDL answered {response.status_code}")
        except (TransientError, PermanentError) as exc:
            return Health(False, str(exc))
        except requests.RequestException as exc:
            return Health(False, f"{where}: the WSDL could not be fetched: {type(exc).__name__}")
        return Health(True)
