"""The MCP connector's live sessions (connectors.mcp.sessions), against the sample ledger server (sandbox.mcp_ledger)
as a real process: over HTTP it counts the sessions opened and checks a bearer token; over stdio it notes each
process started."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from connectors.base import TransientError
from connectors.mcp import sessions
from connectors.mcp.connector import McpConnector
from connectors.registry import connector_for
from connectors.services import credential_set
from governance.choices import ConnectorKind, IntegrationPattern
from governance.models import ActionType, Resource, System
from tests.faults import wait_until
from tests.stack import BIN, ROOT, Stack, free_port

READS = {"accounts": {"tool": "get_account", "arguments": {"account_id": "{record_id}"}}}


@pytest.fixture
def stack(tmp_path: Path):
    stack = Stack(tmp_path / "stack")
    try:
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture(autouse=True)
def fresh_pool():
    """Each test starts with no sessions open in this process, and leaves none."""
    sessions.pool().close()
    yield
    sessions.pool().close()


class Ledger:
    """The sample ledger over streamable HTTP, on a port it keeps across restarts."""

    def __init__(self, stack: Stack, *, token: str = "", legacy: bool = False) -> None:
        self.stack = stack
        self.port = free_port()
        self.token_file = stack.dir / "ledger.token"
        self.token_file.write_text(token)
        self.argv = [str(BIN / "python"), "-m", "sandbox.mcp_ledger", "--port", str(self.port)]
        if token:
            self.argv += ["--token-file", str(self.token_file)]
        if legacy:
            self.argv.append("--legacy")
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        self.stack.start("ledger", self.argv, "listening on", env=self.stack.env())
        wait_until(self._listening, "the ledger to listen", timeout=10)

    def _listening(self) -> bool:
        try:
            self.stats()
        except OSError:
            return False
        return True

    def restart(self) -> None:
        self.stack.stop("ledger")
        self.start()

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stats", timeout=5) as response:
            return json.loads(response.read())


def ledger_system(f, url: str, *, slug: str = "ledger", **config) -> System:
    system = f.SystemFactory(
        slug=slug,
        connector_kind=ConnectorKind.MCP,
        integration_pattern=IntegrationPattern.MCP,
        connector_config={"transport": "http", "url": url, "timeout": 10, "reads": READS, **config},
    )
    system.full_clean()
    return system


def stdio_system(f, settings, tmp_path: Path, **env: str) -> System:
    settings.GATEHOUSE_MCP_COMMANDS = [*settings.GATEHOUSE_MCP_COMMANDS, f"{sys.executable} -m sandbox.mcp_ledger"]
    system = f.SystemFactory(
        slug="ledger-stdio",
        connector_kind=ConnectorKind.MCP,
        integration_pattern=IntegrationPattern.MCP,
        connector_config={
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "sandbox.mcp_ledger", "--stdio", "--pid-file", str(tmp_path / "pids")],
            "cwd": str(ROOT),
            "env": {"LEDGER_NOTES_FILE": str(tmp_path / "notes"), **env},
            "timeout": 15,
            "reads": READS,
        },
    )
    system.full_clean()
    return system


def note_action(system: System) -> ActionType:
    """A write with no read mapped for its resource: executing it is the one call `add_note`."""
    resource = Resource.objects.create(system=system, name="notes", label="note", fields=[])
    return ActionType.objects.create(
        system=system,
        resource=resource,
        name="add_note",
        payload_schema={"type": "object", "properties": {"text": {"type": "string"}}},
        operation={"tool": "add_note", "arguments": {"account_id": "{record_id}", "text": "{payload.text}"}},
    )


def pids(tmp_path: Path) -> list[int]:
    path = tmp_path / "pids"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: the pool's loop reaps its children.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


# --- Over HTTP ------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_calls_on_one_system_share_one_session(f, stack):
    ledger = Ledger(stack)
    system = ledger_system(f, ledger.url)

    for record in ("1", "2", "3", "4", "5"):
        assert McpConnector(system, None).read("accounts", record)["id"] == record

    assert ledger.stats() == {"handshakes": 1, "calls": 5, "token": ""}


@pytest.mark.django_db
def test_a_server_restarted_mid_way_is_reconnected_and_the_next_call_succeeds(f, stack):
    """A server from before 2026 forgets its sessions when it restarts; one from 2026 on has none to forget."""
    ledger = Ledger(stack, legacy=True)
    system = ledger_system(f, ledger.url)
    assert McpConnector(system, None).read("accounts", "1")["id"] == "1"

    ledger.restart()
    assert McpConnector(system, None).read("accounts", "2")["id"] == "2"
    assert ledger.stats() == {"handshakes": 1, "calls": 1, "token": ""}

    stack.stop("ledger")
    with pytest.raises(TransientError, match="get_account failed: the MCP server failed"):
        McpConnector(system, None).read("accounts", "3")
    ledger.start()
    assert McpConnector(system, None).read("accounts", "4")["id"] == "4"


@pytest.mark.django_db
def test_a_write_is_sent_again_after_a_restart_only_when_the_server_says_it_never_saw_the_session(f, stack):
    """A server from before 2026 keeps sessions in memory: after its restart it answers 404 to the old session, which
    proves the write was not run, so the connector opens a new session and sends it once."""
    ledger = Ledger(stack, legacy=True)
    system = ledger_system(f, ledger.url)
    action = note_action(system)
    McpConnector(system, None).execute(action, "1", {"text": "first"}, "k1")

    ledger.restart()
    result = McpConnector(system, None).execute(action, "1", {"text": "second"}, "k2")

    assert result.after == {"id": "1", "notes": ["second"]}  # the new server's memory: the note written once
    assert ledger.stats() == {"handshakes": 1, "calls": 1, "token": ""}


@pytest.mark.django_db
def test_a_rotated_credential_or_changed_settings_get_a_new_session(f, stack):
    ledger = Ledger(stack, token="first-token")
    system = ledger_system(f, ledger.url)
    credential_set(system=system, secret="first-token", actor=system.owner, channel="command")
    assert connector_for(system).read("accounts", "1")["id"] == "1"

    ledger.token_file.write_text("second-token")  # the server now refuses the first token
    credential_set(system=system, secret="second-token", actor=system.owner, channel="command")
    system = System.objects.get(pk=system.pk)  # as the next request loads it
    assert connector_for(system).read("accounts", "2")["id"] == "2"
    assert ledger.stats() == {"handshakes": 2, "calls": 2, "token": "second-token"}

    system.connector_config = {**system.connector_config, "timeout": 9}
    system.save()
    assert connector_for(system).read("accounts", "3")["id"] == "3"
    assert ledger.stats()["handshakes"] == 3
    assert len(sessions.pool().sessions) == 1  # the superseded sessions are closed, not kept


@pytest.mark.django_db
def test_the_pool_holds_at_most_its_bound_closing_the_least_recently_used(f, stack):
    ledger = Ledger(stack)
    systems = [ledger_system(f, ledger.url, slug=f"ledger-{n}") for n in range(3)]
    sessions.pool().max_sessions = 2

    for system in systems:
        McpConnector(system, None).read("accounts", "1")
    assert len(sessions.pool().sessions) == 2
    McpConnector(systems[2], None).read("accounts", "1")  # still open
    McpConnector(systems[0], None).read("accounts", "1")  # closed to make room: opened again

    assert ledger.stats()["handshakes"] == 4
    assert len(sessions.pool().sessions) == 2


@pytest.mark.django_db
def test_a_forked_child_opens_sessions_of_its_own_and_leaves_the_parents_alone(f, stack):
    ledger = Ledger(stack)
    system = ledger_system(f, ledger.url)
    McpConnector(system, None).read("accounts", "1")

    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its own pool, its own session
        try:
            record = McpConnector(system, None).read("accounts", "child")
            os.write(write_end, json.dumps([record["id"], len(sessions.pool().sessions)]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        said = answer.read()
    os.waitpid(child, 0)

    assert json.loads(said) == ["child", 1]
    McpConnector(system, None).read("accounts", "2")  # the parent's session, untouched by the child
    assert ledger.stats() == {"handshakes": 2, "calls": 3, "token": ""}


# --- Over stdio -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_stdio_server_stays_up_between_calls_and_is_restarted_when_it_died(f, settings, tmp_path):
    system = stdio_system(f, settings, tmp_path)
    connector = McpConnector(system, None)
    first = connector._call("whoami", {}, read=True)["pid"]
    connector.read("accounts", "1")
    assert pids(tmp_path) == [first]

    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not alive(first), "the server to die", timeout=10)
    # The pool learns of the death when its loop reads the server's closed stdout, a moment after the exit.
    wait_until(lambda: all(s.dead for s in sessions.pool().sessions.values()), "the pool to see it", timeout=10)

    # A write, which is never sent twice: the dead session is seen before anything is sent, so it goes to a new one.
    McpConnector(system, None).execute(note_action(system), "1", {"text": "after"}, "k1")
    assert (tmp_path / "notes").read_text() == "1: after\n"
    assert McpConnector(system, None).read("accounts", "2")["id"] == "2"
    assert len(pids(tmp_path)) == 2 and alive(pids(tmp_path)[1])


@pytest.mark.django_db
def test_closing_the_pool_stops_its_stdio_servers(f, settings, tmp_path):
    system = stdio_system(f, settings, tmp_path)
    McpConnector(system, None).read("accounts", "1")
    [pid] = pids(tmp_path)
    assert alive(pid)

    sessions.pool().close()

    wait_until(lambda: not alive(pid), "the server to stop", timeout=15)


@pytest.mark.django_db
def test_a_write_that_may_have_reached_a_server_that_died_is_not_sent_again(f, settings, tmp_path):
    system = stdio_system(f, settings, tmp_path, LEDGER_CRASH_AFTER_WRITE="1")
    action = note_action(system)
    McpConnector(system, None).read("accounts", "1")  # the session is open and reused by the write

    with pytest.raises(TransientError, match="tool add_note failed"):
        McpConnector(system, None).execute(action, "1", {"text": "once"}, "k1")

    assert (tmp_path / "notes").read_text() == "1: once\n"
    time.sleep(0.5)  # a second send would have landed by now
    assert (tmp_path / "notes").read_text() == "1: once\n"
