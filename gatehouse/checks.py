"""System checks (`manage.py check`, and before runserver and migrate) for settings that start but work badly;
with `--deploy`, also for a database role that could rewrite the audit trail."""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.db import DatabaseError, connection

from audit.grants import tamper_powers


@checks.register(checks.Tags.compatibility)
def broker_visibility_timeout(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """On Redis, a task still running when the visibility timeout passes is delivered again: suppressed and counted
    (a duplicate), never executed twice, but a worker is busy for nothing. Not an error: nothing breaks."""
    if not settings.REDIS_URL:
        return []  # the filesystem broker has no visibility timeout
    timeout, limit = settings.GATEHOUSE_BROKER_VISIBILITY_TIMEOUT, settings.CELERY_TASK_TIME_LIMIT
    if timeout > limit:
        return []
    return [
        checks.Warning(
            f"GATEHOUSE_BROKER_VISIBILITY_TIMEOUT ({timeout} s) is not longer than the task hard time limit "
            f"GATEHOUSE_TASK_TIME_LIMIT ({limit} s).",
            hint="Redis delivers a task again once it has run longer than the visibility timeout, while the first "
            "run goes on: the second delivery is suppressed (counted in gatehouse_duplicate_deliveries_total), but "
            "it is wasted work. Leave the visibility timeout unset (4 times the hard limit) or make it longer.",
            id="gatehouse.W001",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def audit_trail_out_of_reach(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """On PostgreSQL, the role Gatehouse connects as must not be able to rewrite the audit trail (`check --deploy`).

    The audit tables' triggers bind only roles that do not own the tables: an owner (the role `migrate` ran as), a
    superuser, or a role that may set `session_replication_role` can switch them off; UPDATE, DELETE or TRUNCATE on
    them is a grant too many. A database that does not answer is not a finding about its roles: an Info says the check
    did not run (`check --deploy` also runs where there is no database, e.g. in a build), and never a Warning that
    could be a false one. Tables not migrated yet are left out; a superuser is reported even then.
    """
    if connection.vendor != "postgresql":
        return []  # SQLite has no roles: the embedded setup is for development
    try:
        with connection.cursor() as cursor:
            role, powers = tamper_powers(cursor)
    except DatabaseError as exc:
        return [
            checks.Info(
                f"Could not check what the database role may do to the audit trail: {str(exc).strip()[:200]}",
                hint="Run `manage.py check --deploy` again where the database answers.",
                id="gatehouse.I002",
            )
        ]
    if not powers:
        return []
    return [
        checks.Warning(
            f"The database role {role!r} that Gatehouse connects as can rewrite the audit trail: {'; '.join(powers)}.",
            hint="Run migrations as a separate owner role; then, as that role, `manage.py grant_app_role <app role>` "
            "for a login role that owns nothing, and point the application's DATABASE_URL at that role (README: "
            "Deploying to production).",
            id="gatehouse.W002",
        )
    ]
