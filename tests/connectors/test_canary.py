"""The canary sweep: a recognisable secret is made the CRM's credential, Gatehouse is driven through every door, and
the secret must appear nowhere Gatehouse writes or answers - only in the ciphertext column, encrypted. The CRM's
outage is a debug error that echoes the request's headers, the canary among them (the sample CRM's echo mode).

Places searched: the rotation command's output; every agent API endpoint's answers, refusals and errors, and the MCP
endpoint's tool list, tool results and refusals (through the web process); the OpenAPI schema and docs; admin pages
(credential, rotation, blast radius, system, agent, proposals, audit events, history), a 404 and a deliberate 500
with DEBUG off; the Celery messages published (read off the broker before any worker took them, and captured at
publish in this process); the broker and cache (Redis keys or the filesystem broker's folder); the web, worker and
CRM process logs and this process's log records and output; e-mails (this process's outbox and the worker's console
backend); every audit event, all columns; every table of the database except connectors_credential.ciphertext; the
processes' var/ folders.

The sweep runs on a stack of its own (tests/stack.py, as the `live` fixture's): its web process publishes into a
queue no worker reads until the test has looked at it, and its worker retries fast, so a failure runs to its end.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
from pathlib import Path

import httpx
import pytest
from celery.signals import before_task_publish
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse

from approvals.decisions import proposal_approve
from approvals.models import Proposal
from audit.models import AuditEvent
from connectors import limits
from connectors.models import Credential
from governance.models import Agent, System
from governance.services import agent_token_issue
from sandbox.testing import crm_control
from tests.faults import FAST_RETRIES, redis_lists, wait_until

pytestmark = [pytest.mark.slow]


@pytest.fixture
def canary_stack(private_stack):
    """A sample CRM and a web process of the test's own, the demo inventory on them, and no worker yet."""
    private_stack.web()
    return private_stack


@pytest.fixture
def published():
    """Every Celery message this process publishes, as sent (headers and body)."""
    messages: list[str] = []

    def record(sender=None, body=None, headers=None, **kwargs) -> None:
        messages.append(json.dumps({"task": sender, "headers": headers, "body": body}, default=repr))

    before_task_publish.connect(record, weak=False)
    yield messages
    before_task_publish.disconnect(record)


