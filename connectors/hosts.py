"""Where connectors may connect and what they may run: the allow-lists from the environment.

What a connector runs and where it connects decides where the vaulted credential goes, so it is held to lists an
operator sets in the environment, not in the database a person edits (DESIGN.md, "The control plane is a privilege
boundary"):

- `GATEHOUSE_CONNECTOR_HOSTS`: hosts an http, mcp-over-http or SOAP system may name: `crm.example.com`,
  `crm.example.com:8443`, `*.corp.example.com`, `10.20.0.0/16`, `[::1]`. A host not listed is allowed only when
  it is public: an address in a private, loopback, link-local or otherwise reserved range (or a name resolving to
  one) is refused unless listed. Development lists the loopback range, where the demo's sample systems run.
- `GATEHOUSE_MCP_COMMANDS`: command lines a stdio MCP system may start, each a prefix of `command` + `args`
  (`node /opt/mcp/server-memory/dist/index.js`; an item ending in "/" allows any path below that folder).
- `GATEHOUSE_DROP_ROOTS`: folders a legacy batch system's drop folder must lie within.

Each check answers None when allowed, or the reason it is not, in words for the person configuring the system. They
run when a system is saved and again every time a connector is built, so a row changed behind the admin's back
still cannot connect anywhere else.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings

_RESOLVED_FOR = 30.0  # seconds a name's addresses are trusted, so a connector built per call costs no DNS lookup
_resolved: dict[str, tuple[float, list[str]]] = {}
_resolved_lock = threading.Lock()


def _entry_parts(entry: str) -> tuple[str, str]:
    """("host", "port" or "") of a list entry: `host`, `host:port`, `[v6]`, `[v6]:port` or a bare v6 address."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        return name, rest.removeprefix(":")
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, port
    return entry, ""


def _listed(host: str, port: int | None) -> bool:
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in settings.GATEHOUSE_CONNECTOR_HOSTS:
        entry = raw.strip().lower()
        if "/" in entry:  # a network
            try:
                if address is not None and address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name, listed_port = _entry_parts(entry)
        if not name or (listed_port and str(port) != listed_port):
            continue
        if name == host or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def _addresses(host: str) -> list[str]:
    """The addresses `host` names: itself when it is one, else what the resolver says (briefly cached)."""
    bare = host.strip("[]")
    try:
        return [str(ipaddress.ip_address(bare))]
    except ValueError:
        pass
    now = time.monotonic()
    with _resolved_lock:
        cached = _resolved.get(bare)
        if cached is not None and now - cached[0] < _RESOLVED_FOR:
            return cached[1]
    try:
        found = sorted({str(info[4][0]) for info in socket.getaddrinfo(bare, None)})
    except OSError:
        found = []
    with _resolved_lock:
        _resolved[bare] = (now, found)
    return found


def host_refusal(host: str, port: int | None = None) -> str | None:
    """None when a connector may connect to `host` (and `port`); else why not."""
    if not host:
        return "The address names no host."
    if _listed(host, port):
        return None
    addresses = _addresses(host)
    if not addresses:
        return f"{host} cannot be resolved, so it cannot be checked: list it in GATEHOUSE_CONNECTOR_HOSTS."
    private = [text for text in addresses if not _public(text)]
    if private:
        return (
            f"{host} is a private, loopback or link-local address ({', '.join(private)}): Gatehouse connects there "
            "only when GATEHOUSE_CONNECTOR_HOSTS lists it."
        )
    return None


def _public(text: str) -> bool:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    return address.is_global and not address.is_multicast


def command_refusal(command: str, args: Sequence[str]) -> str | None:
    """None when a stdio MCP system may start `command args…` (a prefix listed in GATEHOUSE_MCP_COMMANDS)."""
    given = [command, *args]
    for entry in settings.GATEHOUSE_MCP_COMMANDS:
        allowed = entry.split()
        fits = all(_argument_fits(value, pattern) for value, pattern in zip(given[1:], allowed[1:], strict=False))
        if allowed and len(given) >= len(allowed) and _same_program(given[0], allowed[0]) and fits:
            return None
    return (
        f"{' '.join([command, *args[:3]])}{' …' if len(args) > 3 else ''} is not a command Gatehouse may start: "
        "an operator lists the MCP servers it may run in GATEHOUSE_MCP_COMMANDS."
    )


def _same_program(given: str, allowed: str) -> bool:
    found, wanted = shutil.which(given), shutil.which(allowed)
    return found is not None and wanted is not None and os.path.realpath(found) == os.path.realpath(wanted)


def _argument_fits(value: str, pattern: str) -> bool:
    if not pattern.endswith("/"):
        return value == pattern
    return _inside(Path(value), Path(pattern))


def _inside(path: Path, root: Path) -> bool:
    """`path` lies within `root` once both are resolved (symbolic links followed, `..` taken back)."""
    if not path.is_absolute():
        return False
    resolved, base = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return resolved == base or base in resolved.parents


def drop_folder_refusal(folder: Path) -> str | None:
    """None when a legacy batch system's drop folder lies within one of GATEHOUSE_DROP_ROOTS."""
    roots = [Path(root) for root in settings.GATEHOUSE_DROP_ROOTS if root]
    if any(_inside(folder, root) for root in roots):
        return None
    listed = ", ".join(str(root) for root in roots) or "none are set"
    return f"{folder} is not within a drop root Gatehouse may read and move files in (GATEHOUSE_DROP_ROOTS: {listed})."


def within_drop_root(path: Path, folder: Path) -> bool:
    """Whether `path` (a file Gatehouse is about to move or write) stays inside the drop folder's root."""
    roots = [Path(root) for root in settings.GATEHOUSE_DROP_ROOTS if root]
    return any(_inside(folder, root) and _inside(path, root) for root in roots)
