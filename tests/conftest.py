"""Shared fixtures. Tests marked `postgres` or `redis` need the real service: skipped on the embedded default,
a failure when GATEHOUSE_REQUIRE_SERVICES=1 (CI), so nothing that needs a service is silently skipped there."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.db import connection

from tests import factories
from tests.sso import sso_stack  # noqa: F401 (a session fixture: the sample identity provider and its web process)
from tests.xdist_services import isolate_redis

isolate_redis()  # before anything connects: a pytest-xdist worker's Redis database is its own

REQUIRE_SERVICES = os.environ.get("GATEHOUSE_REQUIRE_SERVICES", "") in ("1", "true", "yes")


def _service_missing(marker: str) -> str | None:
    if marker == "postgres" and not settings.DATABASE_URL:
        return "needs PostgreSQL: set DATABASE_URL"
    if marker == "redis" and not settings.REDIS_URL:
        return "needs Redis: set REDIS_URL"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in ("postgres", "redis"):
        if item.get_closest_marker(marker) is None:
            continue
        missing = _service_missing(marker)
        if missing is None:
            continue
        if REQUIRE_SERVICES:
            pytest.fail(f"{missing} (GATEHOUSE_REQUIRE_SERVICES=1 forbids skipping)", pytrace=False)
        pytest.skip(missing)


@pytest.fixture(scope="session", autouse=True)
def _flush_past_the_audit_triggers():
    """The flush after each transactional test TRUNCATEs every table, which audit's triggers refuse (migration 0008).

    The suite connects as a superuser, so its flush alone switches triggers off for its own transaction
    (`SET LOCAL session_replication_role = replica`), the same way a superuser could. The application's role can't
    set that parameter: production keeps the refusal."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        return original(self, ["SET LOCAL session_replication_role = replica", *sql_list])

    DatabaseOperations.execute_sql_flush = execute_sql_flush
    yield
    DatabaseOperations.execute_sql_flush = original


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """Seeding makes six users: the production hasher's deliberate slowness would dominate the suite's time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _private_var_dir(settings, tmp_path):
    """Each test gets its own var/ (demo passwords, sandbox tokens), never the developer's."""
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()


@pytest.fixture(autouse=True)
def _documentation_hosts(settings):
    """Settings in tests name systems at example.com (RFC 2606: reserved, never resolves), which an operator's
    GATEHOUSE_CONNECTOR_HOSTS would list for their own; the tests of the list itself set it whole."""
    settings.GATEHOUSE_CONNECTOR_HOSTS = [*settings.GATEHOUSE_CONNECTOR_HOSTS, "example.com", "*.example.com"]


@pytest.fixture
def on_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def demo(db):
    """The demo inventory of CONTRACT.md; the CRM URLs point nowhere unless a test starts the sandbox."""
    from console.demo import seed_demo

    return seed_demo(crm_url="http://127.0.0.1:9", crm_staging_url="http://127.0.0.1:9")


@pytest.fixture
def f():
    """The factories module, as a fixture: `f.SystemFactory()`."""
    return factories


# --- The running stack ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def stack_processes(django_db_setup, django_db_blocker, tmp_path_factory):
    """Session-wide processes: the sample CRM, Gatehouse's web process and one Celery worker (2 processes)."""
    import secrets

    from gatehouse.celery import app as celery_app
    from tests.stack import Stack

    stack = Stack(tmp_path_factory.mktemp("stack"))
    celery_app.conf.task_default_queue = stack.queue  # this process publishes where the stack's workers consume
    stack.crm_token = secrets.token_urlsafe(24)
    try:
        stack.crm_url = stack.crm("crm", stack.crm_token)
        stack.crm_staging_url = stack.crm("crm-staging", stack.crm_token)
        stack.web_url = stack.web()
        stack.worker()
    except BaseException:
        stack.stop_all()
        raise
    yield stack
    stack.stop_all()


@pytest.fixture
def live(stack_processes, transactional_db, settings):
    """The demo inventory on the running stack, with the CRM reset to its seed accounts."""
    from sandbox.testing import crm_control
    from tests.live import LiveStack

    stack = stack_processes
    _write_sandbox_tokens(settings, stack)
    live = LiveStack(stack)
    live.crm_control("/_control/reset", {})
    crm_control(stack.crm_staging_url, "/_control/reset", {})
    from console.demo import seed_demo

    seed_demo(crm_url=stack.crm_url, crm_staging_url=stack.crm_staging_url)
    yield live
    live.close()
    _let_the_worker_finish()


