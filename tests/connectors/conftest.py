"""Fixtures shared with other test folders."""

from tests.approvals.test_execution import private_stack  # noqa: F401 - a fixture: a private CRM and broker queue
