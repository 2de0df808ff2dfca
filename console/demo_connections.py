"""Where seed_demo points the sample systems' connectors: the port settings, and never over what someone set.

`make run` starts the sample CRMs on the port settings (GATEHOUSE_CRM_PORT, GATEHOUSE_CRM_STAGING_PORT), and the
systems must follow them when they move, yet a system that someone pointed elsewhere must stay where they pointed it.
So each system's connector settings are
- set when seeding makes the system: from the port setting, else the default port;
- moved to the port setting when it is set and seeding itself put the current settings there (the system's history
  says so: `origin=seed_demo`); left, and reported, when a person or another command did;
- left where they are when the port setting is not set: a plain `manage.py seed_demo` in another shell must not
  point the CRM back at 8100 while `make run` serves it elsewhere;
- replaced when asked for by name (`seed_demo --crm-url URL`), whoever set them.
A move goes through `system_connection_set`, as a person's change does: checked against the allow-lists, audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from django.conf import settings

from audit.choices import Channel
from governance.choices import ConnectorKind
from governance.models import System
from governance.services import system_connection_set

SEED_ORIGIN = "seed_demo"  # in the history's change reason as origin=seed_demo, on the connector settings seeding set
DEFAULT_PORTS = {"crm": 8100, "crm-staging": 8101}  # as in the Makefile and the Procfile
PORT_SETTINGS = {"crm": "GATEHOUSE_CRM_PORT", "crm-staging": "GATEHOUSE_CRM_STAGING_PORT"}
# The sample CRM versions each account and refuses a PATCH whose expected_version is stale: reversals use it.
CRM_VERSIONS = {"version_field": "version", "expected_version_field": "expected_version"}
CRM_CONNECTOR = {"timeout": 5, **CRM_VERSIONS}  # a sample CRM's connector settings besides its base_url


class Say(IntEnum):
    """On whose word seeding points a system's connector, from weakest to strongest."""

    DEFAULT = 0  # no port set: a new system gets the default port; an existing one stays where it is
    SETTING = 1  # the port setting: moves settings seeding put there itself, leaves those someone set
    ASKED = 2  # named in the call (seed_demo --crm-url): replaces whatever is set


@dataclass(frozen=True)
class Target:
    """Where seeding would point a system's connector, and on whose word (`because` is said in the report)."""

    kind: str
    config: dict[str, Any]
    because: str
    say: Say


def where(config: dict[str, Any]) -> str:
    """Where connector settings point, in a word: the base URL, or the drop folder."""
    return str(config.get("base_url") or config.get("drop_folder") or config)


def crm_target(slug: str, url: str | None) -> Target:
    """Where a sample CRM system should point: the URL asked for, else its port setting, else its default port."""
    setting = PORT_SETTINGS[slug]
    port = getattr(settings, setting)
    if url:
        return Target(ConnectorKind.HTTP, {"base_url": url, **CRM_CONNECTOR}, "as asked", Say.ASKED)
    if port:
        config = {"base_url": f"http://127.0.0.1:{port}", **CRM_CONNECTOR}
        return Target(ConnectorKind.HTTP, config, f"{setting}={port}", Say.SETTING)
    config = {"base_url": f"http://127.0.0.1:{DEFAULT_PORTS[slug]}", **CRM_CONNECTOR}
    return Target(ConnectorKind.HTTP, config, f"{setting} is not set: the default port", Say.DEFAULT)


def seeded(system: System) -> bool:
    """Whether seeding put the system's current connector settings there: the row of the system's history that
    introduced them (the oldest of the newest rows that hold them) carries origin=seed_demo. A person's change in the
    admin, or another command's, does not."""
    now = (system.connector_kind, system.connector_config)
    introduced = None
    for row in system.history.order_by("-history_date", "-history_id").only(
        "connector_kind", "connector_config", "history_change_reason"
    ):
        if (row.connector_kind, row.connector_config) != now:
            break
        introduced = row
    reason = (introduced.history_change_reason or "") if introduced else ""
    return f"origin={SEED_ORIGIN}" in reason.replace(";", " ").split()


def connection_point(system: System, target: Target) -> str:
    """Move an existing system's connector to `target` when its word is strong enough (module docstring); the line
    that says what moved or what was left, "" when it already points there."""
    if (system.connector_kind, system.connector_config) == (target.kind, target.config):
        return ""
    here, there, mine = where(system.connector_config), where(target.config), seeded(system)
    replace = f"seed_demo --{system.slug}-url URL" if system.slug in PORT_SETTINGS else "its connector settings page"
    if target.say is Say.ASKED or (target.say is Say.SETTING and mine):
        system_connection_set(
            system=system,
            kind=target.kind,
            config=target.config,
            user=None,
            channel=Channel.COMMAND,
            reason=f"seed_demo: {target.because}",
            origin=SEED_ORIGIN,
        )
        return f"{system.slug} moved from {here} to {there} ({target.because})."
    if not mine:
        return (
            f"{system.slug} left at {here}, as someone set it ({target.because} would point it at {there}; "
            f"{replace} changes it)."
        )
    setting = PORT_SETTINGS[system.slug]  # only a CRM's target is a default
    return f"{system.slug} left at {here} ({setting} is not set; to move it, set it or use {replace})."