def _let_the_worker_finish(timeout: float = 20.0) -> None:
    """Before the test's tables are flushed: wait (bounded) for executions the test left to the worker.

    A worker still writing a proposal's audit event while the flush truncates the tables is a deadlock on
    PostgreSQL (AccessExclusiveLock against RowExclusiveLock), and a test that did not wait for its own auto-approved
    proposals would otherwise fail at teardown, at random.
    """
    import time

    from approvals.choices import ProposalStatus
    from approvals.models import Proposal

    deadline = time.monotonic() + timeout
    busy = [ProposalStatus.APPROVED, ProposalStatus.EXECUTING]
    while Proposal.objects.filter(status__in=busy).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)  # the last audit event of an execution is written in the same transaction as its status


@pytest.fixture
def crm_demo(stack_processes, db, settings):
    """The demo inventory pointing at the session's running CRM, in an ordinary (rolled-back) test transaction.

    For API tests through Django's test client: reads and proposal checks reach the real CRM; nothing executes
    (the outbox publishes on commit, and this transaction never commits)."""
    from console.demo import seed_demo
    from sandbox.testing import crm_control

    _write_sandbox_tokens(settings, stack_processes)
    crm_control(stack_processes.crm_url, "/_control/reset", {})
    crm_control(stack_processes.crm_staging_url, "/_control/reset", {})
    return seed_demo(crm_url=stack_processes.crm_url, crm_staging_url=stack_processes.crm_staging_url)


def _write_sandbox_tokens(settings, stack) -> None:
    """The sample CRMs' token where seed_demo vaults it from (both CRMs of the stack share one token)."""
    folder = settings.VAR_DIR / "sandbox"
    folder.mkdir(parents=True, exist_ok=True)
    for slug in ("crm", "crm-staging"):
        (folder / f"{slug}.token").write_text(stack.crm_token)


@pytest.fixture
def agent_client(client):
    """`agent_client("collections-agent")`: Django's test client carrying a fresh token for that agent."""
    from django.test import Client

    from governance.models import Agent
    from governance.services import agent_token_issue

    def make(slug: str = "collections-agent") -> Client:
        _, raw = agent_token_issue(agent=Agent.objects.get(slug=slug), channel="command")
        return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")

    return make


# --- A real browser -------------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (Playwright's own browser download cannot run here).

    Playwright's sync API keeps an event loop in this thread, which makes Django refuse database calls from the
    test itself: allowed here, as pytest-django's docs advise for Playwright, since the test thread is not async."""
    if not os.path.exists(CHROMIUM):
        message = f"needs Chromium at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def sign_in(browser, live):
    """`sign_in("approver")` → a Playwright page signed in to the admin of the running stack as that demo user, on the
    admin's home; `sign_in("owner", viewport=tests.browser.SCREEN)` on a 1366 × 768 screen."""
    from django.contrib.auth import get_user_model

    pages = []

    def make(username: str, viewport: dict[str, int] | None = None):
        from django.contrib.auth.hashers import PBKDF2PasswordHasher

        user = get_user_model().objects.get(username=username)
        # The web process verifies with the production hasher, not the suite's fast one.
        hasher = PBKDF2PasswordHasher()
        user.password = hasher.encode("browser-test-password", hasher.salt(), iterations=1000)
        user.save()
        context = browser.new_context(viewport=viewport) if viewport else browser.new_context()
        page = context.new_page()
        page.set_default_timeout(15000)
        page.goto(f"{live.stack.web_url}/admin/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", "browser-test-password")
        page.click("input[type=submit]")
        page.wait_for_url(lambda url: "/login/" not in url)
        pages.append(context)
        return page

    yield make
    for context in pages:
        context.close()


# --- Faults: a private stack and a private Redis to stop, kill and restart -----------------------------------------


@pytest.fixture
def private_stack(transactional_db, settings, tmp_path):
    """A private sample CRM and broker queue, the demo inventory pointing at that CRM, and no worker yet.

    This process publishes to the private queue while the test runs; only the workers the test starts consume it.
    """
    import secrets

    from console.demo import seed_demo
    from gatehouse.celery import app as celery_app
    from tests.faults import PrivateStack, kill_all
    from tests.stack import Stack

    stack = Stack(tmp_path / "stack")
    stack.crm_token = secrets.token_urlsafe(24)
    previous_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = stack.queue
    private = PrivateStack(stack)
    try:
        stack.crm_url = stack.crm("crm", stack.crm_token)
        token_file = settings.VAR_DIR / "sandbox" / "crm.token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(stack.crm_token)
        seed_demo(crm_url=stack.crm_url, crm_staging_url="http://127.0.0.1:9")
        yield private
    finally:
        private.close()
        kill_all(stack)
        celery_app.conf.task_default_queue = previous_queue


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own (tests/faults.py), to stop and start again on the same port."""
    from tests.faults import PrivateRedis

    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
