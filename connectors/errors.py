"""What a connector says when a system fails: a message safe to pass on, and the detail in a log line that redacts
the credential.

A connector error's message travels far: an agent's problem detail and MCP tool result, a proposal's failure reason
with its audit event and failure e-mail, a reversal step's last error, a rotation's health check, the circuit
breaker's note in the admin. So it holds only what Gatehouse knows itself: the system, what was attempted, the status
(an HTTP status, a SOAP fault code, an MCP error code, "timed out") and a reference. What the system said - its error
body, fault string or tool error text, its stderr, the client library's exception text (which can quote the answer,
or the request's own headers) - goes to one WARNING line of the connector's logger under the same reference, with
the credential taken out: a system that echoes the request's `Authorization` header in a debug error must not hand
the vaulted secret on, to an agent or to the log.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import secrets
from collections.abc import Iterable
from typing import TypeVar
from urllib.parse import quote, quote_plus

from connectors.base import Connector, ConnectorError, TransientError

REDACTED = "[redacted]"
LOGGED_CHARS = 4000  # of what the system said, after redaction: enough to diagnose, not a whole page

E = TypeVar("E", bound=ConnectorError)

# Headers that carry credentials whatever the system. Their values are removed wherever a name/value pair shows in
# what is logged: `Name: value`, `"name": "value"`, `name=value`, `<Name>value</Name>`. The header a system's
# credential is sent in (kind "header", e.g. X-Inventory-Key) is added per connector.
CREDENTIAL_HEADERS = (
    r"(?:proxy-)?authorization",
    r"(?:set-)?cookie",
    r"x-[a-z0-9_-]*(?:key|token|secret|auth)[a-z0-9_-]*",
    r"[a-z0-9_-]*api[-_]?key",
)


def _pairs(names: Iterable[str]) -> re.Pattern[str]:
    name = "|".join(names)
    return re.compile(
        rf"""
        (?P<head>(?<![\w-])["']?(?:{name})["']?[ \t]*[:=][ \t]*)
        (?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\r\n,;&<>{{}}"']*)
        |
        (?P<open><(?:[\w.-]+:)?(?:{name})(?:\s[^>]*)?>)[^<]*
        """,
        re.IGNORECASE | re.VERBOSE,
    )


_STANDARD_PAIRS = _pairs(CREDENTIAL_HEADERS)


def _hide_value(match: re.Match[str]) -> str:
    if match.group("open") is not None:
        return match.group("open") + REDACTED
    value = match.group("value")
    quote_char = value[:1] if value[:1] in ('"', "'") else ""
    return f"{match.group('head')}{quote_char}{REDACTED}{quote_char}"


def _forms(text: str) -> set[str]:
    """`text` as a system may echo it back: as is, URL-, JSON- or XML-escaped, base64-encoded; a Basic header's
    base64 pair on its own."""
    forms = {text, quote(text, safe=""), quote_plus(text), json.dumps(text)[1:-1], html.escape(text)}
    forms.add(base64.b64encode(text.encode()).decode())
    scheme, _, rest = text.partition(" ")
    if rest and scheme.lower() in ("basic", "bearer"):
        forms.add(rest)
    return {form for form in forms if form}


class Redactor:
    """Takes a connector's credential out of text: the secret itself in any of its usual forms, and the values of
    credential headers (the standard ones and the one the system's credential names)."""

    def __init__(self, credentials: Iterable[str], header_names: Iterable[str] = ()) -> None:
        # Longest first: a Basic header's value is cut whole rather than leaving its scheme behind a shorter match.
        self._texts = sorted({form for text in credentials for form in _forms(text)}, key=len, reverse=True)
        extra = [re.escape(name) for name in header_names if name]
        self._pairs = _pairs([*CREDENTIAL_HEADERS, *extra]) if extra else _STANDARD_PAIRS

    @classmethod
    def of(cls, connector: Connector) -> Redactor:
        return cls(connector.credential_texts(), connector.auth_headers())

    def __call__(self, text: str) -> str:
        for secret in self._texts:
            text = text.replace(secret, REDACTED)
        return self._pairs.sub(_hide_value, text)


def describe(said: object) -> str:
    """What the system or its client said, as text: an exception with its notes, causes and grouped exceptions."""
    if not isinstance(said, BaseException):
        return "" if said is None else str(said)
    parts: list[str] = []
    seen: set[int] = set()

    def walk(exc: BaseException) -> None:
        if id(exc) in seen or len(parts) > 20:
            return
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}" + "".join(f" [{note}]" for note in getattr(exc, "__notes__", [])))
        for inner in exc.exceptions if isinstance(exc, BaseExceptionGroup) else ():
            walk(inner)
        underneath = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if underneath is not None:
            walk(underneath)

    walk(said)
    return "; ".join(parts)


def new_reference() -> str:
    """A short id the operator searches the logs for: unique enough among one deployment's recent failures."""
    return secrets.token_hex(5)


def downstream_error(
    connector: Connector,
    error: type[E],
    attempted: str,
    status: str,
    *,
    said: object = None,
    meaning: str = "",
    retry_after: float | None = None,
) -> E:
    """The error to raise when a system failed, named `{system}: {attempted} {status}[: {meaning}] (reference R)`.

    `attempted` and `status` are Gatehouse's own words ("GET /accounts/4471", "answered 503", "timed out", "fault
    soap:Client"), as is `meaning` ("not found"); they are redacted too, since a status can come from the answer (a
    SOAP fault code). `said` - the body, fault string, tool error text or exception - is only logged: at WARNING on
    the connector's logger, with the same message and the credential redacted. Raise the result `from None`: a
    chained cause would carry the system's words into every traceback logged further up.
    """
    reference = new_reference()
    redact = Redactor.of(connector)
    named = f"{connector.system.slug}: {attempted} {status}" + (f": {meaning}" if meaning else "")
    message = f"{redact(named)} (reference {reference})"
    detail = redact(describe(said))
    if len(detail) > LOGGED_CHARS:
        detail = detail[:LOGGED_CHARS] + " [cut]"
    logging.getLogger(type(connector).__module__).warning("%s; what it said: %s", message, detail or "nothing")
    exc = error(message, retry_after=retry_after) if issubclass(error, TransientError) else error(message)
    exc.reference = reference
    return exc