def queued_messages(queue: str) -> list[str]:
    """The raw messages waiting in `queue`, each with its body decoded (kombu sends bodies base64-encoded)."""
    if django_settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(django_settings.REDIS_URL)
        raw = [item.decode("utf-8", "replace") for name in redis_lists(queue) for item in client.lrange(name, 0, -1)]
    else:
        folder = Path(django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        raw = [path.read_text(errors="replace") for path in folder.glob(f"*.{queue}.msg")]
    decoded = []
    for text in raw:
        envelope = json.loads(text)
        body = envelope.get("body", "")
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode("utf-8", "replace")
        decoded.append(text + "\n" + body)
    return decoded


def broker_and_cache_contents() -> str:
    """Everything in the Redis database (broker, unacked messages, cache, rate limits), or the filesystem broker."""
    if django_settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(django_settings.REDIS_URL)
        parts = []
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            if kind == "string":
                value = client.get(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "set":
                value = client.smembers(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1)
            else:
                value = b""
            parts.append(f"{key!r} {value!r}")
        return "\n".join(parts)
    folder = Path(django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]).parent
    return files_text(folder)


def files_text(folder: Path, limit: int = 5_000_000) -> str:
    parts = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.stat().st_size <= limit:
            parts.append(f"{path}: {path.read_bytes().decode('utf-8', 'replace')}")
    return "\n".join(parts)


def database_dump() -> str:
    """Every row of every table, every column - except the one column meant to hold the secret, encrypted."""
    quote = connection.ops.quote_name
    parts = []
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        for table in tables:
            columns = [column.name for column in connection.introspection.get_table_description(cursor, table)]
            if table == Credential._meta.db_table:
                columns = [column for column in columns if column != "ciphertext"]
            cursor.execute(f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(table)}")
            parts.append(f"{table}: {cursor.fetchall()!r}")
    assert Credential._meta.db_table in tables and AuditEvent._meta.db_table in tables
    return "\n".join(parts)


def audit_events_text() -> str:
    fields = [field.attname for field in AuditEvent._meta.concrete_fields]
    return json.dumps(
        [{name: getattr(event, name) for name in fields} for event in AuditEvent.objects.all()], default=str
    )


def test_the_canary_secret_appears_in_no_answer_event_message_log_page_or_table(
    canary_stack, published, settings, caplog, capfd, mailoutbox
):
    caplog.set_level(logging.DEBUG)
    live = canary_stack
    stack = live.stack
    canary = "CANARY-" + secrets.token_hex(16)
    seen: dict[str, str] = {}

    def keep(where: str, text: str) -> None:
        seen[where] = seen.get(where, "") + "\n" + text

    # --- Rotation: the CRM's admin issues the canary and revokes the old token; Gatehouse is given it on stdin.
    crm_control(stack.crm_url, "/_control/token", {"tokens": [canary]})
    out, err = io.StringIO(), io.StringIO()
    call_command("rotate_credential", "crm", stdin=io.StringIO(canary + "\n"), stdout=out, stderr=err)
    keep("rotate_credential output", out.getvalue() + err.getvalue())
    assert "Health check with the new secret: ok." in out.getvalue()
    assert Credential.objects.get(system__slug="crm").reveal() == canary  # the canary is what Gatehouse now uses

    # --- The agent API through the web process: every endpoint, its refusals and its errors.
    agent = live.agent("collections-agent")
    reporter = live.agent("reporting-agent")
    anonymous = httpx.Client(base_url=stack.web_url, timeout=30)
    forged = httpx.Client(base_url=stack.web_url, headers={"Authorization": f"Bearer {canary}"}, timeout=30)

    def call(client: httpx.Client, method: str, url: str, expect: int, **kwargs) -> httpx.Response:
        response = client.request(method, url, **kwargs)
        keep(f"API {method} {url}", f"{response.status_code} {dict(response.headers)} {response.text}")
        assert response.status_code == expect, (method, url, response.status_code, response.text)
        return response

    def propose(client, action: str, payload: dict, record: str = "4471", expect: int = 201) -> httpx.Response:
        body = {"system": "crm", "action": action, "record_id": record, "payload": payload, "reason": "canary sweep"}
        return call(client, "POST", "/api/v1/proposals", expect, json=body)

    call(agent, "GET", "/api/v1/me", 200)
    call(agent, "GET", "/api/v1/systems", 200)
    read = call(agent, "GET", "/api/v1/systems/crm/accounts/4471", 200)
    assert read.json()["data"]["name"] == "Northwind Traders"  # the CRM took the canary as its bearer token
    call(agent, "GET", "/api/v1/systems/crm/accounts/9999", 404)
    call(agent, "GET", "/api/v1/systems/crm/invoices/4471", 404)
    call(agent, "GET", "/api/v1/systems/nowhere/accounts/4471", 404)
    call(anonymous, "GET", "/api/v1/systems/crm/accounts/4471", 401)
    call(forged, "GET", "/api/v1/systems/crm/accounts/4471", 401)  # the canary is no Gatehouse token either
    call(agent, "GET", "/api/v1/no-such-endpoint", 404)
    note = propose(agent, "add_note", {"text": "Canary sweep: called about the invoice."}).json()
    waiting = propose(agent, "update_credit_limit", {"credit_limit": "5000.00"}).json()
    withdrawn = propose(agent, "update_credit_limit", {"credit_limit": "9000.00"}, record="4473").json()
    propose(agent, "update_credit_limit", {"credit_limit": "lots"}, expect=422)
    propose(agent, "no_such_action", {}, expect=422)
    propose(reporter, "add_note", {"text": "not mine to write"}, expect=403)
    call(agent, "POST", "/api/v1/proposals", 400, content=b"{not json", headers={"Content-Type": "application/json"})
    call(agent, "GET", "/api/v1/proposals", 200)
    call(agent, "GET", f"/api/v1/proposals/{note['id']}", 200)
    call(agent, "POST", f"/api/v1/proposals/{withdrawn['id']}/cancel", 200)
    call(agent, "POST", f"/api/v1/proposals/{withdrawn['id']}/cancel", 409)
    call(agent, "GET", "/api/v1/events", 200)
    call(agent, "GET", "/api/v1/schema/", 200)
    call(agent, "GET", "/api/v1/docs/", 200)

    # --- The MCP endpoint through the web process: the tool list, reads, proposals, refusals, a forged token.
    def mcp(client: httpx.Client, method: str, params: dict, expect: int = 200) -> httpx.Response:
        body = {"jsonrpc": "2.0", "id": len(seen), "method": method, "params": params}
        headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
        response = client.post("/mcp", json=body, headers=headers)
        keep(
            f"MCP {method} {params.get('name', '')}", f"{response.status_code} {dict(response.headers)} {response.text}"
        )
        assert response.status_code == expect, (method, params, response.status_code, response.text)
        return response

    tools = mcp(agent, "tools/list", {})
    assert "crm_read_account" in tools.text
    mcp(agent, "tools/call", {"name": "crm_read_account", "arguments": {"record_id": "4471"}})
    mcp(agent, "tools/call", {"name": "crm_read_account", "arguments": {"record_id": "9999"}})
    mcp(agent, "tools/call", {"name": "crm_propose_add_note", "arguments": {"record_id": "4472", "text": "Canary."}})
    mcp(agent, "tools/call", {"name": "crm_propose_update_credit_limit", "arguments": {"record_id": "4471"}})
    mcp(reporter, "tools/call", {"name": "crm_propose_add_note", "arguments": {"record_id": "4471", "text": "x"}})
    mcp(agent, "tools/call", {"name": "get_proposal", "arguments": {"proposal_id": note["id"]}})
    mcp(agent, "tools/call", {"name": "list_events", "arguments": {}})
    mcp(forged, "tools/list", {}, expect=401)

    # --- Task arguments: the web process's messages, read off the broker before any worker takes them.
    wait_until(
        lambda: any(note["id"] in message for message in queued_messages(stack.queue)), "the queued note", timeout=30
    )
    keep("queued Celery messages", "\n".join(queued_messages(stack.queue)))

    # --- Executions, then failures: the CRM down (retried, then failed, owner told) and refusing the credential.
    live.stack.worker("worker", **FAST_RETRIES)
    live.wait_for(note["id"], "executed")
    # Every auto-approved write (the API's note and the MCP one) done first: a write still failing alongside the
    # approved one below would open the CRM's circuit breaker, and that one would wait out the cool-off instead.
    wait_until(lambda: not Proposal.objects.filter(status__in=["approved", "executing"]).exists(), "the auto writes")
    # The CRM's outage answers with a debug body that echoes the request's headers, the canary among them: Gatehouse
    # passes on the status and a reference, and its logs hold the body with the canary redacted.
    crm_control(stack.crm_url, "/_control/mode", {"mode": "echo", "status": 503})
    down = call(agent, "GET", "/api/v1/systems/crm/accounts/4472", 503)
    assert "crm" in down.json()["detail"] and "503" in down.json()["detail"] and "(reference " in down.text
    mcp(agent, "tools/call", {"name": "crm_read_account", "arguments": {"record_id": "4473"}})
    with override_settings(VAR_DIR=stack.dir / "var"):  # the stack's breaker (its own file when there is no Redis)
        limits.reset(System.objects.get(slug="crm"))  # the two failed reads do not count against the write's attempts
    approver = get_user_model().objects.get(username="approver")
    proposal_approve(proposal_id=waiting["id"], user=approver, channel="admin")  # published by this process
    failed = live.wait_for(waiting["id"], "failed")
    assert "503" in failed.failure_reason and "(reference " in failed.failure_reason
    assert "debug_echo" not in failed.failure_reason
    crm_control(stack.crm_url, "/_control/mode", {"mode": "normal"})
    crm_control(stack.crm_url, "/_control/token", {"tokens": ["issued-to-someone-else"]})
    refused = call(agent, "GET", "/api/v1/systems/crm/accounts/4472", 503)
    assert "401" in refused.text
    crm_control(stack.crm_url, "/_control/token", {"tokens": [canary]})
    call(agent, "GET", "/api/v1/systems/crm/accounts/4472", 200)

    # --- Admin pages, in this process with DEBUG off, as production serves them.
    settings.DEBUG = False
    admin = Client(raise_request_exception=False)
    admin.force_login(get_user_model().objects.get(username="admin"))
    crm = System.objects.get(slug="crm")
    credential = Credential.objects.get(system=crm)
    rotate_url = reverse("admin:connectors_credential_rotate", args=[credential.pk])
    response = admin.post(rotate_url, {"secret": canary}, follow=True)  # the same secret again: accepted, stored
    keep("admin POST rotate", response.content.decode())
    assert "the health check with it passed" in response.content.decode()
    pages = [
        reverse("admin:connectors_credential_changelist"),
        reverse("admin:connectors_credential_change", args=[credential.pk]),
        reverse("admin:connectors_credential_history", args=[credential.pk]),
        rotate_url,
        reverse("admin:connectors_credential_blast_radius", args=["crm"]),
        reverse("admin:governance_system_change", args=[crm.pk]),
        reverse("admin:governance_system_history", args=[crm.pk]),
        reverse("admin:governance_agent_change", args=[Agent.objects.get(slug="collections-agent").pk]),
        reverse("admin:approvals_proposal_changelist"),
        *[
            reverse("admin:approvals_proposal_change", args=[pk])
            for pk in Proposal.objects.values_list("pk", flat=True)
        ],
        reverse("admin:audit_auditevent_changelist"),
        reverse("admin:audit_auditevent_changelist") + "?verb=credential_set",
        *[
            reverse("admin:audit_auditevent_change", args=[pk])
            for pk in AuditEvent.objects.filter(verb__in=["credential_set", "read", "failed"]).values_list(
                "pk", flat=True
            )
        ],
    ]
    for url in pages:
        response = admin.get(url)
        keep(f"admin GET {url}", response.content.decode())
        assert response.status_code == 200, (url, response.status_code)
    missing = admin.get("/admin/connectors/credential/999999/change/", follow=True)
    keep("admin 404", missing.content.decode())

    # --- A deliberate error: the vault key is gone, so the credential cannot be decrypted: a 500, DEBUG off.
    _, raw_token = agent_token_issue(agent=Agent.objects.get(slug="collections-agent"), channel="command")
    settings.GATEHOUSE_CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    broken = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {raw_token}")
    response = broken.get("/api/v1/systems/crm/accounts/4471")
    keep("deliberate 500", f"{response.status_code} {response.content.decode()}")
    assert response.status_code == 500 and b"internal_error" in response.content

    # --- Everything Gatehouse wrote, sent or logged.
    keep("Celery messages published by this process", "\n".join(published))
    assert any(waiting["id"] in message for message in published)  # the approval's execution was captured
    keep("broker and cache", broker_and_cache_contents())
    for name, process in stack.processes.items():
        keep(f"{name} process log", process.output())
    assert "/accounts/4471" in stack.processes["web"].output()  # the web process's log covers the calls made
    assert '"authorization": "[redacted]"' in stack.processes["worker"].output()  # the echoed body, logged and cut
    mails = stack.mails()  # the stack's processes write their e-mail to files (tests/stack.py)
    assert any(message["Subject"].startswith("[Gatehouse]") for message in mails)  # the failure e-mail among them
    keep("e-mail sent by the stack's processes", "\n".join(message.as_string() for message in mails))
    keep(
        "log records of this process",
        "\n".join(f"{record.getMessage()} {record.exc_text or ''} {record.args!r}" for record in caplog.records),
    )
    keep("log text of this process", caplog.text)
    captured = capfd.readouterr()
    keep("stdout and stderr of this process", captured.out + captured.err)
    keep("e-mail sent by this process", "\n".join(f"{m.subject} {m.to} {m.body}" for m in mailoutbox))
    keep("audit events", audit_events_text())
    keep("database", database_dump())
    keep("var folders", files_text(Path(settings.VAR_DIR)) + files_text(stack.dir / "var"))

    leaks = [where for where, text in seen.items() if canary in text]
    assert leaks == [], f"the canary secret appears in: {leaks}"
    assert len(seen) > 40
